"""Hybrid linear attention over a sequence of chunks (ARFlow, Hui et al. 2025, docs/papers.md §09),
and a small image transformer built on it, in pure torch (no CUDA-only kernels).

A sequence holds C chunks of L tokens each (one chunk = one image's patch tokens). Per head,
with RMS-normed q, k, v (head size d) and a log-decay g = logsigmoid(W_g (x + cond)) / 16 <= 0:

    within chunk c (softmax, bidirectional):  O_c  = softmax(Q_c K_c^T / sqrt(d)) V_c
    across chunks (gated linear, causal):     O_c += (Q_c * exp(cumsum_L g_c)) S_c
    recurrent state:                          S_{c+1} = gamma_c * S_c + K_c^T V_c,  S_0 = 0
                                              gamma_c = exp(mean_L g_c)   (per key dimension)

so S_c = sum_{e < c} (prod_{e < m < c} gamma_m) K_e^T V_e: chunk c sees every earlier chunk
through a (d x d) state whose size does not grow with c. The output passes a per-head
RMSNorm and a SiLU gate, out = W_o (RMSNorm(O) * SiLU(W_z x)).

Two forms compute the same outputs (tested): ``forward`` (chunk-parallel, for training: all
chunks at once, the states from a (C x C) matrix of decays) and ``init_state`` / ``step``
(recurrent, for sampling: one chunk at a time, constant cost per chunk). ``mode="full"`` is
the baseline the paper's design avoids: block-causal softmax attention over every token of
chunks 0..c (its recurrent form keeps a key/value cache that grows with c).
``cross_chunk=False`` removes the path across chunks: each chunk is then an independent
image for a plain (SiT-like) flow-matching transformer.

Shapes: x (B, C, L, D) tokens, cond (B, C, D) one conditioning vector per chunk.

Time convention: the caller's (the transformer embeds t as a conditioning input and never
interprets it; chapter 09 passes flow time, t = 0 noise, t = 1 data).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding

MODES = ("hybrid", "full")
GATE_SCALE = 16.0  # g = logsigmoid(.) / 16: decays stay close to 1 (the paper's choice)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * w over the last dimension (size ``dim``)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def chunk_decays(log_gamma: Tensor) -> Tensor:
    """Pairwise decays D[c, e] = prod_{e < m < c} gamma_m for e < c, 0 for e >= c.

    log_gamma: (..., C, d) -> (..., C, C, d), computed as exp of a sum of logs <= 0 (no
    division by small products, so it is stable for long sequences).
    """
    cum = log_gamma.cumsum(-2)  # sum_{m <= c}
    before = cum - log_gamma  # sum_{m < c}
    expo = before.unsqueeze(-2) - cum.unsqueeze(-3)  # [c, e]: sum_{e < m < c} log gamma_m
    c = log_gamma.shape[-2]
    causal = torch.ones(c, c, dtype=torch.bool, device=log_gamma.device).tril(-1)
    return torch.where(causal[:, :, None], expo, -math.inf).exp()


class HybridAttention(nn.Module):
    """Multi-head hybrid attention (module docstring). dim = heads x head size."""

    def __init__(self, dim: int, heads: int = 4, mode: str = "hybrid", cross_chunk: bool = True):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim={dim}, heads={heads}")
        self.dim, self.heads, self.dh = dim, heads, dim // heads
        self.mode, self.cross_chunk = mode, cross_chunk
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.decay = nn.Linear(dim, dim)  # g, per head and key dimension
        self.gate = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.q_norm, self.k_norm, self.v_norm = (RMSNorm(self.dh) for _ in range(3))
        self.out_norm = RMSNorm(self.dh)

    # --- pieces --------------------------------------------------------------------------
    def _heads(self, x: Tensor) -> Tensor:
        """(..., L, D) -> (..., H, L, dh)."""
        return x.unflatten(-1, (self.heads, self.dh)).transpose(-2, -3)

    def project(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q, k, v (RMS-normed) and g, each (B, C, H, L, dh), of x (B, C, L, D), cond (B, C, D)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (
            self.q_norm(self._heads(q)),
            self.k_norm(self._heads(k)),
            self.v_norm(self._heads(v)),
        )
        g = F.logsigmoid(self.decay(x + cond.unsqueeze(-2))) / GATE_SCALE
        return q, k, v, self._heads(g)

    def finish(self, o: Tensor, x: Tensor) -> Tensor:
        """Output RMSNorm, heads merged, SiLU gate, projection: o (..., H, L, dh) -> (..., L, D)."""
        o = self.out_norm(o).transpose(-2, -3).flatten(-2)
        return self.out(o * F.silu(self.gate(x)))

    @staticmethod
    def intra(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Softmax attention inside each chunk: (..., L, dh) -> (..., L, dh)."""
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return w @ v

    # --- chunk-parallel form -------------------------------------------------------------
    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """All chunks at once: x (B, C, L, D), cond (B, C, D) -> (B, C, L, D)."""
        q, k, v, g = self.project(x, cond)
        if self.mode == "full":
            return self.finish(self._full_parallel(q, k, v), x)
        o = self.intra(q, k, v)
        if self.cross_chunk:
            qd = q * g.cumsum(-2).exp()  # (B, C, H, L, dh)
            decays = chunk_decays(g.mean(-2).transpose(1, 2))  # (B, H, C, C, dh)
            kv = torch.einsum("bchld,bchlf->bhcdf", k, v)  # K_e^T V_e
            states = torch.einsum("bhced,bhedf->bchdf", decays, kv)  # S_c
            o = o + qd @ states
        return self.finish(o, x)

    def _full_parallel(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, n, d = q.shape
        flat = lambda a: a.transpose(1, 2).reshape(b, h, c * n, d)  # noqa: E731
        chunk = torch.arange(c, device=q.device).repeat_interleave(n)
        allowed = (
            chunk[None, :] <= chunk[:, None] if self.cross_chunk else chunk[None] == chunk[:, None]
        )
        logits = flat(q) @ flat(k).transpose(-1, -2) / math.sqrt(d)
        w = torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1)
        return (w @ flat(v)).reshape(b, h, c, n, d).transpose(1, 2)

    # --- recurrent form ------------------------------------------------------------------
    def init_state(self, batch: int, like: Tensor) -> dict[str, Tensor]:
        """The empty state: S_0 = 0 (B, H, dh, dh) for hybrid, an empty key/value cache for full."""
        if self.mode == "hybrid":
            return {"S": like.new_zeros(batch, self.heads, self.dh, self.dh)}
        empty = like.new_zeros(batch, self.heads, 0, self.dh)
        return {"K": empty, "V": empty}

    def step(self, x: Tensor, cond: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """One chunk: x (B, L, D), cond (B, D), the state after chunks 0..c-1 -> (out (B, L, D),
        the state after chunk c). The state passed in is not modified."""
        q, k, v, g = (a.squeeze(1) for a in self.project(x.unsqueeze(1), cond.unsqueeze(1)))
        if self.mode == "full":
            keys = torch.cat([state["K"], k], dim=-2) if self.cross_chunk else k
            vals = torch.cat([state["V"], v], dim=-2) if self.cross_chunk else v
            return self.finish(self.intra(q, keys, vals), x), {"K": keys, "V": vals}
        o, s = self.intra(q, k, v), state["S"]
        if self.cross_chunk:
            o = o + (q * g.cumsum(-2).exp()) @ s
        gamma = g.mean(-2).exp()  # (B, H, dh), on the key (row) dimension of S
        return self.finish(o, x), {"S": gamma.unsqueeze(-1) * s + k.transpose(-1, -2) @ v}

    # --- what the explorer draws ---------------------------------------------------------
    @torch.no_grad()
    def chunk_contributions(self, x: Tensor, cond: Tensor) -> Tensor:
        """How much each chunk e feeds chunk c: the RMS over tokens, heads and features of the
        attention output of chunk c computed from chunk e's values alone (before the output
        norm). x (B, C, L, D), cond (B, C, D) -> (B, C, C), zero above the diagonal."""
        q, k, v, g = self.project(x, cond)
        b, c = x.shape[:2]
        out = x.new_zeros(b, c, c)
        if self.mode == "full":
            d = q.shape[-1]
            for i in range(c):
                keys = k[:, : i + 1].transpose(1, 2).flatten(2, 3)
                logits = q[:, i] @ keys.transpose(-1, -2) / math.sqrt(d)
                w = torch.softmax(logits, -1).unflatten(-1, (i + 1, -1))  # (B, H, L, i+1, L)
                part = torch.einsum("bhlej,behjf->behlf", w, v[:, : i + 1])
                out[:, i, : i + 1] = part.pow(2).mean((2, 3, 4)).sqrt()
            return out
        intra = self.intra(q, k, v)
        idx = torch.arange(c)
        out[:, idx, idx] = intra.pow(2).mean((2, 3, 4)).sqrt()
        qd = q * g.cumsum(-2).exp()
        decays = chunk_decays(g.mean(-2).transpose(1, 2))  # (B, H, C, C, dh)
        kv = torch.einsum("bchld,bchlf->bhcdf", k, v)
        part = torch.einsum("bchld,bhced,bhedf->bcehlf", qd, decays, kv)
        below = torch.ones(c, c, dtype=torch.bool).tril(-1)
        return torch.where(below, part.pow(2).mean((3, 4, 5)).sqrt(), out)


class ARFlowTransformer(nn.Module):
    """v_theta for a sequence of images: x (B, C, d) flat images (d = channels S^2) at times
    t (B, C), class labels y (B,) -> velocities (B, C, d), causal across the C chunks.

    Each image is cut into (S / patch)^2 patch tokens, embedded with a learned position;
    conditioning per chunk is time_embedding(t_c) + class_embedding(y); ``depth`` pre-norm
    blocks (adaLN: the conditioning shifts, scales and gates each half, zero-initialised as
    in DiT) of :class:`HybridAttention` and an MLP; a linear read-out to patches, zero at
    initialisation (an untrained net predicts v = 0).
    """

    def __init__(self, image_size: int = 8, channels: int = 1, patch: int = 2, dim: int = 64,
                 depth: int = 2, heads: int = 4, n_classes: int = 10, mode: str = "hybrid",
                 cross_chunk: bool = True, mlp_ratio: int = 4) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch must divide image_size, got {patch} and {image_size}")
        self.image_size, self.channels, self.patch = image_size, channels, patch
        self.side = image_size // patch
        self.tokens, self.n_classes = self.side**2, n_classes
        self.embed = nn.Linear(channels * patch * patch, dim)
        self.position = nn.Parameter(0.02 * torch.randn(self.tokens, dim))
        self.time = TimeEmbedding(dim)
        self.label = ClassEmbedding(n_classes, dim)
        self.attn = nn.ModuleList(
            HybridAttention(dim, heads, mode, cross_chunk) for _ in range(depth)
        )
        self.mlp = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
            )
            for _ in range(depth)
        )
        self.modulation = nn.ModuleList(nn.Linear(dim, 6 * dim) for _ in range(depth))
        self.final_modulation = nn.Linear(dim, 2 * dim)
        self.readout = nn.Linear(dim, channels * patch * patch)
        for lin in [*self.modulation, self.final_modulation, self.readout]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def cross_chunk(self) -> bool:
        return self.attn[0].cross_chunk

    @cross_chunk.setter
    def cross_chunk(self, on: bool) -> None:
        for a in self.attn:
            a.cross_chunk = bool(on)

    # --- tokens ------------------------------------------------------------------------
    def tokenize(self, x: Tensor) -> Tensor:
        """Flat images (..., channels S^2) -> patch tokens (..., L, channels patch^2)."""
        c, p, s = self.channels, self.patch, self.side
        img = x.reshape(*x.shape[:-1], c, s, p, s, p)
        n = img.dim()
        perm = (*range(n - 5), n - 4, n - 2, n - 5, n - 3, n - 1)  # (..., s, s, c, p, p)
        return img.permute(perm).reshape(*x.shape[:-1], s * s, c * p * p)

    def untokenize(self, tok: Tensor) -> Tensor:
        """Inverse of :meth:`tokenize`: (..., L, channels patch^2) -> (..., channels S^2)."""
        c, p, s = self.channels, self.patch, self.side
        img = tok.reshape(*tok.shape[:-2], s, s, c, p, p)
        n = img.dim()
        perm = (*range(n - 5), n - 3, n - 5, n - 2, n - 4, n - 1)  # (..., c, s, p, s, p)
        return img.permute(perm).reshape(*tok.shape[:-2], c * s * p * s * p)

    def condition(self, t: Tensor, y: Tensor | None) -> Tensor:
        """t (B, C), y (B,) -> cond (B, C, D)."""
        b, c = t.shape
        time = self.time(t.reshape(-1)).reshape(b, c, -1)
        return time + self.label(y, b).unsqueeze(1)

    @staticmethod
    def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        return F.layer_norm(h, h.shape[-1:]) * (1 + scale.unsqueeze(-2)) + shift.unsqueeze(-2)

    def _block(
        self, i: int, h: Tensor, cond: Tensor, attend: Callable[[Tensor], tuple[Tensor, object]]
    ) -> tuple[Tensor, object]:
        sa, ca, ga, sm, cm, gm = self.modulation[i](F.silu(cond)).chunk(6, dim=-1)
        a, extra = attend(self._modulate(h, sa, ca))
        h = h + ga.unsqueeze(-2) * a
        h = h + gm.unsqueeze(-2) * self.mlp[i](self._modulate(h, sm, cm))
        return h, extra

    def _read(self, h: Tensor, cond: Tensor) -> Tensor:
        shift, scale = self.final_modulation(F.silu(cond)).chunk(2, dim=-1)
        return self.untokenize(self.readout(self._modulate(h, shift, scale)))

    # --- the two forms -----------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Chunk-parallel: x (B, C, d), t (B, C), y (B,) -> v (B, C, d)."""
        cond = self.condition(t, y)
        h = self.embed(self.tokenize(x)) + self.position
        for i, attn in enumerate(self.attn):
            h, _ = self._block(i, h, cond, lambda u, attn=attn: (attn(u, cond), None))
        return self._read(h, cond)

    def init_state(self, batch: int, like: Tensor | None = None) -> list[dict[str, Tensor]]:
        """A fresh state per layer (reset it for every new batch of sequences)."""
        like = self.position if like is None else like
        return [a.init_state(batch, like) for a in self.attn]

    def step(self, x: Tensor, t: Tensor, y: Tensor | None, state: list[dict[str, Tensor]]
             ) -> tuple[Tensor, list[dict[str, Tensor]]]:  # fmt: skip
        """Recurrent: the next chunk x (B, d) at t (B,), given the state after the earlier
        chunks -> (v (B, d), the state after this chunk)."""
        cond = self.condition(t.reshape(-1, 1), y)[:, 0]
        h = self.embed(self.tokenize(x)) + self.position
        new = []
        for i, attn in enumerate(self.attn):
            h, s = self._block(i, h, cond, lambda u, attn=attn, i=i: attn.step(u, cond, state[i]))
            new.append(s)
        return self._read(h, cond), new

    @torch.no_grad()
    def chunk_contributions(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """:meth:`HybridAttention.chunk_contributions` of every layer: (depth, B, C, C)."""
        cond = self.condition(t, y)
        h, out = self.embed(self.tokenize(x)) + self.position, []
        for i, attn in enumerate(self.attn):
            sa, ca, *_ = self.modulation[i](F.silu(cond)).chunk(6, dim=-1)
            out.append(attn.chunk_contributions(self._modulate(h, sa, ca), cond))
            h, _ = self._block(i, h, cond, lambda u, attn=attn: (attn(u, cond), None))
        return torch.stack(out)
