"""A time- (and optionally class-) conditioned MLP for low-dimensional data.

The workhorse of the 2D chapters: it predicts a velocity, a noise, a denoised point or a
score for x (B, d) at time t, depending on the loss it is trained with.

Time convention: the caller's (t is only a conditioning input, see nets.embeddings).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, conditioning

DEFAULT_TIME_SCALE = 30.0  # time-feature frequency scale for t in [0, 1] (see MLP)
SHIPPED_TIME_SCALE = 1000.0  # the scale the shipped chapter weights were trained with


class MLP(nn.Module):
    """f(x, t, y): (B, d) -> (B, d) (or (B, out_dim)), with the conditioning fed to every layer.

    With c = TimeEmbedding(t) (+ ClassEmbedding(y) when ``n_classes`` is set), c in
    R^time_dim, the layers are

        h_0     = W_0 [x, c] + b_0
        h_{l+1} = W_{l+1} [SiLU(h_l), c] + b_{l+1},     l = 0 .. depth - 2
        out     = W_out SiLU(h_{depth-1}) + b_out

    i.e. ``depth`` hidden layers of width ``hidden``; concatenating c at every layer (rather
    than only at the input) keeps the time dependence sharp in deep nets. The output layer
    starts small (weights scaled by 0.1), so an untrained net is close to f = 0 but
    gradients still reach every layer from the first step.

    Class conditioning: ``y=None`` or ``y == n_classes`` (the null class) is unconditional;
    see :func:`pflow_explore.nets.embeddings.drop_labels` for training with it.

    ``time_scale``: the frequency scale of the time features (TimeEmbedding's ``scale``;
    None takes TimeEmbedding's own default, 1000 for sinusoidal features: the DDPM choice,
    made for t counted in steps 0..1000). The default, 30, is what was measured best for t in
    [0, 1] (benchmarks/results/fit_overhead.md): with 1000 the learned 2D velocity wiggles in
    t and dopri5 needed 68 evaluations per solve where 30 needed 38, at equal sample
    quality; 1 is too smooth (worse samples). The chapters whose weights are shipped were
    trained with 1000 and pass ``time_scale=SHIPPED_TIME_SCALE`` until they are re-trained
    (a net built with another scale would load their weights and compute something else).

    ``fast_condition`` (default on): when every row shares one c (a scalar t and no
    per-sample labels: what ODE solvers and widgets pass), compute each layer as
    W [h, c] + b = W_h h + (W_c c + b) with the bracket once per call instead of
    concatenating c to all B rows: the same function up to float rounding, ~2x cheaper to
    evaluate on a 2D batch of 4000. Training passes one t per row and takes the ordinary
    path. It changes no parameter and can be switched on a trained net
    (``net.fast_condition = False``).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        n_classes: int | None = None,
        time_kind: str = "sinusoidal",
        log_scale: bool = False,
        time_scale: float | None = DEFAULT_TIME_SCALE,
        fast_condition: bool = True,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        checks = (
            ("dim", dim, 1),
            ("hidden", hidden, 1),
            ("depth", depth, 1),
            ("out_dim", out_dim, 1),
        )
        for name, value, low in checks:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.dim, self.n_classes, self.fast_condition = dim, n_classes, fast_condition
        self.time_embedding = TimeEmbedding(
            time_dim, kind=time_kind, log_scale=log_scale, scale=time_scale
        )
        self.class_embedding = (
            ClassEmbedding(n_classes, time_dim) if n_classes is not None else None
        )
        widths = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(
            nn.Linear(w_in + time_dim, w_out)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Linear(hidden, out_dim)
        self.out.weight.data.mul_(0.1)
        self.out.bias.data.zero_()
        self.act = nn.SiLU()

    def condition(self, t: float | Tensor, y: Tensor | None, like: Tensor) -> Tensor:
        """The conditioning vector c (B, time_dim) for a batch shaped like ``like``."""
        return conditioning(self.time_embedding, self.class_embedding, t, y, like, "MLP")

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, d), t: float, () or (B,), y: (B,) int64 or None -> (B, out_dim)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        shared = torch.as_tensor(t).numel() == 1 and (y is None or torch.as_tensor(y).numel() == 1)
        if self.fast_condition and shared and len(x) > 0:
            return self._forward_shared(x, self.condition(t, y, x[:1]))
        c = self.condition(t, y, x)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([self.act(h) if i else h, c], dim=-1))
        return self.out(self.act(h))

    def _forward_shared(self, x: Tensor, c: Tensor) -> Tensor:
        """The forward pass for one conditioning row c (1, time_dim) shared by all of x."""
        h = x
        for i, layer in enumerate(self.layers):
            w_h, w_c = layer.weight.split([layer.in_features - c.shape[1], c.shape[1]], dim=1)
            # (1, hidden) broadcast over the rows: the conditioning term once per call
            h = torch.addmm(
                nn.functional.linear(c, w_c, layer.bias), self.act(h) if i else h, w_h.T
            )
        return self.out(self.act(h))


class NoiseLevelMLP(nn.Module):
    """F(x, sigma) for EDM on low-dimensional data: a plain SiLU MLP on the input
    [x, log(sigma) / 4] (EDM's c_noise as one more coordinate), x (B, d) -> (B, d).

    Measured in the playground (2D eight Gaussians, 1500 Adam steps): EDM loss 0.82 and
    samples at about twice the two-sample energy floor, where :class:`MLP` with a
    log-scale time embedding stayed at the trivial loss (0.99, samples collapsed to the
    mean). sigma: float, () or (B,), > 0.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        widths = [dim + 1] + [hidden] * depth
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
        self.dim, self.f = dim, nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        c_noise = (sig.log() / 4).expand(len(x)) if sig.numel() == 1 else sig.log() / 4
        return self.f(torch.cat([x, c_noise[:, None]], dim=1))
