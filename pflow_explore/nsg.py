"""The NSG estimator of NSG-VD: a spatial score per frame over the temporal change of log p.

Time convention: physical time (video time t, in frames); the score model is queried at one
fixed small noise level ``sigma``, separate from t.

For a video x (B, T, D) (flat frames):

    s_t   = score of the frame model at noise level sigma, grad log p_sigma(x_t)
    dx_t  = (x_{t+1} - x_{t-1}) / 2                   (one-sided at the ends)
    NSG_t = s_t / (<s_t, dx_t> + eps)                 (card: "Estimator")

The denominator is the chain-rule estimate of d_t log p along the video, d/dt log p(x_t) =
<s_t, dx_t>. Near-zero denominators give heavy tails: :func:`nsg` replaces a denominator of
magnitude below ``eps`` by ``sign * eps`` (the paper adds eps; the sign-aware floor keeps a
small negative denominator from flipping across zero), and :func:`clip_features` then clips
every entry at a quantile of the real training videos' entries (``NSGScaler``), so a few
frames cannot dominate a kernel. Both are documented filters, applied to real and fake alike.

Two score models: :class:`GaussianScore`, the analytic score of a Gaussian fitted to frames
(the PCA-Gaussian: mean m, covariance C, at noise sigma: s = -(C + sigma^2 I)^-1 (x - m)), and
:func:`denoiser_score` for a network trained by denoising score matching at that sigma
(s = (D(x) - x) / sigma^2, Tweedie).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ScoreFn = Callable[[Tensor], Tensor]  # (N, D) -> (N, D)
FEATURES = ("nsg", "spatial", "temporal", "frames")  # what a detector looks at


def temporal_difference(video: Tensor) -> Tensor:
    """dx_t of (B, T, D) videos: central (x_{t+1} - x_{t-1}) / 2 inside, one-sided
    x_1 - x_0 and x_{T-1} - x_{T-2} at the ends. Needs T >= 2."""
    if video.dim() != 3 or video.shape[1] < 2:
        raise ValueError(f"video must be (B, T, D) with T >= 2, got {tuple(video.shape)}")
    dx = torch.empty_like(video)
    dx[:, 1:-1] = (video[:, 2:] - video[:, :-2]) / 2
    dx[:, 0] = video[:, 1] - video[:, 0]
    dx[:, -1] = video[:, -1] - video[:, -2]
    return dx


def frame_scores(video: Tensor, score: ScoreFn) -> Tensor:
    """s_t for every frame of (B, T, D) videos: score applied to (B T, D), reshaped back."""
    b, t, d = video.shape
    return score(video.reshape(b * t, d)).reshape(b, t, d)


def nsg(scores: Tensor, dx: Tensor, eps: float) -> Tensor:
    """NSG_t = s_t / den, den = <s_t, dx_t> floored to magnitude eps with its sign (a zero
    denominator counts as positive). scores, dx: (..., D) -> (..., D)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    den = (scores * dx).sum(-1, keepdim=True)
    sign = torch.where(den < 0, -1.0, 1.0).to(den.dtype)
    return scores / (sign * den.abs().clamp_min(eps))


@dataclass
class GaussianScore:
    """The analytic score of N(mean, cov + sigma^2 I): s(x) = -P (x - mean), P = (cov +
    sigma^2 I)^-1, for flat frames (N, D). ``fit`` estimates mean and cov from frames; with
    ``rank`` only the top principal components keep their variance and the rest share their
    average (the PCA-Gaussian)."""

    mean: Tensor  # (D,)
    precision: Tensor  # (D, D)

    @classmethod
    def fit(cls, frames: Tensor, sigma: float, rank: int | None = None) -> GaussianScore:
        x = frames.double()
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)
        if rank is not None and rank < len(cov):
            lam, u = torch.linalg.eigh(cov)
            lam, u = lam.flip(0), u.flip(1)
            floor = lam[rank:].clamp_min(0).mean()
            lam = torch.cat([lam[:rank], floor.expand(len(lam) - rank)])
            cov = (u * lam) @ u.T
        eye = torch.eye(len(cov), dtype=cov.dtype)
        precision = torch.linalg.inv(cov + sigma**2 * eye)
        return cls(mean.float(), ((precision + precision.T) / 2).float())

    def __call__(self, x: Tensor) -> Tensor:
        return -(x - self.mean) @ self.precision

    def to(self, device: torch.device | str) -> GaussianScore:
        """The same score with its tensors on ``device``."""
        return GaussianScore(self.mean.to(device), self.precision.to(device))


def denoiser_score(denoiser: nn.Module, sigma: float) -> ScoreFn:
    """Tweedie's score s(x) = (D(x) - x) / sigma^2 of a denoiser D trained at noise sigma
    (D: (N, D) -> (N, D), a clean-frame estimate)."""

    @torch.no_grad()
    def score(x: Tensor) -> Tensor:
        y = x.to(next(denoiser.parameters()).device)
        return ((denoiser(y) - y) / sigma**2).to(x.device)

    return score


def denoising_loss(
    frames: Tensor, sigma: float, batch: int, generator: torch.Generator
) -> Callable[[nn.Module, int], Tensor]:
    """A ``training.fit`` loss: E |D(x + sigma z) - x|^2 over random batches of ``frames``
    (N, D); the optimum is E[x | x + sigma z], whose Tweedie score is the score at sigma."""

    def loss(model: nn.Module, step: int) -> Tensor:
        idx = torch.randint(len(frames), (batch,), generator=generator)
        x = frames[idx]
        noisy = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        return ((model(noisy) - x) ** 2).sum(-1).mean()

    return loss


class FrameDenoiser(nn.Module):
    """A small residual MLP denoiser on flat frames at one noise level: D(x) = x + f(x)."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net, self.dim = nn.Sequential(*layers), dim

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def video_features(video: Tensor, score: ScoreFn, kind: str, eps: float) -> Tensor:
    """Per-frame features (B, T, D) of (B, T, D) videos for a detector: ``nsg`` (the full
    NSG), ``spatial`` (s_t alone), ``temporal`` (dx_t alone) or ``frames`` (x_t itself, the
    frame-only baseline)."""
    if kind not in FEATURES:
        raise ValueError(f"kind must be one of {FEATURES}, got {kind!r}")
    if kind == "frames":
        return video.clone()
    if kind == "temporal":
        return temporal_difference(video)
    s = frame_scores(video, score)
    return s if kind == "spatial" else nsg(s, temporal_difference(video), eps)


@dataclass
class NSGScaler:
    """Clip every entry at the ``quantile`` of |entries| of reference features, then divide
    by their RMS: the heavy-tail filter, fitted on real training videos only."""

    clip: float
    scale: float

    @classmethod
    def fit(cls, features: Tensor, quantile: float = 0.99) -> NSGScaler:
        flat = features.reshape(-1).abs()
        sample = flat[torch.linspace(0, len(flat) - 1, min(len(flat), 200_000)).long()]
        clip = float(torch.quantile(sample.float(), quantile))
        scale = float(features.clamp(-clip, clip).pow(2).mean().sqrt())
        return cls(max(clip, 1e-12), max(scale, 1e-12))

    def __call__(self, features: Tensor) -> Tensor:
        return features.clamp(-self.clip, self.clip) / self.scale


def clip_features(features: Tensor, scaler: NSGScaler) -> Tensor:
    """``scaler(features)``: the documented heavy-tail filter (see :class:`NSGScaler`)."""
    return scaler(features)


def denominator_scale(video: Tensor, score: ScoreFn) -> float:
    """Median |<s_t, dx_t>| over the frames of (B, T, D) videos: what ``eps`` is set from."""
    den = (frame_scores(video, score) * temporal_difference(video)).sum(-1)
    return float(den.abs().median())
