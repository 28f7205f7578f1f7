"""A local, permutation-equivariant transformer over the k nearest neighbours of each particle.

The network of Boffi & Vanden-Eijnden (2023), docs/papers.md §12, "Network": the score of
N interacting particles is predicted per particle from its own features and those of its k
nearest neighbours, seen through relative positions (wrapped in a periodic box). Because it
uses only relative positions it is translation invariant; because every particle runs the
same weights on an unordered neighbour set it is permutation equivariant; because each
layer looks only at k neighbours it is local, so one network trained at N = 4096 runs at
N = 32768 (or N = 64 -> 256 on a CPU).

Cost: the neighbour search is O(B N^2 d) arithmetic but only O(B chunk N) memory (the
queries are processed ``chunk`` at a time); each layer costs O(B N k width^2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Elements of the (B, chunk, N) distance block a neighbour search holds at once: 2^22 float32
# numbers are 16 MiB; the search holds about four such blocks (~64 MiB) at any N.
KNN_BLOCK = 2**22


def wrap_displacement(dx: Tensor, box: float | None) -> Tensor:
    """Minimum-image displacement: dx - L round(dx / L) in a periodic box of side L.

    dx: (..., d) -> (..., d), each component in [-L/2, L/2]. ``box=None`` (open space)
    returns dx unchanged. ``round`` has zero derivative almost everywhere, so gradients
    pass through as for dx itself.
    """
    if box is None:
        return dx
    return dx - box * torch.round(dx / box)


def _check_box(box: float | None) -> float | None:
    if box is None:
        return None
    if isinstance(box, bool) or not isinstance(box, int | float) or not math.isfinite(box):
        raise ValueError(f"box must be None or a finite side length > 0, got {box!r}")
    if box <= 0:
        raise ValueError(f"box must be None or a finite side length > 0, got {box!r}")
    return float(box)


def _check_positions(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (B, N, d), got {shape}")


def _gather(values: Tensor, idx: Tensor) -> Tensor:
    """values (B, N, c), idx (B, M, k) -> values[b, idx[b, m, j]] (B, M, k, c)."""
    batch = torch.arange(values.shape[0], device=values.device).view(-1, 1, 1)
    return values[batch, idx]


def neighbour_geometry(
    x: Tensor, idx: Tensor, box: float | None = None, start: int = 0
) -> tuple[Tensor, Tensor]:
    """Relative positions rel_ij = wrap(x_j - x_i) and distances |rel_ij| of given neighbours.

    x: (B, N, d) all positions; idx: (B, M, k) neighbour indices of the M query particles
    ``start .. start + M - 1``. Returns rel (B, M, k, d) and dist (B, M, k), differentiable
    in x (the indices are not).
    """
    xi = x[:, start : start + idx.shape[1]]
    rel = wrap_displacement(_gather(x, idx) - xi.unsqueeze(2), box)
    return rel, rel.norm(dim=-1)


def knn(
    x: Tensor, k: int, box: float | None = None, chunk: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The k nearest neighbours j != i of every particle i, under the minimum image.

    x: (B, N, d). Returns idx (B, N, k) long, rel (B, N, k, d) = wrap(x_j - x_i) and
    dist (B, N, k) = |rel|, neighbours in order of increasing distance. ``k`` is clipped to
    N - 1. Queries are processed ``chunk`` at a time, so memory is O(B chunk N), not
    O(B N^2); ``chunk=None`` picks the largest chunk with B chunk N <= 2^22. The search runs
    without gradient; rel and dist are then recomputed from the indices, so they are
    differentiable in x.
    """
    _check_positions(x)
    box = _check_box(box)
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k (neighbours per particle) must be an integer >= 0, got {k!r}")
    b, n, _ = x.shape
    k = min(int(k), max(n - 1, 0))
    if chunk is None:
        chunk = max(1, KNN_BLOCK // max(b * n, 1))
    elif isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
        raise ValueError(
            f"chunk (query particles at a time) must be an integer >= 1, got {chunk!r}"
        )
    chunk = min(int(chunk), max(n, 1))
    # Every buffer is allocated once, before the loop. Fresh blocks per chunk, interleaved
    # with the small live results, fragment glibc's heap: the resident memory then grew by
    # gigabytes at N = 32768 on a CPU although no more than a few blocks were ever alive.
    idx = torch.empty(b, n, k, dtype=torch.long, device=x.device)
    with torch.no_grad():
        xd = x.detach()
        d2, da, turns = (xd.new_empty(b, chunk, n) for _ in range(3))
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            rows = stop - start
            d2_c, da_c, turns_c = d2[:, :rows], da[:, :rows], turns[:, :rows]
            d2_c.zero_()
            for a in range(xd.shape[2]):  # one coordinate at a time: no (B, c, N, d) block
                torch.sub(xd[:, None, :, a], xd[:, start:stop, None, a], out=da_c)
                if box is not None:  # minimum image, in place: da -= L round(da / L)
                    torch.div(da_c, box, out=turns_c)
                    turns_c.round_()
                    da_c.sub_(turns_c, alpha=box)
                d2_c.addcmul_(da_c, da_c)
            diagonal = torch.arange(rows, device=x.device)
            d2_c[:, diagonal, diagonal + start] = math.inf  # not one's own neighbour
            idx[:, start:stop] = torch.topk(d2_c, k, dim=-1, largest=False, sorted=True).indices
    rel, dist = neighbour_geometry(x, idx, box)
    return idx, rel, dist


def cutoff_envelope(dist: Tensor, cutoff: float) -> Tensor:
    """f(r) = (1 + cos(pi r / r_c)) / 2 for r < r_c, else 0: smooth (C^1) weight in (0, 1].

    dist: any shape -> same shape. Multiplying attention weights by f keeps the output a
    smooth function of positions even as neighbours cross the cutoff r_c.
    """
    inside = dist < cutoff
    f = 0.5 * (1 + torch.cos(math.pi * dist.clamp(max=cutoff) / cutoff))
    return torch.where(inside, f, torch.zeros_like(f))


class LocalAttentionLayer(nn.Module):
    """One pre-norm layer: attention of particle i over its k neighbours, then an MLP.

        u_i      = LN(h_i)
        q_i      = W_q u_i                                        (heads x width/heads)
        [k, v]_ij = W_2 SiLU(W_h u_j + W_r [rel_ij / l, |rel_ij| / l] + b)   (an MLP on
                   [u_j, rel_ij, |rel_ij|], with the first product W_h u computed once per
                   particle rather than once per pair)
        a_ij     = softmax_j(q_i . k_ij / sqrt(width/heads) + log f(|rel_ij|))
        h_i     <- h_i + W_o sum_j a_ij v_ij
        h_i     <- h_i + MLP(LN(h_i))

    f is the cutoff envelope (1 without a cutoff). With a cutoff every head also attends
    to a learned "nobody" slot of value 0, so a particle with no neighbour inside r_c gets
    zero message instead of a softmax over nothing.
    """

    def __init__(
        self, dim: int, width: int, heads: int, cutoff: float | None, length_scale: float
    ) -> None:
        super().__init__()
        self.width, self.heads, self.cutoff, self.length_scale = width, heads, cutoff, length_scale
        self.norm_attention = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.edge_node = nn.Linear(width, width)
        self.edge_geometry = nn.Linear(dim + 1, width, bias=False)
        self.edge_out = nn.Linear(width, 2 * width)
        self.mix = nn.Linear(width, width)
        self.sink = nn.Parameter(torch.zeros(heads)) if cutoff is not None else None
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width)
        )
        self.act = nn.SiLU()

    def message(self, u: Tensor, node: Tensor, idx: Tensor, rel: Tensor, dist: Tensor) -> Tensor:
        """Attention messages for M query particles.

        u: (B, M, width) normalised states of the queries; node: (B, N, width) = W_h u of
        all particles; idx: (B, M, k); rel: (B, M, k, d); dist: (B, M, k). -> (B, M, width).
        """
        b, m, k = idx.shape
        heads, dh = self.heads, self.width // self.heads
        geometry = torch.cat([rel, dist.unsqueeze(-1)], dim=-1) / self.length_scale
        edge = self.edge_out(self.act(_gather(node, idx) + self.edge_geometry(geometry)))
        keys, values = edge.view(b, m, k, 2, heads, dh).unbind(dim=3)  # (B, M, k, H, dh)
        q = self.query(u).view(b, m, 1, heads, dh)
        logits = (q * keys).sum(-1) / math.sqrt(dh)  # (B, M, k, H)
        if self.cutoff is not None:
            # -inf, not log(0): a zero weight whose log has a finite gradient (no NaN).
            inside = (dist < self.cutoff).unsqueeze(-1)
            log_f = torch.log(cutoff_envelope(dist, self.cutoff).clamp_min(1e-30)).unsqueeze(-1)
            logits = torch.where(inside, logits + log_f, -math.inf)
            sink = self.sink.view(1, 1, 1, heads).expand(b, m, 1, heads)
            weights = torch.softmax(torch.cat([logits, sink], dim=2), dim=2)[:, :, :k]
        else:
            weights = torch.softmax(logits, dim=2)
        out = (weights.unsqueeze(-1) * values).sum(dim=2)  # (B, M, H, dh)
        return self.mix(out.reshape(b, m, self.width))

    def forward_rows(
        self, h: Tensor, idx: Tensor, rel: Tensor, dist: Tensor, start: int, node: Tensor
    ) -> Tensor:
        """The new states (B, M, width) of query rows start .. start + M - 1 of h (B, N, width)."""
        rows = h[:, start : start + idx.shape[1]]
        u = self.norm_attention(rows)
        rows = rows + self.message(u, node, idx, rel, dist)
        return rows + self.mlp(self.norm_mlp(rows))

    def node_keys(self, h: Tensor) -> Tensor:
        """W_h LN(h_j) + b for all particles: (B, N, width) -> (B, N, width)."""
        return self.edge_node(self.norm_attention(h))


class LocalTransformer(nn.Module):
    """Per-particle outputs f_i(x, c) from each particle's features and its k neighbours.

    forward(x (B, N, d), features (B, N, feature_dim)) -> (B, N, out_dim). Each particle
    embeds its own features, h_i = MLP(c_i) (a learned constant when ``feature_dim = 0``),
    then ``layers`` :class:`LocalAttentionLayer`s mix in the k nearest neighbours (under the
    minimum image when ``box`` is set), and a final LayerNorm + Linear reads out f_i. For
    active particles (docs/papers.md §12) c_i = g_i, the propulsion, and f_i = (s_{x_i}, s_{g_i}),
    the
    score with respect to the particle's own degrees of freedom.

    Properties, by construction: translation invariant (only rel_ij = x_j - x_i enters),
    permutation equivariant, local (a particle's output depends only on particles within
    ``layers`` neighbour hops), so the same weights run at any N. ``cutoff`` (in position
    units) additionally fades out neighbours beyond r_c smoothly (see
    :func:`cutoff_envelope`); ``length_scale`` divides relative positions before they enter
    the network (set it to a typical spacing, e.g. the particle radius). The readout starts
    small (weights scaled by ``output_scale``), like :class:`pflow_explore.nets.MLP`.
    """

    def __init__(
        self,
        dim: int = 2,
        feature_dim: int = 2,
        out_dim: int = 4,
        k: int = 16,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        box: float | None = None,
        cutoff: float | None = None,
        length_scale: float = 1.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("dim", dim, 1),
            ("feature_dim", feature_dim, 0),
            ("out_dim", out_dim, 1),
            ("k", k, 1),
            ("width", width, 1),
            ("layers", layers, 0),
            ("heads", heads, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if width % heads:
            raise ValueError(f"width must be a multiple of heads, got width={width}, heads={heads}")
        if cutoff is not None and not (math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be None or a finite distance > 0, got {cutoff!r}")
        if not (math.isfinite(length_scale) and length_scale > 0):
            raise ValueError(f"length_scale must be a finite number > 0, got {length_scale!r}")
        if not (math.isfinite(output_scale) and output_scale >= 0):
            raise ValueError(f"output_scale must be a finite number >= 0, got {output_scale!r}")
        self.dim, self.feature_dim, self.out_dim = dim, feature_dim, out_dim
        self.k, self.width, self.heads = k, width, heads
        self.box = _check_box(box)
        self.cutoff = None if cutoff is None else float(cutoff)
        if feature_dim:
            self.embed = nn.Sequential(
                nn.Linear(feature_dim, width), nn.SiLU(), nn.Linear(width, width)
            )
        else:
            self.embed = None
            self.constant = nn.Parameter(0.02 * torch.randn(width))
        self.layers = nn.ModuleList(
            LocalAttentionLayer(dim, width, heads, self.cutoff, float(length_scale))
            for _ in range(layers)
        )
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)
        self.out.weight.data.mul_(output_scale)
        self.out.bias.data.zero_()

    def _embedded(self, x: Tensor, features: Tensor | None) -> Tensor:
        _check_positions(x)
        b, n, d = x.shape
        if d != self.dim:
            raise ValueError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        if self.embed is None:
            if features is not None and features.shape[-1] != 0:
                raise ValueError("features must be None: this network has feature_dim=0")
            return self.constant.to(x.dtype).expand(b, n, self.width)
        if features is None or tuple(features.shape) != (b, n, self.feature_dim):
            shape = None if features is None else tuple(features.shape)
            raise ValueError(
                f"features must have shape (B, N, feature_dim) = ({b}, {n}, {self.feature_dim}),"
                f" got {shape}"
            )
        return self.embed(features)

    def forward(self, x: Tensor, features: Tensor | None = None) -> Tensor:
        """x: (B, N, dim), features: (B, N, feature_dim) -> (B, N, out_dim)."""
        return self.forward_chunked(x, features, chunk=None)

    def forward_chunked(
        self, x: Tensor, features: Tensor | None, chunk: int | None, knn_chunk: int | None = None
    ) -> Tensor:
        """The same outputs as ``forward``, computed ``chunk`` query particles at a time.

        The neighbour search is global (:func:`knn`, itself chunked by ``knn_chunk``); each
        layer then updates all particles chunk by chunk from the previous layer's states, so
        the per-pair tensors (B, chunk, k, 2 width) never exist for all N at once. Peak
        memory: O(B N width + B chunk k width + B knn_chunk N). Use under ``torch.no_grad()``
        for inference at large N (e.g. N = 32768); with gradients the saved activations of
        all chunks add up again. ``chunk=None``: all particles at once.
        """
        h = self._embedded(x, features)
        b, n, _ = x.shape
        if chunk is None:
            chunk = max(n, 1)
        elif isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
            raise ValueError(
                f"chunk (query particles at a time) must be an integer >= 1, got {chunk!r}"
            )
        chunk = int(chunk)
        if n == 0:
            return x.new_zeros(b, 0, self.out_dim)
        idx, _, _ = knn(x.detach(), self.k, self.box, knn_chunk)
        pieces = []
        for start in range(0, n, chunk):
            part = idx[:, start : start + chunk]
            pieces.append((start, part, *neighbour_geometry(x, part, self.box, start)))
        for layer in self.layers:
            node = layer.node_keys(h)
            if len(pieces) == 1:
                h = layer.forward_rows(h, *pieces[0][1:], 0, node)
                continue
            new = torch.empty_like(h)  # written in place: see the note on the heap in knn
            for start, part, rel, dist in pieces:
                new[:, start : start + part.shape[1]] = layer.forward_rows(
                    h, part, rel, dist, start, node
                )
            h = new
        return self.out(self.norm_out(h))
