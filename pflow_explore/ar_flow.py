"""ARFlow (Hui et al. 2025, docs/papers.md §09): training sequences of same-class images at
sorted noise levels, their loss, and autoregressive generation over the denoising steps.

Time convention: flow (t = 0 noise, t = 1 data), as :mod:`pflow_explore.flow_matching`:
x_t = t x1 + (1 - t) z, velocity target x1 - z, samples move from t = 0 to t = 1.

Training: a sequence holds ``length`` DIFFERENT images x1_1..x1_C of one class y, with times
t_1 <= ... <= t_C ~ U(0, 1) sorted (noisier images first) and independent noises z_i;

    loss = mean over sequences of  (1 / (C d)) sum_i || v_theta,i - (x1_i - z_i) ||^2,

v_theta causal across the chunks (``nets.hybrid_attention.ARFlowTransformer``). The mean per
image and pixel (the paper writes the sum) only rescales the loss, so sequence lengths
compare at one learning rate. Generation: K Euler steps on the grid t_k = k / K; step k
appends x_{t_k} as chunk k, the model reads it with the state of chunks 0..k-1 and returns
v_k, and x_{t_{k+1}} = x_{t_k} + (t_{k+1} - t_k) v_k. With ``context=False`` the state is reset
every step: a plain flow-matching Euler sampler.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pflow_explore.flow_matching import interpolate


def class_members(labels: Tensor, n_classes: int) -> list[Tensor]:
    """The indices of each class: labels (N,) -> [indices (N_c,) for c in 0..n_classes-1]."""
    members = [torch.nonzero(labels == c).flatten() for c in range(n_classes)]
    if any(len(m) == 0 for m in members):
        raise ValueError("every class needs at least one image")
    return members


def same_class_sequences(images: Tensor, labels: Tensor, n_seq: int, length: int,
                         generator: torch.Generator, n_classes: int = 10
                         ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """x1 (n_seq, length, d) of ``length`` distinct images of one class per sequence, and the
    classes y (n_seq,), uniform over classes. images (N, d), labels (N,)."""
    members = class_members(labels, n_classes)
    if length > min(len(m) for m in members):
        raise ValueError(f"length {length} exceeds the smallest class")
    y = torch.randint(n_classes, (n_seq,), generator=generator)
    pick = []
    for c in y.tolist():
        m = members[c]
        order = torch.rand(len(m), generator=generator).argsort()[:length]  # no repeats
        pick.append(m[order])
    return images[torch.stack(pick)], y


def sorted_times(n_seq: int, length: int, generator: torch.Generator) -> Tensor:
    """t (n_seq, length) ~ U(0, 1), sorted increasing along each sequence (noisiest first)."""
    return torch.rand(n_seq, length, generator=generator).sort(dim=1).values


def noisy_sequence(x1: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """x_t = t x1 + (1 - t) z chunk by chunk: x1, z (B, C, d), t (B, C) -> (B, C, d)."""
    b, c, d = x1.shape
    return interpolate(z.reshape(b * c, d), x1.reshape(b * c, d), t.reshape(-1)).reshape(b, c, d)


def sequence_loss(model: nn.Module, x1: Tensor, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """The mean of || v_theta(x_t, t, y)_i - (x1_i - z_i) ||^2 / d over sequences and chunks."""
    v = model(noisy_sequence(x1, z, t), t, y)
    return ((v - (x1 - z)) ** 2).mean()


def objective(images: Tensor, labels: Tensor, length: int, images_per_step: int,
              generator: torch.Generator) -> Callable[[nn.Module, int], Tensor]:  # fmt: skip
    """The training loss of one step: images_per_step // length sequences of ``length``
    images (so every length updates on the same number of images per step)."""
    n_seq = max(1, images_per_step // length)

    def loss(model: nn.Module, step: int) -> Tensor:
        x1, y = same_class_sequences(images, labels, n_seq, length, generator)
        t, z = sorted_times(n_seq, length, generator), torch.randn(x1.shape, generator=generator)
        dev = next(model.parameters()).device
        return sequence_loss(model, x1.to(dev), z.to(dev), t.to(dev), y.to(dev))

    return loss


def state_norm(state: list[dict[str, Tensor]]) -> float:
    """Size of a recurrent state: the RMS over layers of the Frobenius norm of S per sequence
    (hybrid), or the number of cached key tokens (full attention)."""
    if "S" in state[0]:
        per = torch.stack([s["S"].flatten(1).norm(dim=1) for s in state])  # (layers, B)
        return float(per.pow(2).mean().sqrt())
    return float(state[0]["K"].shape[-2])


@dataclass
class Generation:
    """x (n, d) the samples at t = 1; times (K + 1,); chunks (K + 1, n, d) the states x_{t_k}
    (with ``trajectory``); state_norms (K,) the state size after each step."""

    x: Tensor
    times: Tensor
    chunks: Tensor | None = None
    state_norms: list[float] = field(default_factory=list)


@torch.no_grad()
def generate(model: nn.Module, z: Tensor, y: Tensor | None, n_steps: int, context: bool = True,
             trajectory: bool = False) -> Generation:  # fmt: skip
    """Autoregressive Euler generation (module docstring), recurrent form: z (n, d) -> x (n, d).
    The state is created here, so every call (batch) starts from S_0 = 0."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    times = torch.linspace(0, 1, n_steps + 1, dtype=z.dtype, device=z.device)
    x, state, chunks, norms = z, model.init_state(len(z), z), [z], []
    for k in range(n_steps):
        if not context:
            state = model.init_state(len(z), z)
        v, state = model.step(x, times[k].expand(len(z)), y, state)
        x = x + (times[k + 1] - times[k]) * v
        norms.append(state_norm(state))
        if trajectory:
            chunks.append(x)
    return Generation(x, times, torch.stack(chunks) if trajectory else None, norms)


@torch.no_grad()
def generate_parallel(model: nn.Module, z: Tensor, y: Tensor | None, n_steps: int) -> Tensor:
    """The same generation by re-running the chunk-parallel form on the whole sequence so far
    at every step (O(K^2) work; a check of :func:`generate`): z (n, d) -> x (n, d)."""
    times = torch.linspace(0, 1, n_steps + 1, dtype=z.dtype, device=z.device)
    seq = [z]
    for k in range(n_steps):
        xs = torch.stack(seq, dim=1)
        v = model(xs, times[: k + 1].expand(len(z), k + 1), y)[:, -1]
        seq.append(seq[-1] + (times[k + 1] - times[k]) * v)
    return seq[-1]


@torch.no_grad()
def per_step_seconds(model: nn.Module, counts: Sequence[int], batch: int, repeats: int = 7,
                     seed: int = 0) -> dict[int, float]:  # fmt: skip
    """Median wall seconds of one sampling step (``model.step``) after n previous chunks, for
    each n in ``counts``: the state is grown once along random chunks, and at each n the step
    is timed ``repeats`` times on a copy of that state (after one untimed warm-up call)."""
    gen = torch.Generator().manual_seed(seed)
    d = model.channels * model.image_size**2
    like = next(model.parameters())
    y = torch.randint(model.n_classes, (batch,), generator=gen).to(like.device)
    state, out, done = model.init_state(batch, like), {}, 0
    sync = torch.cuda.synchronize if like.is_cuda else (lambda: None)
    for n in sorted(set(int(c) for c in counts)):
        while done < n:
            x = torch.randn(batch, d, generator=gen).to(like)
            _, state = model.step(
                x, torch.full((batch,), done / max(counts), device=like.device), y, state
            )
            done += 1
        x, t = (
            torch.randn(batch, d, generator=gen).to(like),
            torch.full((batch,), 0.5, device=like.device),
        )
        model.step(x, t, y, state)  # warm-up
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model.step(x, t, y, state)
            sync()
            times.append(time.perf_counter() - t0)
        out[n] = statistics.median(times)
    return out


def fit_slope(counts: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares line seconds = a + b n: (b, a)."""
    n = torch.tensor(counts, dtype=torch.float64)
    s = torch.tensor(seconds, dtype=torch.float64)
    nc = n - n.mean()
    b = float((nc * (s - s.mean())).sum() / (nc**2).sum())
    return b, float(s.mean() - b * n.mean())
