"""Time and class embeddings shared by the small networks.

Time: the nets take t in [0, 1] as their caller counts it (the diffusion chapters with
t = 0 data, the flow chapters with t = 0 noise); ``time_scale`` sets how fast the features
vary over that interval. Chapters that condition on a noise level sigma instead (EDM,
VE) build ``TimeEmbedding(dim, log_scale=True)``: the input is then sigma > 0 and the
features are taken of c_noise = log(sigma) / 4 (Karras et al. 2022, Table 1), which keeps
sigma in [0.002, 80] within about [-1.6, 1.1].

Class: ``ClassEmbedding(n_classes, dim)`` has ``n_classes + 1`` rows; the last index,
``n_classes``, is the "null" class of classifier-free guidance. ``drop_labels`` replaces a
random fraction of labels by it during training, so one net learns both
eps(x, t, y) and eps(x, t, null) (Ho & Salimans 2022).

Time convention: the caller's. The nets take t as a conditioning input and never
interpret it; the diffusion chapters pass t in [0, 1] with t = 0 data (or sigma, with
``log_scale``), the flow chapters t = 0 noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_KINDS = ("sinusoidal", "fourier")


def time_batch(t: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """Turn a time argument into a (batch,) tensor with the dtype and device of ``like``.

    t: a Python float, a () tensor, or a (batch,) / (batch, 1) tensor. A single value is
    broadcast to every sample (float64 times from ``paths`` are cast to ``like.dtype``).
    """
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    t = t.to(dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(
            f"t must be a scalar or have one value per sample (batch={batch}), "
            f"got {t.numel()} values"
        )
    return t


def conditioning(
    time_embedding: TimeEmbedding,
    class_embedding: ClassEmbedding | None,
    t: float | Tensor,
    y: Tensor | None,
    like: Tensor,
    net: str = "net",
) -> Tensor:
    """The conditioning vector c = TimeEmbedding(t) (+ ClassEmbedding(y)), (B, dim).

    B = like.shape[0]; t: float, () or (B,); y: (B,) int64 or None (None: the null class
    when the net has a class embedding). A net built without classes (class_embedding None)
    refuses a y rather than silently ignoring it; ``net`` names the net in that message.
    """
    batch = like.shape[0]
    c = time_embedding(time_batch(t, batch, like))
    if class_embedding is not None:
        c = c + class_embedding(y, batch)
    elif y is not None:
        raise ValueError(f"y was given but this {net} was built with n_classes=None")
    return c


class TimeEmbedding(nn.Module):
    """t (B,) or () -> (B, dim): fixed sin/cos features followed by a 2-layer SiLU MLP.

    With u = t (or u = log(t) / 4 when ``log_scale``), the fixed features are

    - ``"sinusoidal"`` (Vaswani et al. 2017; DDPM):
      [sin(s u f_k), cos(s u f_k)], f_k = max_period^(-k / (dim/2)), k = 0..dim/2-1,
      with s = ``scale`` (default 1000 for t in [0, 1], so the fastest feature resolves
      steps of ~1e-3);
    - ``"fourier"`` (Gaussian Fourier features, Tancik et al. 2020; Song et al. 2021):
      [sin(2 pi u w_k), cos(2 pi u w_k)], w_k ~ N(0, scale^2) drawn once from a fixed seed
      (default scale 16), stored as a buffer so it is saved with the weights.

    A () input gives (1, dim); pass ``batch`` to broadcast it.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "sinusoidal",
        log_scale: bool = False,
        scale: float | None = None,
        max_period: float = 10_000.0,
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2, got {dim!r}")
        if kind not in TIME_KINDS:
            raise ValueError(f"kind must be one of {TIME_KINDS}, got {kind!r}")
        self.dim, self.kind, self.log_scale = dim, kind, log_scale
        half = dim // 2
        if kind == "sinusoidal":
            self.scale = 1000.0 if scale is None else float(scale)
            k = torch.arange(half, dtype=torch.float32)
            freqs = self.scale * torch.exp(-math.log(max_period) * k / half)
        else:
            self.scale = 16.0 if scale is None else float(scale)
            gen = torch.Generator().manual_seed(0)
            freqs = 2 * math.pi * self.scale * torch.randn(half, generator=gen)
        self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, t: Tensor) -> Tensor:
        """The fixed (not learned) sin/cos features of t (B,) -> (B, dim)."""
        u = t.to(self.freqs.dtype).reshape(-1)
        if self.log_scale:
            # sigma = 0 would give -inf; the clamp keeps the embedding finite at the end point
            u = torch.log(u.clamp_min(1e-12)) / 4
        arg = u[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def forward(self, t: float | Tensor, batch: int | None = None) -> Tensor:
        """t: float, () or (B,) -> (B, dim) (B = ``batch`` for a scalar t, default 1)."""
        if batch is None:
            batch = t.numel() if isinstance(t, Tensor) and t.dim() > 0 else 1
        return self.mlp(self.features(time_batch(t, batch, self.freqs)))


class ClassEmbedding(nn.Module):
    """y (B,) int64 in {0, ..., n_classes} -> (B, dim); index ``n_classes`` is "null".

    ``y=None`` means unconditional: every sample gets the null row. The null row is a
    learned vector like the others; it only means something if training dropped labels
    (:func:`drop_labels`).
    """

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")
        self.n_classes = n_classes
        self.table = nn.Embedding(n_classes + 1, dim)

    @property
    def null(self) -> int:
        """The index of the null (unconditional) class."""
        return self.n_classes

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        """y: (batch,) int64 labels in [0, n_classes] or None -> (batch, dim)."""
        device = self.table.weight.device
        if y is None:
            y = torch.full((batch,), self.null, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device).reshape(-1)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.numel() == 1 and batch != 1:
            y = y.expand(batch)
        if y.numel() != batch:
            raise ValueError(f"y must have one label per sample (batch={batch}), got {y.numel()}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.null):
            raise ValueError(
                f"y must lie in [0, {self.null}] ({self.null} = null class), "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )
        return self.table(y.long())


def drop_labels(
    y: Tensor, p: float, n_classes: int, generator: torch.Generator | None = None
) -> Tensor:
    """Classifier-free guidance dropout: each label becomes ``n_classes`` (null) w.p. ``p``.

    y: (B,) int64 -> (B,) int64 (a new tensor). ``generator`` is a CPU generator.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    drop = torch.rand(y.shape, generator=generator) < p
    return torch.where(drop.to(y.device), torch.full_like(y, n_classes), y)
