"""Deep-kernel MMD two-sample tests (Liu et al. 2020, as NSG-VD uses them).

The kernel: a learned feature map phi (a small MLP) inside a Gaussian kernel, mixed with a
Gaussian kernel on the inputs so it stays characteristic,

    k(x, y) = [(1 - e0) exp(-|phi(x) - phi(y)|^2 / (2 s_phi^2)) + e0] exp(-|x - y|^2 / (2 s_q^2)),

trained to maximise the test-power proxy MMD_u^2 / sigma_H1 (the unbiased statistic over the
standard deviation of its H1 asymptotic law). A test of X against Y: the statistic
MMD_u^2(X, Y) and its null threshold from ``n_perm`` random relabellings of the pooled
sample (:func:`permutation_test`). Shapes: sets are (n, D) float tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def gaussian_gram(a: Tensor, b: Tensor, bandwidth: float | Tensor) -> Tensor:
    """exp(-|a_i - b_j|^2 / (2 bandwidth^2)), (n, m)."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))


class DeepKernel(nn.Module):
    """The deep kernel above: phi = MLP(dim -> hidden -> out), learnable log s_phi, log s_q
    and e0 = sigmoid(logit). ``gram(a, b)`` is the (n, m) kernel matrix."""

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        out: int = 16,
        bandwidth: float = 1.0,
        input_bandwidth: float = 10.0,
    ) -> None:
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out),
        )
        self.log_bw = nn.Parameter(torch.tensor(float(bandwidth)).log())
        self.log_bw_q = nn.Parameter(torch.tensor(float(input_bandwidth)).log())
        self.e0_logit = nn.Parameter(torch.tensor(-4.0))

    def gram(self, a: Tensor, b: Tensor) -> Tensor:
        e0 = torch.sigmoid(self.e0_logit)
        fa, fb = self.phi(a), self.phi(b)
        deep = gaussian_gram(fa, fb, self.log_bw.exp())
        return ((1 - e0) * deep + e0) * gaussian_gram(a, b, self.log_bw_q.exp())


def off_diagonal_mean(k: Tensor) -> Tensor:
    """E_{i != j} k_ij = (sum_ij k_ij - sum_i k_ii) / (n (n - 1)) of a square (n, n) kernel
    matrix, n >= 2: the unbiased within-set term of MMD_u^2."""
    n = len(k)
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd_u2_and_var(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> tuple[Tensor, Tensor]:
    """Unbiased MMD^2 of equal-size sets and the variance of its H1 law (Liu et al. 2020,
    eq. 5): H_ij = k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i); MMD_u^2 = mean over
    i != j; sigma_H1^2 = 4 (mean_i (mean_j H_ij)^2 - (mean H)^2)."""
    n = len(kxx)
    h = kxx + kyy - kxy - kxy.T
    off = h - torch.diag(torch.diag(h))
    mmd2 = off.sum() / (n * (n - 1))
    row = h.mean(1)
    var = 4 * (row.pow(2).mean() - h.mean().pow(2))
    return mmd2, var


def power_objective(kernel: DeepKernel, x: Tensor, y: Tensor, reg: float = 1e-8) -> Tensor:
    """-MMD_u^2 / sqrt(sigma_H1^2 + reg): the loss that training minimises (x, y same size)."""
    mmd2, var = mmd_u2_and_var(kernel.gram(x, x), kernel.gram(y, y), kernel.gram(x, y))
    return -mmd2 / torch.sqrt(var.clamp_min(0) + reg)


def train_kernel(
    kernel: DeepKernel,
    x: Tensor,
    y: Tensor,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
) -> list[float]:
    """Adam on :func:`power_objective` over random equal-size batches from x (n, D) and
    y (m, D); returns the objective per step (MMD^2 / sigma_H1, higher is better)."""
    opt = torch.optim.Adam(kernel.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=generator)
        j = torch.randint(len(y), (batch,), generator=generator)
        loss = power_objective(kernel, x[i], y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(-float(loss.detach()))
    return history


def mmd2_from_gram(k: Tensor, n: int) -> Tensor:
    """Biased-free (unbiased within-set) MMD^2 of the first n points against the rest, from
    the pooled (N, N) kernel matrix k."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return off_diagonal_mean(kxx) + off_diagonal_mean(kyy) - 2 * kxy.mean()


@dataclass
class TestResult:
    """One permutation test: the statistic, the null threshold at level alpha, the p-value."""

    statistic: float
    threshold: float
    p_value: float
    reject: bool


@torch.no_grad()
def permutation_test(
    gram: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    alpha: float = 0.05,
    n_perm: int = 200,
    generator: torch.Generator | None = None,
) -> TestResult:
    """MMD_u^2(x, y) under the kernel ``gram(a, b) -> (n, m)`` against its permutation null:
    the pooled kernel matrix is computed once and re-indexed; threshold = the (1 - alpha)
    quantile of the permuted statistics; p = (1 + #{perm >= stat}) / (1 + n_perm)."""
    if not 0 < alpha < 1 or n_perm < 1 or len(x) < 2 or len(y) < 2:
        raise ValueError("need 0 < alpha < 1, n_perm >= 1 and two points per set at least")
    z = torch.cat([x, y])
    k, n = gram(z, z), len(x)
    stat = float(mmd2_from_gram(k, n))
    perms = []
    for _ in range(n_perm):
        p = torch.randperm(len(z), generator=generator)
        perms.append(float(mmd2_from_gram(k[p][:, p], n)))
    null = torch.tensor(perms)
    threshold = float(torch.quantile(null, 1 - alpha))
    p_value = (1 + int((null >= stat).sum())) / (1 + n_perm)
    return TestResult(stat, threshold, p_value, p_value <= alpha)


@torch.no_grad()
def set_scores(kernel: DeepKernel, tests: Tensor, reference: Tensor) -> Tensor:
    """MMD^2 of each test set against one reference set, batched: tests (B, T, D) (each video
    a set of T frame features), reference (R, D); returns (B,). The within-set terms of the
    test sets use i != j; the reference term is computed once."""
    b, t, d = tests.shape
    r = len(reference)
    syy = off_diagonal_mean(kernel.gram(reference, reference))
    flat = tests.reshape(b * t, d)
    kxy = kernel.gram(flat, reference).reshape(b, t, r).mean((1, 2))
    out = torch.empty(b)
    for i in range(b):
        out[i] = off_diagonal_mean(kernel.gram(tests[i], tests[i]))
    return out + syy - 2 * kxy


# ---- detection metrics --------------------------------------------------------------------
def auroc(real: Tensor, fake: Tensor) -> float:
    """P(score of a fake > score of a real) + P(tie) / 2 (Mann-Whitney), scores (n,), (m,)."""
    diff = fake[None, :].double() - real[:, None].double()
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def detection_metrics(real: Tensor, fake: Tensor, threshold: float) -> dict[str, float]:
    """A video is called fake when its score exceeds ``threshold``; positives are the fakes.
    Returns recall (fakes caught), false-positive rate (reals flagged), precision, F1, AUROC."""
    tp = float((fake > threshold).sum())
    fp = float((real > threshold).sum())
    recall = tp / len(fake)
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return dict(
        recall=recall, fpr=fp / len(real), precision=precision, f1=f1, auroc=auroc(real, fake)
    )


def bootstrap_metrics(
    real: Tensor, fake: Tensor, threshold: float, n_boot: int, generator: torch.Generator
) -> dict[str, float]:
    """Standard errors of :func:`detection_metrics` by resampling the test videos (real and
    fake apart, the threshold fixed): {metric: SE}."""
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        r = real[torch.randint(len(real), (len(real),), generator=generator)]
        f = fake[torch.randint(len(fake), (len(fake),), generator=generator)]
        for k, v in detection_metrics(r, f, threshold).items():
            draws.setdefault(k, []).append(v)
    return {k: float(torch.tensor(v).std()) for k, v in draws.items()}


@torch.no_grad()
def reference_dissimilarity(kernel: DeepKernel, tests: Tensor, reference: Tensor) -> Tensor:
    """The per-video score: E_{y != y' in ref} k(y, y') - E_{x in video, y in ref} k(x, y), for
    tests (B, T, D) against reference (R, D); returns (B,). It is MMD^2 of the video against
    the reference without the video's own within-set term E k(x, x'): a video's T frames are
    strongly correlated, so that term measures how coherent a video is, not how far it lies
    from the reference (with it, coherent real videos scored as far as fakes)."""
    b, t, d = tests.shape
    r = len(reference)
    syy = off_diagonal_mean(kernel.gram(reference, reference))
    kxy = kernel.gram(tests.reshape(b * t, d), reference).reshape(b, t, r).mean((1, 2))
    return syy - kxy


@torch.no_grad()
def witness_scores(kernel: DeepKernel, tests: Tensor, reference: Tensor, other: Tensor) -> Tensor:
    """The MMD witness of a trained kernel, averaged over each video's frames:
    w(x) = E_{y in other} k(x, y) - E_{y in reference} k(x, y) (high: x lies nearer the fakes
    ``other`` (F, D) than the real ``reference`` (R, D)); tests (B, T, D) -> (B,). The witness
    is the direction in which the kernel's MMD between real and fake is largest, so a
    per-video score built on it agrees with what the kernel was trained to separate."""
    b, t, d = tests.shape
    flat = tests.reshape(b * t, d)
    w = kernel.gram(flat, other).mean(1) - kernel.gram(flat, reference).mean(1)
    return w.reshape(b, t).mean(1)


def mean_embedding_gram(kernel: DeepKernel, frames: int) -> Callable[[Tensor, Tensor], Tensor]:
    """A kernel between videos, each a set of ``frames`` frame features flattened to (n, T D):
    K(a, b) = mean_{t, t'} k(a_t, b_t') (the inner product of mean embeddings, a valid
    kernel). Videos, not frames, are the exchangeable units of a permutation test: frames of
    one video are correlated, so permuting frames would not give the null law."""

    @torch.no_grad()
    def gram(a: Tensor, b: Tensor) -> Tensor:
        fa, fb = a.reshape(len(a) * frames, -1), b.reshape(len(b) * frames, -1)
        k = kernel.gram(fa, fb).reshape(len(a), frames, len(b), frames)
        return k.mean((1, 3))

    return gram


def bootstrap_gain(
    real_a: Tensor,
    fake_a: Tensor,
    thr_a: float,
    real_b: Tensor,
    fake_b: Tensor,
    thr_b: float,
    n_boot: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """Paired bootstrap SE of metric(a) - metric(b) for two detectors scored on the same
    test videos (the same resampled indices for both): {metric: SE of the difference}."""
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        i = torch.randint(len(real_a), (len(real_a),), generator=generator)
        j = torch.randint(len(fake_a), (len(fake_a),), generator=generator)
        ma = detection_metrics(real_a[i], fake_a[j], thr_a)
        mb = detection_metrics(real_b[i], fake_b[j], thr_b)
        for k in ma:
            draws.setdefault(k, []).append(ma[k] - mb[k])
    return {k: float(torch.tensor(v).std()) for k, v in draws.items()}


def rejection_rate(gram: Callable[[Tensor, Tensor], Tensor], pool_a: Tensor,
                   pool_b: Tensor | None, m: int, n_tests: int, alpha: float, n_perm: int,
                   generator: torch.Generator) -> float:  # fmt: skip
    """The share of ``n_tests`` permutation tests (:func:`permutation_test`) that reject, each
    on ``m`` random rows of pool_a against ``m`` of pool_b; with pool_b None, two disjoint
    sets of pool_a (real vs real: the type-I error, near alpha when the test is calibrated)."""
    rejected = 0
    for _ in range(n_tests):
        p = torch.randperm(len(pool_a), generator=generator)
        x = pool_a[p[:m]]
        if pool_b is None:
            y = pool_a[p[m : 2 * m]]
        else:
            y = pool_b[torch.randperm(len(pool_b), generator=generator)[:m]]
        rejected += permutation_test(gram, x, y, alpha, n_perm, generator).reject
    return rejected / n_tests
