"""Active Ornstein-Uhlenbeck particles (AOUP), batched over replicas (docs/papers.md §12).

For particles i = 1..N in d dimensions (d = 2 in the chapter),

    dx_i = [v0 g_i - A x_i + F_i(x)] dt + sqrt(2 eps) dW_i,
    dg_i = -gamma g_i dt + sqrt(2 gamma) dW'_i,

with interactions F (docs/papers.md):

- ``"none"``: F = 0 (independent particles; with A > 0 the trapped AOUP of the exact cases);
- ``"ring"`` / ``"lattice"``: springs, F = -k L x with L the graph Laplacian (linear, exact
  stationary state in :mod:`pflow_explore.theory.linear_sde`);
- ``"repulsion"``: soft discs of radius r, F_i = k sum_j softplus_beta(2r - |r_ij|) r^_ij with
  r_ij = x_i - x_j (minimum image in a periodic box of side ``box``), softplus_beta(u) =
  log(1 + exp(beta u)) / beta. MIPS (motility-induced phase separation): A = 0, k = 1, eps = 0.

Conventions. States are tensors of shape (R, N, d): R independent replicas of the whole system.
A periodic box of side L holds positions in [-L/2, L/2)^d (:func:`wrap`). The softplus force
never vanishes exactly; it is truncated at ``model.interaction_range`` = 2r + 8/beta by default,
where it is k e^{-8}/beta ~ 4.5e-5 k (the paper's code sums every pair; pass
``cutoff=math.inf`` to do that too: trap only, dense path).

Time stepping (:func:`step`): Euler-Maruyama for x (O(dt) bias in the stationary law) and the
exact OU update for g, g <- e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi, so the law of g is
exact for any dt (docs/papers.md: "step g exactly").

Cost of the repulsion per step and replica: the dense path forms every pair, O(N^2 d) time
and, chunked over i, O(chunk N d) memory; the cell-list path bins particles into cells of side
>= the interaction range and only visits the 3^d neighbouring cells, O(N M 3^d) with M the
largest cell occupancy (~5-10 in a dense cluster). benchmarks/particles_cost.py measures both;
``method="auto"`` picks cells for N >= ``CELL_LIST_MIN_N`` when the box holds >= 3 cells a side.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

INTERACTIONS: tuple[str, ...] = ("none", "ring", "lattice", "repulsion")
FORCE_METHODS: tuple[str, ...] = ("auto", "dense", "cells")
CELL_LIST_MIN_N = 256  # from N = 256 on the cell list was cheaper on CPU (particles_cost.md)
_DENSE_CHUNK_ELEMENTS = 2**22  # pairs held at once by the dense path (x d floats each)


@dataclass(frozen=True)
class AOUP:
    """Parameters of N active Ornstein-Uhlenbeck particles (docs/papers.md).

    n_particles: N. v0: self-propulsion speed. gamma: inverse persistence time of g.
    eps: translational diffusion (0 allowed: noise on g only, the MIPS setting). A: harmonic
    trap strength (0 for none). k: spring / repulsion stiffness. interaction: one of
    :data:`INTERACTIONS`. radius: particle radius r for "repulsion". beta: softplus sharpness.
    box: side of the periodic box (None: free space or trap). dim: spatial dimension d.
    lattice_shape: (rows, cols) for "lattice" (None: a square sqrt(N) x sqrt(N)), periodic.
    cutoff: range of the repulsion (None: 2r + 8/beta; math.inf: every pair, dense only).
    """

    n_particles: int
    v0: float
    gamma: float = 1.0
    eps: float = 1.0
    A: float = 1.0
    k: float = 1.0
    interaction: str = "none"
    radius: float = 0.5
    beta: float = 7.5
    box: float | None = None
    dim: int = 2
    lattice_shape: tuple[int, int] | None = None
    cutoff: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(
            isinstance(self.n_particles, int) and self.n_particles >= 1,
            f"n_particles must be an int >= 1, got {self.n_particles!r}",
        )
        need(
            isinstance(self.dim, int) and self.dim >= 1,
            f"dim must be an int >= 1, got {self.dim!r}",
        )
        need(
            self.interaction in INTERACTIONS,
            f"interaction must be one of {', '.join(INTERACTIONS)}; got {self.interaction!r}",
        )
        for name in ("v0", "eps", "A", "k"):
            value = getattr(self, name)
            need(
                math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}"
            )
        for name in ("gamma", "radius", "beta"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name} must be finite and > 0, got {value}")
        if self.box is not None:
            need(
                math.isfinite(self.box) and self.box > 0, f"box must be > 0 or None, got {self.box}"
            )
            need(
                self.A == 0,
                f"a periodic box (box={self.box}) needs A = 0: the trap force -A x is not periodic",
            )
            need(
                self.interaction in ("none", "repulsion"),
                f"interaction {self.interaction!r} is for free space (box=None); springs across a "
                "periodic boundary are ambiguous",
            )
        if self.interaction == "repulsion":
            need(
                self.box is not None or self.A > 0,
                "interaction 'repulsion' needs a periodic box (box > 0) or a trap (A > 0)",
            )
            need(
                self.cutoff is None or self.cutoff > 2 * self.radius,
                f"cutoff must exceed the contact distance 2 r = {2 * self.radius}, "
                f"got {self.cutoff}",
            )
            if self.box is not None:
                need(
                    self.interaction_range < self.box / 2,
                    f"box = {self.box} must exceed twice the interaction range "
                    f"{self.interaction_range:.4g} (minimum image); use a larger box or fewer "
                    "particles per area",
                )
        if self.interaction == "ring":
            need(self.n_particles >= 3, f"a ring needs n_particles >= 3, got {self.n_particles}")
        if self.interaction == "lattice":
            rows, cols = self.lattice_dims
            need(
                rows * cols == self.n_particles and rows >= 3 and cols >= 3,
                f"lattice_shape {self.lattice_shape} must be (rows, cols) with rows * cols = "
                f"n_particles = {self.n_particles} and rows, cols >= 3",
            )

    @property
    def interaction_range(self) -> float:
        """Distance beyond which the repulsion is dropped: ``cutoff`` or 2r + 8/beta."""
        return 2 * self.radius + 8 / self.beta if self.cutoff is None else float(self.cutoff)

    @property
    def lattice_dims(self) -> tuple[int, int]:
        """(rows, cols) of the spring lattice (square by default)."""
        if self.lattice_shape is not None:
            return int(self.lattice_shape[0]), int(self.lattice_shape[1])
        side = math.isqrt(self.n_particles)
        return side, (self.n_particles // side if side else 0)

    @property
    def relaxation_time(self) -> float:
        """Slowest linear relaxation time max(1/gamma, 1/A) (1/gamma without a trap)."""
        return max(1 / self.gamma, 1 / self.A) if self.A > 0 else 1 / self.gamma

    def with_(self, **changes: object) -> AOUP:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


MIPS_PAPER_DT = 0.1  # the official code's time step for mips_model's defaults


def mips_model(
    n_particles: int,
    phi: float,
    v0: float = 0.025,
    gamma: float = 1e-4,
    radius: float = 1.0,
    k: float = 1.0,
    beta: float = 7.5,
    dim: int = 2,
) -> AOUP:
    """The MIPS preset (paper): soft repulsion in a periodic box at packing fraction phi,
    A = 0, eps = 0 (noise only on g), k = 1.

    Defaults are the official code's MIPS data set (nmboffi/active_pflows: r = 1,
    v0 = 0.025, gamma = 1e-4, beta = 7.5, dt = 0.1 = :data:`MIPS_PAPER_DT`, thermalized for
    10 / gamma = 1e5 time units, N = 4096 at phi = 0.5). In those units a disc is stiff next
    to its push (v0 / (k 2r) ~ 0.01) and persistent (v0 / (gamma 2r) = 125 diameters).
    Measured here (benchmarks/results/particles_cost.md, "MIPS at CPU scale"): an N = 256
    box at phi = 0.5 stayed a homogeneous fluid over 4 persistence times (4e4 time units), as
    did one N = 1024 run, and close-packed droplets dissolved within ~1e3 time units; softer,
    less persistent or larger-r variants did not phase separate either. Clusters at CPU scale
    are therefore not promised; the official runs used N = 4096 and 1e5 time units.
    """
    box = box_for_packing_fraction(n_particles, radius, phi, dim)
    return AOUP(
        n_particles=n_particles,
        v0=v0,
        gamma=gamma,
        eps=0.0,
        A=0.0,
        k=k,
        interaction="repulsion",
        radius=radius,
        beta=beta,
        box=box,
        dim=dim,
    )


# ---- geometry --------------------------------------------------------------------------------
def _ball_volume(radius: float, dim: int) -> float:
    return math.pi ** (dim / 2) / math.gamma(dim / 2 + 1) * radius**dim


def box_for_packing_fraction(n: int, radius: float, phi: float, dim: int = 2) -> float:
    """Box side L with packing fraction phi = N pi r^2 / L^2 (d = 2; ball volume for other d)."""
    if not (0 < phi):
        raise ValueError(f"phi must be > 0, got {phi}")
    if n < 1 or radius <= 0:
        raise ValueError(f"need n >= 1 and radius > 0, got n={n}, radius={radius}")
    return (n * _ball_volume(radius, dim) / phi) ** (1 / dim)


def packing_fraction(n: int, radius: float, box: float, dim: int = 2) -> float:
    """phi = N pi r^2 / L^2 (d = 2; N V_d(r) / L^d in general)."""
    if box <= 0:
        raise ValueError(f"box must be > 0, got {box}")
    return n * _ball_volume(radius, dim) / box**dim


def wrap(x: Tensor, box: float | None) -> Tensor:
    """Positions folded into [-L/2, L/2)^d (any shape); identity when box is None."""
    if box is None:
        return x
    return x - box * torch.floor(x / box + 0.5)


def minimum_image(dx: Tensor, box: float | None) -> Tensor:
    """The shortest periodic copy of a displacement: dx - L round(dx / L) (identity if None)."""
    if box is None:
        return dx
    return dx - box * torch.round(dx / box)


# ---- spring graphs ---------------------------------------------------------------------------
def ring_laplacian(n: int) -> Tensor:
    """Graph Laplacian of a ring of n >= 3 nodes, (n, n) float64: 2 on the diagonal, -1 to
    the two neighbours. Eigenvalues 2 - 2 cos(2 pi q / n), q = 0..n-1."""
    if n < 3:
        raise ValueError(f"a ring needs n >= 3, got {n}")
    eye = torch.eye(n, dtype=torch.float64)
    return 2 * eye - eye.roll(1, dims=1) - eye.roll(-1, dims=1)


def lattice_laplacian(rows: int, cols: int, periodic: bool = True) -> Tensor:
    """Graph Laplacian of a rows x cols square lattice (node i = row * cols + col), (N, N)
    float64; periodic wraps both directions (needs rows, cols >= 3 then)."""
    if rows < 1 or cols < 1 or (periodic and (rows < 3 or cols < 3)):
        raise ValueError(f"lattice needs rows, cols >= 1 (>= 3 when periodic), got {rows} x {cols}")
    n = rows * cols
    adj = torch.zeros(n, n, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for rr, cc in ((r + 1, c), (r, c + 1)):
                if periodic:
                    rr, cc = rr % rows, cc % cols
                elif rr >= rows or cc >= cols:
                    continue
                j = rr * cols + cc
                adj[i, j] = adj[j, i] = 1.0
    return torch.diag(adj.sum(1)) - adj


def graph_laplacian(model: AOUP) -> Tensor:
    """The spring Laplacian L of a "ring" or "lattice" model, (N, N) float64 (zeros otherwise)."""
    if model.interaction == "ring":
        return ring_laplacian(model.n_particles)
    if model.interaction == "lattice":
        return lattice_laplacian(*model.lattice_dims, periodic=True)
    return torch.zeros(model.n_particles, model.n_particles, dtype=torch.float64)


@functools.lru_cache(maxsize=16)
def _laplacian_on(model: AOUP, dtype: torch.dtype, device: torch.device) -> Tensor:
    return graph_laplacian(model).to(dtype=dtype, device=device)


# ---- forces ----------------------------------------------------------------------------------
def _check_state(model: AOUP, x: Tensor, name: str = "x") -> None:
    if x.dim() != 3 or x.shape[1:] != (model.n_particles, model.dim):
        raise ValueError(
            f"{name} must have shape (R, {model.n_particles}, {model.dim}), got {tuple(x.shape)}"
        )


def softplus_force(distance: Tensor, model: AOUP) -> Tensor:
    """Magnitude k softplus_beta(2r - |r_ij|) of the pair repulsion (paper), same shape."""
    return model.k * F.softplus(2 * model.radius - distance, beta=model.beta)


def _pair_sum(dx: Tensor, valid: Tensor, model: AOUP) -> Tensor:
    """sum_j f(|dx_j|) dx_j / |dx_j| over axis -2; dx (..., K, d), valid (..., K)."""
    dist = dx.norm(dim=-1)
    valid = valid & (dist > 0) & (dist < model.interaction_range)
    mag = torch.where(valid, softplus_force(dist, model), torch.zeros_like(dist))
    return (mag / dist.clamp_min(torch.finfo(dist.dtype).tiny)).unsqueeze(-1).mul(dx).sum(-2)


def repulsion_forces_dense(model: AOUP, x: Tensor, chunk: int | None = None) -> Tensor:
    """Soft-disc forces by all pairs, chunked over i: O(N^2 d) time, (R, N, d) out.

    ``chunk`` particles i at a time (default: about 4M pairs in memory at once).
    """
    r, n, _ = x.shape
    if chunk is None:
        chunk = max(1, _DENSE_CHUNK_ELEMENTS // max(1, r * n))
    out = torch.empty_like(x)
    j = torch.arange(n, device=x.device)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        dx = minimum_image(x[:, i0:i1, None, :] - x[:, None, :, :], model.box)  # (R, c, N, d)
        not_self = (torch.arange(i0, i1, device=x.device)[:, None] != j[None, :]).expand(
            r, i1 - i0, n
        )
        out[:, i0:i1] = _pair_sum(dx, not_self, model)
    return out


def _cells_per_side(model: AOUP) -> int:
    if model.box is None or not math.isfinite(model.interaction_range):
        return 0
    return int(model.box // model.interaction_range)


@functools.lru_cache(maxsize=16)
def _neighbour_cells(n_side: int, dim: int, device: torch.device) -> Tensor:
    """(n_side^dim, 3^dim) ids of each cell's periodic neighbours (itself included)."""
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(n_side)] * dim, indexing="ij"), dim=-1
    ).reshape(-1, dim)
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=dim)))
    nb = (coords[:, None, :] + offsets[None]) % n_side  # (C, 3^d, d)
    weights = n_side ** torch.arange(dim - 1, -1, -1)
    return (nb * weights).sum(-1).to(device)


def repulsion_forces_cells(model: AOUP, x: Tensor) -> Tensor:
    """Soft-disc forces with a cell list in the periodic box, (R, N, d) out.

    Cells of side L / floor(L / range) >= the interaction range; each particle visits the
    3^d neighbouring cells, padded to the largest occupancy M: O(R N 3^d M d) time and memory.
    Needs a box with >= 3 cells a side (raises otherwise).
    """
    n_side = _cells_per_side(model)
    if n_side < 3:
        raise ValueError(
            f"the cell list needs a box >= 3 interaction ranges wide (box={model.box}, range="
            f"{model.interaction_range:.4g}); use method='dense'"
        )
    r, n, d = x.shape
    box = float(model.box)
    n_cells = n_side**d
    cell_of = torch.floor((wrap(x, box) + box / 2) / (box / n_side)).long().clamp_(0, n_side - 1)
    cell_id = (cell_of * (n_side ** torch.arange(d - 1, -1, -1, device=x.device))).sum(-1)
    key = (cell_id + n_cells * torch.arange(r, device=x.device)[:, None]).reshape(-1)  # (R N,)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    counts = torch.bincount(key, minlength=r * n_cells)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(r * n, device=x.device) - starts[sorted_key]
    m = int(counts.max())
    table = torch.full((r * n_cells, m), -1, dtype=torch.long, device=x.device)
    table[sorted_key, slot] = order % n  # particle index within its replica
    nb = _neighbour_cells(n_side, d, x.device)  # (C, 3^d)
    rows = nb[cell_id] + n_cells * torch.arange(r, device=x.device)[:, None, None]  # (R, N, 3^d)
    cand = table[rows].reshape(r, n, -1)  # (R, N, K)
    valid = (cand >= 0) & (cand != torch.arange(n, device=x.device)[None, :, None])
    xj = x[torch.arange(r, device=x.device)[:, None, None], cand.clamp(min=0)]  # (R, N, K, d)
    dx = minimum_image(x[:, :, None, :] - xj, box)
    return _pair_sum(dx, valid, model)


def forces(model: AOUP, x: Tensor, method: str = "auto") -> Tensor:
    """Interaction force F(x), (R, N, d) for x (R, N, d) (docs/papers.md).

    ring / lattice: F = -k L x (L the graph Laplacian). repulsion: F_i = k sum_j
    softplus_beta(2r - |r_ij|) r^_ij, ``method`` "dense" (chunked O(N^2)), "cells" (cell
    list, periodic box only) or "auto" (cells when N >= CELL_LIST_MIN_N and possible).
    """
    if method not in FORCE_METHODS:
        raise ValueError(f"method must be one of {', '.join(FORCE_METHODS)}; got {method!r}")
    _check_state(model, x)
    if model.interaction == "none" or model.k == 0:
        return torch.zeros_like(x)
    if model.interaction in ("ring", "lattice"):
        lap = _laplacian_on(model, x.dtype, x.device)
        return -model.k * torch.einsum("ij,rjd->rid", lap, x)
    if method == "auto":
        cells_ok = _cells_per_side(model) >= 3
        method = "cells" if cells_ok and model.n_particles >= CELL_LIST_MIN_N else "dense"
    if method == "cells":
        return repulsion_forces_cells(model, x)
    return repulsion_forces_dense(model, x)


def small_box_method(model: AOUP) -> str:
    """The force method for a small periodic box: "cells" whenever the box holds >= 3
    interaction ranges a side, else "dense". Why not "auto": at N = 256 (phi = 0.5, r = 1)
    cell lists took half the CPU time of all pairs, but "auto" switches only at
    ``CELL_LIST_MIN_N`` particles."""
    cells = model.box is not None and model.box >= 3 * model.interaction_range
    return "cells" if cells else "dense"


def drift(model: AOUP, x: Tensor, g: Tensor, method: str = "auto") -> Tensor:
    """Position drift b_x = v0 g - A x + F(x), (R, N, d). (The g drift is -gamma g.)"""
    _check_state(model, g, "g")
    return model.v0 * g - model.A * x + forces(model, x, method)


# ---- time stepping ---------------------------------------------------------------------------
def _randn(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def step(
    model: AOUP,
    x: Tensor,
    g: Tensor,
    dt: float,
    generator: torch.Generator | None = None,
    method: str = "auto",
) -> tuple[Tensor, Tensor]:
    """One step: Euler-Maruyama for x, exact OU for g (paper). x, g: (R, N, d) -> same.

    x' = x + (v0 g - A x + F(x)) dt + sqrt(2 eps dt) xi   (then wrapped into the box)
    g' = e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi'
    """
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    x_new = x + drift(model, x, g, method) * dt
    if model.eps > 0:
        x_new = x_new + math.sqrt(2 * model.eps * dt) * _randn(x.shape, x, generator)
    g_new = ou_step(g, _randn(g.shape, g, generator), model.gamma, dt)
    return wrap(x_new, model.box), g_new


def ou_step(g: Tensor, xi: Tensor, gamma: float, dt: float) -> Tensor:
    """The exact step of dg = -gamma g dt + sqrt(2 gamma) dW over dt (docs/papers.md: "step g
    exactly"):

        g' = e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi,   xi ~ N(0, I), any shape.

    g' given g is N(e^{-gamma dt} g, (1 - e^{-2 gamma dt}) I), the OU transition law, for any
    dt: N(0, I) stays N(0, I) and the autocorrelation is e^{-gamma dt}. (expm1: no
    cancellation for small gamma dt.)"""
    return math.exp(-gamma * dt) * g + math.sqrt(-math.expm1(-2 * gamma * dt)) * xi


@dataclass
class ParticleTrajectory:
    """Recorded states: x, g (T, R, N, d); times (T,) from 0 (after thermalization)."""

    x: Tensor
    g: Tensor
    times: Tensor
    model: AOUP

    @property
    def n_replicas(self) -> int:
        return self.x.shape[1]


LAYOUTS: tuple[str, ...] = ("uniform", "cluster")


def close_packed_positions(n: int, spacing: float, dim: int = 2) -> Tensor:
    """The n sites nearest the origin of a triangular (d = 2) or cubic lattice of the given
    spacing, centred on their mean: (n, d) float64. A dense droplet to start MIPS from."""
    side = math.ceil(2 * n ** (1 / dim)) + 3
    idx = torch.arange(-side, side + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[idx] * dim, indexing="ij"), -1).reshape(-1, dim)
    if dim == 2:  # triangular lattice: rows shifted by half a spacing, sqrt(3)/2 apart
        grid = torch.stack([grid[:, 0] + 0.5 * grid[:, 1], grid[:, 1] * math.sqrt(3) / 2], -1)
    sites = grid[torch.argsort(grid.norm(dim=-1), stable=True)[:n]] * spacing
    return sites - sites.mean(0)


def initial_state(
    model: AOUP,
    n_replicas: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    layout: str = "uniform",
) -> tuple[Tensor, Tensor]:
    """A starting (x, g), each (R, N, d), with g ~ N(0, I) (its stationary law).

    layout "uniform": x uniform in the box, else a Gaussian blob of std sqrt(N) r (repulsion
    in a trap) or the origin (springs, free particles). "cluster": every replica starts as
    one close-packed droplet (spacing 2r) at a random place in the box (MIPS starts faster
    from a droplet than from a uniform gas, which can stay metastable for long times)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    shape = (n_replicas, model.n_particles, model.dim)
    dev = torch.device("cpu") if device is None else torch.device(device)
    g = torch.randn(shape, generator=generator, dtype=dtype, device=dev)
    if layout == "cluster":
        drop = close_packed_positions(model.n_particles, 2 * model.radius, model.dim)
        x = drop.to(dtype=dtype, device=dev).expand(shape).clone()
        if model.box is not None:
            shift = (
                torch.rand(n_replicas, 1, model.dim, generator=generator, dtype=dtype, device=dev)
                - 0.5
            ) * model.box
            x = wrap(x + shift, model.box)
    elif model.box is not None:
        u = torch.rand(shape, generator=generator, dtype=dtype, device=dev)
        x = (u - 0.5) * model.box
    elif model.interaction == "repulsion":
        x = (
            math.sqrt(model.n_particles)
            * model.radius
            * torch.randn(shape, generator=generator, dtype=dtype, device=dev)
        )
    else:
        x = torch.zeros(shape, dtype=dtype, device=dev)
    return x, g


@torch.no_grad()
def simulate(
    model: AOUP,
    n_replicas: int,
    n_steps: int,
    dt: float,
    record_every: int = 1,
    thermalize: float | None = None,
    generator: torch.Generator | None = None,
    x0: Tensor | None = None,
    g0: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    method: str = "auto",
    layout: str = "uniform",
) -> ParticleTrajectory:
    """Run R replicas: thermalize for ``thermalize`` time units (default 10 x
    model.relaxation_time, i.e. 10 / gamma without a trap; docs/papers.md, "Traps"), then take
    n_steps
    steps, recording every ``record_every`` -> T = n_steps // record_every + 1 frames.

    x0, g0: (R, N, d) starting states (default :func:`initial_state` with ``layout``); their
    dtype/device win.
    ``generator`` must live on the simulation device.
    """
    if n_replicas < 1 or n_steps < 0 or record_every < 1:
        raise ValueError(
            f"need n_replicas >= 1, n_steps >= 0, record_every >= 1; got {n_replicas}, "
            f"{n_steps}, {record_every}"
        )
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    if thermalize is None:
        thermalize = 10 * model.relaxation_time
    if thermalize < 0:
        raise ValueError(f"thermalize must be >= 0 time units, got {thermalize}")
    x, g = initial_state(model, n_replicas, generator, device, dtype, layout)
    if x0 is not None:
        _check_state(model, x0, "x0")
        x = wrap(x0.clone(), model.box)
    if g0 is not None:
        _check_state(model, g0, "g0")
        g = g0.clone()
    g = g.to(dtype=x.dtype, device=x.device)
    if x.shape[0] != g.shape[0]:
        raise ValueError(
            f"x0 and g0 hold different numbers of replicas: {x.shape[0]}, {g.shape[0]}"
        )
    for _ in range(math.ceil(thermalize / dt)):
        x, g = step(model, x, g, dt, generator, method)
    xs, gs = [x], [g]
    for i in range(1, n_steps + 1):
        x, g = step(model, x, g, dt, generator, method)
        if i % record_every == 0:
            xs.append(x)
            gs.append(g)
    times = torch.arange(len(xs), dtype=torch.float64) * (record_every * dt)
    return ParticleTrajectory(torch.stack(xs), torch.stack(gs), times, model)


def simulate_frames(
    model: AOUP, n_replicas: int, frames: int, every: float, dt: float, **kw: object
) -> ParticleTrajectory:
    """:func:`simulate` recording ``frames`` states ``every`` time units apart (every / dt
    rounded, at least one step), after ``thermalize``; ``kw``: the rest of its arguments."""
    record = max(1, round(every / dt))
    return simulate(model, n_replicas, (frames - 1) * record, dt, record, **kw)


def stationary_samples(
    model: AOUP,
    n_samples: int,
    dt: float,
    spacing: float | None = None,
    n_replicas: int | None = None,
    thermalize: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    method: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Samples of the stationary law for score learning: (x, g), each (n_samples, N, d).

    R replicas (default min(n_samples, max(1, 16384 // N)), so about 16k particles run at
    once) are thermalized, then snapshots ``spacing`` time units apart (default
    model.relaxation_time, so successive snapshots of one replica are ~e^-1 correlated) are
    pooled until n_samples are collected. Replicas are independent of each other.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if n_replicas is None:
        n_replicas = min(n_samples, max(1, 16384 // model.n_particles))
    if spacing is None:
        spacing = model.relaxation_time
    every = max(1, round(spacing / dt))
    n_frames = math.ceil(n_samples / n_replicas)
    kw = dict(thermalize=thermalize, generator=generator, device=device, dtype=dtype, method=method)
    traj = simulate(model, n_replicas, (n_frames - 1) * every, dt, every, **kw)
    x = traj.x.reshape(-1, model.n_particles, model.dim)[:n_samples]
    g = traj.g.reshape(-1, model.n_particles, model.dim)[:n_samples]
    return x, g


def stationary_sweep(
    models: Sequence[AOUP], n_samples: int, dt: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`stationary_samples` of each model in turn, one independent replica per sample
    (``n_replicas = n_samples``), all from ``generator``: (x, g) each (m, n_samples, N, d)
    for m models of N particles."""
    kw = dict(n_replicas=n_samples, generator=generator)
    samples = [stationary_samples(m, n_samples, dt, **kw) for m in models]
    return torch.stack([x for x, _ in samples]), torch.stack([g for _, g in samples])


# ---- structure measures ----------------------------------------------------------------------
def neighbour_counts(model: AOUP, x: Tensor, within: float | None = None) -> Tensor:
    """Number of other particles within distance ``within`` (default 2.4 r), (R, N) long.

    2.4 r = 1.2 diameters is the neighbour shell of the official code's solid / gas tests
    (nmboffi/active_pflows, notebooks/mips.ipynb); soft discs pushed by a weak v0 stop
    slightly beyond contact (2r + O(1/beta)), so a shell of 2.2 r can miss them."""
    _check_state(model, x)
    within = 2.4 * model.radius if within is None else within
    r, n, _ = x.shape
    chunk = max(1, _DENSE_CHUNK_ELEMENTS // max(1, r * n))
    counts = []
    for i0 in range(0, n, chunk):  # chunked over i: memory ~ chunk * N * R
        dx = minimum_image(x[:, i0 : i0 + chunk, None, :] - x[:, None, :, :], model.box)
        counts.append((dx.norm(dim=-1) < within).sum(-1) - 1)  # minus the particle itself
    return torch.cat(counts, dim=1)


def cluster_fraction(
    model: AOUP, x: Tensor, min_neighbours: int = 4, within: float | None = None
) -> Tensor:
    """Fraction of "solid" particles, with >= min_neighbours others within 2.4 r (the
    official code's test: >= 5 in the shell counting itself), per replica (R,).

    Uniformly scattered discs at packing fraction phi have 5.76 phi neighbours in that shell
    on average (2.9 at phi = 0.5); a close-packed cluster has 6.
    """
    return (neighbour_counts(model, x, within) >= min_neighbours).to(x.dtype).mean(-1)


def gas_fraction(
    model: AOUP, x: Tensor, max_neighbours: int = 1, within: float | None = None
) -> Tensor:
    """Fraction of "gas" particles, with <= max_neighbours others within 2.4 r (the official
    code's test: <= 2 in the shell counting itself), per replica (R,)."""
    return (neighbour_counts(model, x, within) <= max_neighbours).to(x.dtype).mean(-1)


def phase_labels(model: AOUP, x: Tensor, within: float | None = None) -> Tensor:
    """Per-particle label from the neighbour count in the 2.4 r shell, (R, N) long:
    0 gas (<= 1 neighbour), 2 solid (>= 4), 1 in between (cluster surface or dense fluid)."""
    c = neighbour_counts(model, x, within)
    return (c >= 2).long() + (c >= 4).long()
