"""Score networks of active particles: s(x, g) = (s_x, s_g) = grad log rho for positions x
and propulsions g, each (n, N, d) (docs/papers.md).

Every network here writes the propulsion score as s_g = -g + f_g. The -g is the score of
the propulsion's own stationary law N(0, I), exact when g does not couple to x (v0 = 0), so
the network learns only what the coupling changes and starts near the right answer.

- :class:`TrapScore`: independent trapped particles, an MLP on (x_i, g_i, v0), one network
  for a whole sweep of v0;
- :class:`ChainScore`: a spring ring through a :class:`LocalTransformer` over rest sites, the
  same weights at any N;
- :class:`PropulsionScore`: the g-score alone (eps = 0, MIPS) from a local transformer in a
  periodic box.

All three are permutation equivariant in the particles where the physics is (TrapScore acts
on each particle alone; the local transformers see unordered neighbour sets).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflow_explore.datasets import particles
from pflow_explore.nets.local_transformer import LocalTransformer


class TrapScore(nn.Module):
    """s(x_i, g_i; v0) for independent trapped particles, one network for a v0 sweep.

    f = MLP([x_i, g_i, v0]) in R^{2d}; s_x = f_x, s_g = -g_i + f_g. The -g_i is the score
    of the propulsion's own law N(0, I) (exact for v0 = 0), so the network learns only what
    the coupling to x changes. x, g: (n, N, d), v0: float or (n,) -> (s_x, s_g), each
    (n, N, d).
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 3) -> None:
        super().__init__()
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden and depth must be >= 1, got {hidden}, {depth}")
        self.dim = dim
        layers: list[nn.Module] = []
        width = 2 * dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 2 * dim))

    def forward(self, x: Tensor, g: Tensor, v0: float | Tensor) -> tuple[Tensor, Tensor]:
        v = torch.as_tensor(v0, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        out = self.net(torch.cat([x, g, v.expand(x.shape[0], x.shape[1], 1)], dim=-1))
        return out[..., : self.dim], out[..., self.dim :] - g


def make_local_net(
    feature_dim: int, out_dim: int, k: int, width: int, layers: int, heads: int, scale_: float
) -> LocalTransformer:
    """The local transformer of the paper in d = 2 (k nearest neighbours, wrapped
    coordinates, relative positions divided by ``scale_``); its box is replaced per call: it
    follows N (ring) or the packing fraction (MIPS)."""
    sizes = dict(k=k, width=width, layers=layers, heads=heads)
    return LocalTransformer(2, feature_dim, out_dim, box=1.0, length_scale=scale_, **sizes)


class ChainScore(nn.Module):
    """Score of a spring ring from a local transformer, the same weights at any N.

    The ring's springs have zero rest length, so to give the network a geometry, particle i
    sits at x_i + r_i with rest site r_i = (i a, 0) on a periodic line of length N a (a
    ring: the box closes it), a = ``spacing``. The network sees these positions (its
    neighbours) and the features c_i = (x_i, g_i); out = (s_x, -g + f_g) like
    :class:`TrapScore`. x, g: (n, N, d) -> (s_x, s_g), each (n, N, d).
    """

    def __init__(self, net: LocalTransformer, spacing: float) -> None:
        super().__init__()
        if net.feature_dim != 4 or net.out_dim != 4:
            raise ValueError("ChainScore needs a LocalTransformer with feature_dim = out_dim = 4")
        self.net, self.spacing = net, float(spacing)

    def sites(self, n: int, like: Tensor) -> Tensor:
        """Rest sites r_i = (i a - N a / 2, 0), (N, 2)."""
        line = (torch.arange(n, dtype=like.dtype, device=like.device) - n / 2) * self.spacing
        return torch.stack([line, torch.zeros_like(line)], dim=-1)

    def forward(self, x: Tensor, g: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        n = x.shape[1]
        self.net.box = box = n * self.spacing  # the periodic line grows with N; weights don't
        pos = particles.wrap(x + self.sites(n, x), box)
        out = self.net.forward_chunked(pos, torch.cat([x, g], dim=-1), chunk)
        return out[..., :2], out[..., 2:] - g


class PropulsionScore(nn.Module):
    """s_g(x, g) = -g + f(x, g) for eps = 0, f a local transformer (positions x in the
    periodic box, features g). Only the g-part exists: x has no noise, so the paper's
    g-only losses and estimators apply. Returns (None, s_g), s_g (n, N, d)."""

    def __init__(self, net: LocalTransformer) -> None:
        super().__init__()
        if net.feature_dim != 2 or net.out_dim != 2:
            raise ValueError("PropulsionScore needs a LocalTransformer with feature_dim = 2")
        self.net = net

    def forward(
        self, x: Tensor, g: Tensor, box: float, chunk: int | None = None
    ) -> tuple[None, Tensor]:
        self.net.box = float(box)
        return None, self.net.forward_chunked(x, g, chunk) - g
