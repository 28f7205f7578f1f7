"""Chapter 11: NSG-VD, detecting generated videos by the conservation of probability flow.

Zhang et al. 2025, docs/papers.md §11. Time convention: physical time (video time t in
frames); the frame model's score is taken at one fixed small noise level ``sigma``, separate
from t. The method lives in the layers: :mod:`theory.nsg` (the identity v^T NSG = -1 and its
zoom counterexample, sympy and closed form), :mod:`nsg` (the estimator: scores, central
differences, the heavy-tail filter, the PCA-Gaussian and denoiser scores),
:mod:`two_sample` (the deep-kernel MMD, its training for test power, the permutation test,
the witness score, detection metrics) and :mod:`datasets.videos` (real and fake videos with
matched per-frame statistics). The experiments, each callable on its own: :func:`theory`
(the identity on random Gaussians by autograd, the estimator on an exactly transported
Gaussian video, the zoom) and :func:`detection` (five detectors on the synthetic videos:
metrics, reference-set sizes, one-type training, the calibration of the MMD test);
``run`` composes the two.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import experiment, scale
from pflow_explore import nsg as N
from pflow_explore import two_sample as ts
from pflow_explore.claims import Claim, claim_above, claim_band, claim_below, claim_ordered
from pflow_explore.datasets import videos as V
from pflow_explore.experiment import (
    Seeds,
    cache_key,
    choose,
    lazy_tensors,
    one_thread_on_cpu,
    presets,
)
from pflow_explore.theory import nsg as theory_nsg
from pflow_explore.theory.gaussian_flow import Derivation
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import nsg_figures as nf
from pflow_explore.viz import style

CHAPTER = "nsg_video"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(
    theory=(0, 1000),
    data=(1, 100),
    frames=2,
    init=10,
    train=11,
    kernel=(12, 100),
    boot=13,
    draws=14,
    perm=15,
    denoiser=16,
)
MAIN = "NSG (Gaussian score)"
BASELINE = "frame-only baseline"
# detector -> (feature kind, score model)
DETECTORS = {
    MAIN: ("nsg", "gaussian"),
    "NSG (denoiser score)": ("nsg", "denoiser"),
    "spatial only (score)": ("spatial", "gaussian"),
    "temporal only (dx)": ("temporal", "gaussian"),
    BASELINE: ("frames", "gaussian"),
}
METRICS = ("auroc", "recall", "f1", "fpr")


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name); all of it is in
    the detection results' cache key, the denoiser's fields in its own."""

    scale: str
    size: int = 16  # frames are size x size
    frames: int = 8  # the paper's 8 frames
    noise: float = 0.05  # sensor noise std
    sigma: float = 0.1  # the score's noise level (the paper: diffusion time 6/1000)
    eps_fraction: float = 0.1  # eps = this x median |<s, dx>| of real training videos
    clip_quantile: float = 0.99  # the heavy-tail filter (NSGScaler)
    n_fit_frames: int = 4000  # frames the PCA-Gaussian and the denoiser learn from
    n_train: int = 240  # training videos per kind (the kernels)
    n_ref: int = 100  # reference pool: real videos (and as many fakes for the witness)
    n_calib: int = 100  # held-out real videos that set the threshold (5% false positives)
    n_test: int = 150  # test videos per kind
    ref_sizes: tuple[int, ...] = (10, 25, 50, 100)
    ref_draws: int = 3  # random reference sets per size
    den_hidden: int = 256
    den_depth: int = 2
    den_steps: int = 1500
    den_batch: int = 256
    den_lr: float = 1e-3
    kernel_hidden: int = 64
    kernel_out: int = 16
    kernel_steps: int = 250
    kernel_batch: int = 128
    kernel_lr: float = 1e-3
    alpha: float = 0.05
    n_boot: int = 200
    n_type1: int = 200  # real-vs-real permutation tests
    test_set: int = 10  # videos per set in the set-level tests
    n_perm: int = 100
    n_examples: int = 6  # videos per kind kept for the explorer
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "frames", low=3)
        experiment.require_at_least(self, "n_train n_calib n_test", low=8)
        need(self.size in (8, 16, 32, 64), f"size must be 8, 16, 32 or 64, got {self.size}")
        need(
            min(self.sigma, self.eps_fraction, self.den_lr, self.kernel_lr) > 0,
            "sigma, eps_fraction and the learning rates must be > 0",
        )
        need(0.5 < self.clip_quantile <= 1, "clip_quantile must lie in (0.5, 1]")
        need(0 < self.alpha < 0.5, f"alpha must lie in (0, 0.5), got {self.alpha}")
        sizes = list(self.ref_sizes)
        ok = sizes == sorted(set(sizes)) and sizes[0] >= 2 and sizes[-1] == self.n_ref
        need(ok and len(sizes) >= 2, f"ref_sizes must increase from >= 2 to n_ref, got {sizes}")
        need(2 * self.test_set <= self.n_calib + self.n_test, "test_set too large")
        need(self.n_examples <= self.n_test, "n_examples must be <= n_test")


SETTINGS = presets(
    Settings,
    tiny=dict(n_fit_frames=300, n_train=24, n_ref=12, n_calib=20, n_test=20, ref_sizes=(4, 12),
              ref_draws=2, den_hidden=64, den_steps=20, kernel_hidden=32, kernel_steps=8,
              kernel_batch=48, n_boot=20, n_type1=8, test_set=5, n_perm=15, n_examples=3),
    cpu={},
    gpu=dict(size=64, n_fit_frames=20000, n_train=2000, n_ref=200, n_calib=500, n_test=1000,
             ref_sizes=(10, 25, 50, 100, 200), ref_draws=5, den_hidden=1024, den_depth=3,
             den_steps=6000, kernel_hidden=256, kernel_out=32, kernel_steps=1500,
             kernel_batch=256, n_boot=500, n_type1=500, n_perm=200),
)  # fmt: skip
FIELDS_DENOISER = "size noise sigma n_fit_frames den_hidden den_depth den_batch seed".split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


# ---- theory -------------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The identity on random translating Gaussians (autograd, independent of the closed
    form), the estimator on an exactly transported Gaussian video, and the zoom."""

    identity_error: float  # max |v^T NSG + 1| by autograd
    closed_form_error: float  # max relative |autograd NSG - closed form|
    estimator_error: float  # max |v^T NSG_est - 1|: exact score, central differences
    zoom_violation: float  # median |v^T NSG + 1| for the zoom flow
    n_cases: int


def theory_check(s: Settings, cases: int = 6, n: int = 64) -> TheoryCheck:
    """See :class:`TheoryCheck`: ``cases`` random (d in 2..6, Sigma = A A^T + I/2, mu0, v,
    t) in float64, ``n`` points each. The estimator: x_t = x_0 + v t with x_0 ~ p_0 (the
    transport of the translating Gaussian); its central differences are exactly v, the exact
    score of p_t gives <s, dx> = d_t log p(x_t) - d_t log p = -d_t log p (conservation), so
    NSG_est = -NSG and v^T NSG_est = +1."""
    seeds, f64 = Seeds(s.seed, **SEEDS), torch.float64
    ident, closed, est, zoom = [], [], [], []
    for k in range(cases):
        gen = seeds.generator("theory", k)
        d = 2 + k % 5
        a = torch.randn(d, d, generator=gen, dtype=f64)
        cov = a @ a.T + 0.5 * torch.eye(d, dtype=f64)
        mu0, v = torch.randn(2, d, generator=gen, dtype=f64)
        t = float(torch.rand(1, generator=gen, dtype=f64)) * 2
        x = mu0 + v * t + torch.randn(n, d, generator=gen, dtype=f64) @ a.T
        auto = theory_nsg.autograd_nsg(theory_nsg.translating(mu0, v, cov), x, t)
        exact = theory_nsg.translating_gaussian_nsg(x, t, mu0, v, cov)
        ident.append(float((auto @ v + 1).abs().max()))
        closed.append(float(((auto - exact).norm(dim=1) / exact.norm(dim=1)).max()))
        # a video: 5 frames of exact transport, the exact score of p_t at each frame
        times = t + torch.arange(5, dtype=f64)
        video = x[:, None] + (times - t)[None, :, None] * v
        score = torch.stack(
            [
                -torch.linalg.solve(cov, (video[:, i] - mu0 - v * ti).T).T
                for i, ti in enumerate(times.tolist())
            ],
            1,
        )
        nsg_est = N.nsg(score, N.temporal_difference(video), 1e-300)
        est.append(float((nsg_est @ v - 1).abs().max()))
        rate = -0.3  # compressive
        zn = theory_nsg.autograd_nsg(theory_nsg.zooming(mu0, cov, rate), x, t)
        vz = theory_nsg.zoom_velocity(x, t, mu0, rate)
        zoom.append(float(((zn * vz).sum(1) + 1).abs().median()))
    return TheoryCheck(max(ident), max(closed), max(est), float(torch.tensor(zoom).median()), cases)


def derivations() -> dict[str, Derivation]:
    """The sympy derivation the chapter shows (``theory.nsg``)."""
    return {"identity": theory_nsg.identity_derivation()}


def theory(s: Settings) -> TheoryCheck:
    """:func:`theory_check`, cached."""
    with one_thread_on_cpu(blas=True):
        return evaluated(TheoryCheck, "theory", cache_key(s, ["seed"]), lambda: theory_check(s))


# ---- data and score models ----------------------------------------------------------------
def make_videos(s: Settings, kind: str, n: int, part: int, split: str = "train") -> Tensor:
    """``n`` flat videos (n, T, S^2) of ``kind``, seeded by (kind, part): part 0 training,
    1 reference pool, 2 calibration, 3 test, 4 examples."""
    gen = Seeds(s.seed, **SEEDS).generator("data", 10 * V.KINDS.index(kind) + part)
    return V.flat(V.make_videos(kind, n, s.frames, s.size, gen, split, s.noise))


def fit_frames(s: Settings) -> Tensor:
    """Real frames (n_fit_frames, S^2) at the poses real videos visit (training digits)."""
    gen = Seeds(s.seed, **SEEDS).generator("frames")
    return V.single_frames(s.n_fit_frames, s.size, gen, "train", s.noise).flatten(1)


def gaussian_score(s: Settings) -> N.GaussianScore:
    """The analytic PCA-Gaussian score at noise ``sigma``, fitted on real frames."""
    return N.GaussianScore.fit(fit_frames(s), s.sigma)


def train_denoiser(s: Settings) -> FitResult:
    """A small residual MLP denoiser at noise ``sigma`` on the same frames (cached)."""
    seeds = Seeds(s.seed, **SEEDS)

    def make() -> N.FrameDenoiser:
        torch.manual_seed(seeds["init"])
        return N.FrameDenoiser(s.size**2, s.den_hidden, s.den_depth)

    frames = lazy_tensors(scale.device(), lambda: (fit_frames(s),))  # a cached net needs none
    gen = seeds.generator("denoiser")

    def loss(model: nn.Module, step: int) -> Tensor:
        return N.denoising_loss(frames()[0], s.sigma, s.den_batch, gen)(model, step)

    return fit_cached(
        CHAPTER,
        "denoiser",
        cache_key(s, FIELDS_DENOISER),
        make,
        loss,
        version=VERSION,
        steps=s.den_steps,
        lr=s.den_lr,
        desc="frame denoiser at sigma",
        device=scale.device(),
    )


# ---- detection ----------------------------------------------------------------------------
@dataclass
class DetectionResult:
    """Five detectors (:data:`DETECTORS`) on the synthetic videos, each a deep kernel
    trained on real vs all fake types, scored by the witness against ``n_ref`` reference
    videos, thresholded at the calibration reals' (1 - alpha) quantile."""

    frame_stats: dict[str, list[float]]  # kind -> [mean, std of frame means, of frame stds]
    eps: float
    objective: dict[str, float]  # detector -> final MMD^2 / sigma_H1 (training batches)
    metrics: dict[str, dict[str, float]]  # detector -> metric -> mean over fake types
    metrics_se: dict[str, dict[str, float]]
    per_type: dict[str, dict[str, float]]  # detector -> fake kind -> AUROC
    gain: dict[str, float]  # "recall", "f1" (main - baseline) and their "<m> se"
    ref_sizes: list[int]
    ref_curve: dict[str, dict[str, list[float]]]  # detector -> metric -> mean over draws
    ref_curve_se: dict[str, dict[str, list[float]]]
    cross: dict[str, dict[str, float]]  # trained on kind -> tested on kind -> AUROC
    cross_unseen: float  # mean AUROC on the types not trained on
    cross_unseen_se: float
    type1_rate: float  # rejections / tests, real vs real, at alpha
    power: dict[str, float]  # fake kind -> rejection rate of fake sets vs real sets
    examples: dict[str, Tensor]  # kind -> (k, T, S, S) videos for the explorer
    example_nsg: dict[str, Tensor]  # kind -> (k, T, S, S) filtered NSG maps (main)
    nsg_filter: list[float]  # the main detector's [clip, scale] (NSGScaler)
    view_scores: dict[int, dict[str, Tensor]]  # ref size -> kind -> test scores (main)
    view_example_scores: dict[int, dict[str, Tensor]]  # ref size -> kind -> (k,)
    view_threshold: dict[int, float]
    view_set_test: dict[int, dict[str, list[float]]]  # ref size -> kind -> [stat, thr, p]
    fits: dict[str, FitResult] = field(default_factory=dict)


def split_videos(s: Settings) -> dict[tuple[str, str], Tensor]:
    """(part, kind) -> flat videos (n, T, S^2): "train" (kernels, filter, eps; training
    digits), "ref" (the reference pool; training digits), "calib" (reals only) and "test"
    (held-out digits); every kind in every part but "calib"."""
    parts = {"train": (0, s.n_train, "train"), "ref": (1, s.n_ref, "train"),
             "calib": (2, s.n_calib, "test"), "test": (3, s.n_test, "test")}  # fmt: skip
    return {(p, k): make_videos(s, k, n, i, split) for p, (i, n, split) in parts.items()
            for k in V.KINDS if p != "calib" or k == "real"}  # fmt: skip


def mixed(F: dict, part: str, n: int) -> Tensor:
    """n fake videos of ``part``, an equal share of every fake type."""
    return torch.cat([F[(part, k)][: math.ceil(n / 4)] for k in V.FAKES])[:n]


@dataclass
class Detector:
    """One trained detector: its per-frame feature map, the filter, the deep kernel, every
    split's filtered features F[(part, kind)] (on the device), the final objective."""

    features: Callable[[Tensor], Tensor]
    scaler: N.NSGScaler
    kernel: ts.DeepKernel
    F: dict[tuple[str, str], Tensor]
    objective: float


def build_detector(s: Settings, data: dict, feature: Callable[[Tensor], Tensor], index: int,
                   fake_kinds: tuple[str, ...] = V.FAKES) -> Detector:  # fmt: skip
    """Filter fitted on real training features; a deep kernel trained (MMD^2 / sigma_H1) on
    their frames against the frames of ``fake_kinds`` training videos (equal shares)."""
    scaler = N.NSGScaler.fit(feature(data[("train", "real")].to(scale.device())), s.clip_quantile)
    features = lambda v: scaler(feature(v.to(scale.device())))
    F = {key: features(v) for key, v in data.items()}
    fake = torch.cat([F[("train", k)][: math.ceil(s.n_train / len(fake_kinds))]
                      for k in fake_kinds])[: s.n_train]  # fmt: skip
    torch.manual_seed(Seeds(s.seed, **SEEDS).seed("kernel", index))
    dim = F[("train", "real")].shape[-1]
    kernel = ts.DeepKernel(dim, s.kernel_hidden, s.kernel_out, input_bandwidth=2 * math.sqrt(dim))
    gen = Seeds(s.seed, **SEEDS).generator("kernel", 50 + index)
    real = F[("train", "real")].flatten(0, 1)
    hist = ts.train_kernel(kernel.to(scale.device()), real, fake.flatten(0, 1), s.kernel_steps,
                           s.kernel_batch, s.kernel_lr, gen)  # fmt: skip
    objective = float(torch.tensor(hist[-max(1, len(hist) // 10) :]).mean())
    return Detector(features, scaler, kernel.eval(), F, objective)


def witness(det: Detector, ref_real: Tensor, ref_fake: Tensor, x: Tensor) -> Tensor:
    """Witness scores (B,) of feature videos x (B, T, D) against reference feature videos."""
    return ts.witness_scores(det.kernel, x, ref_real.flatten(0, 1), ref_fake.flatten(0, 1)).cpu()


def score_videos(s: Settings, det: Detector, ref_real: Tensor, ref_fake: Tensor,
                 kinds: tuple[str, ...] = V.KINDS) -> tuple[dict[str, Tensor], float]:  # fmt: skip
    """Test scores {kind: (n_test,)} and the threshold: the (1 - alpha) quantile of the
    calibration reals' scores (5% false positives at alpha 0.05)."""
    w = functools.partial(witness, det, ref_real, ref_fake)
    thr = float(torch.quantile(w(det.F[("calib", "real")]), 1 - s.alpha))
    return {k: w(det.F[("test", k)]) for k in kinds}, thr


def type_metrics(sc: dict[str, Tensor], thr: float) -> dict[str, dict[str, float]]:
    """fake kind -> detection metrics of its test videos against the real test videos."""
    return {k: ts.detection_metrics(sc["real"], sc[k], thr) for k in V.FAKES}


def mean_metrics(per: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over the fake types."""
    return {m: sum(p[m] for p in per.values()) / len(per) for m in METRICS}


def reference_subsets(s: Settings, size: int, draw: int) -> tuple[Tensor, Tensor]:
    """Indices of ``size`` real and ``size`` fake reference videos (draw ``draw``)."""
    g = Seeds(s.seed, **SEEDS).generator("draws")
    g.manual_seed(g.initial_seed() + 1000 * size + draw)
    return torch.randperm(s.n_ref, generator=g)[:size], torch.randperm(s.n_ref, generator=g)[:size]


def reference_sweep(s: Settings, det: Detector) -> tuple[dict, dict]:
    """Mean metrics over the fake types at each of ``ref_sizes`` (``ref_draws`` random
    reference sets below the full pool, the threshold re-calibrated with each): (mean, SE)
    over draws, {metric: list per size}."""
    curve, se = {m: [] for m in METRICS}, {m: [] for m in METRICS}
    real, fake = det.F[("ref", "real")], mixed(det.F, "ref", s.n_ref)
    for size in s.ref_sizes:
        rows = []
        for draw in range(s.ref_draws if size < s.n_ref else 1):
            i, j = reference_subsets(s, size, draw)
            rows.append(mean_metrics(type_metrics(*score_videos(s, det, real[i], fake[j]))))
        for m in METRICS:
            vals = torch.tensor([r[m] for r in rows])
            curve[m].append(float(vals.mean()))
            se[m].append(float(vals.std() / math.sqrt(len(vals))) if len(vals) > 1 else 0.0)
    return curve, se


def cross_type(s: Settings, data: dict, feature: Callable, boot: torch.Generator) -> tuple:
    """A detector per fake type, trained on real vs that type only, its witness against
    that type's reference fakes; AUROC on every type. Returns (matrix, mean AUROC over the
    12 unseen pairs, its bootstrap SE over test videos)."""
    matrix, pairs = {}, []
    for a_i, a in enumerate(V.FAKES):
        det = build_detector(s, data, feature, 10 + a_i, (a,))
        sc, _ = score_videos(s, det, det.F[("ref", "real")], det.F[("ref", a)])
        matrix[a] = {b: ts.auroc(sc["real"], sc[b]) for b in V.FAKES}
        pairs += [(sc["real"], sc[b]) for b in V.FAKES if b != a]
    mean = lambda i, j: sum(ts.auroc(r[i], f[j]) for r, f in pairs) / len(pairs)
    full = torch.arange(s.n_test)
    resample = lambda: torch.randint(s.n_test, (s.n_test,), generator=boot)
    draws = [mean(resample(), resample()) for _ in range(s.n_boot)]
    return matrix, mean(full, full), float(torch.tensor(draws).std())


def evaluate_detection(s: Settings, denoiser: FitResult) -> DetectionResult:
    """See :class:`DetectionResult`: every detector of :data:`DETECTORS` built, scored
    against the full reference pool and swept over ``ref_sizes``; the gains over the
    baseline by a paired bootstrap; the cross-type matrix and the set-level tests with the
    main detector."""
    seeds, data = Seeds(s.seed, **SEEDS), split_videos(s)
    examples = {k: make_videos(s, k, s.n_examples, 4, "test") for k in V.KINDS}
    shape = (-1, s.frames, s.size, s.size)
    stats = {k: V.frame_statistics(data[("test", k)].reshape(shape)).mean(0).tolist()
             for k in V.KINDS}  # fmt: skip
    models = {"gaussian": gaussian_score(s).to(scale.device()),
              "denoiser": N.denoiser_score(denoiser.model.eval(), s.sigma)}  # fmt: skip
    train_real = data[("train", "real")].to(scale.device())
    eps = s.eps_fraction * N.denominator_scale(train_real, models["gaussian"])
    boot, dets, scores, thr = seeds.generator("boot"), {}, {}, {}
    r: dict[str, dict] = {k: {} for k in ("obj", "metrics", "se", "per", "curve", "curve_se")}
    for index, (name, (kind, model)) in enumerate(DETECTORS.items()):
        feature = functools.partial(N.video_features, score=models[model], kind=kind, eps=eps)
        det = dets[name] = build_detector(s, data, feature, index)
        scores[name], thr[name] = score_videos(s, det, det.F[("ref", "real")],
                                               mixed(det.F, "ref", s.n_ref))  # fmt: skip
        per = type_metrics(scores[name], thr[name])
        r["obj"][name], r["metrics"][name] = det.objective, mean_metrics(per)
        r["per"][name] = {k: p["auroc"] for k, p in per.items()}
        ses = [ts.bootstrap_metrics(scores[name]["real"], scores[name][k], thr[name], s.n_boot,
                                    boot) for k in V.FAKES]  # fmt: skip
        r["se"][name] = {m: math.sqrt(sum(e[m] ** 2 for e in ses)) / 4 for m in METRICS}
        r["curve"][name], r["curve_se"][name] = reference_sweep(s, det)
    a, b = scores[MAIN], scores[BASELINE]
    gain = {m: r["metrics"][MAIN][m] - r["metrics"][BASELINE][m] for m in ("recall", "f1")}
    ses = [ts.bootstrap_gain(a["real"], a[k], thr[MAIN], b["real"], b[k], thr[BASELINE],
                             s.n_boot, boot) for k in V.FAKES]  # fmt: skip
    gain |= {f"{m} se": math.sqrt(sum(e[m] ** 2 for e in ses)) / 4 for m in ("recall", "f1")}
    main = dets[MAIN]
    cross, unseen, unseen_se = cross_type(s, data, main.features, boot)
    type1, power = set_tests(s, main)
    view = views(s, main, examples)
    ex_nsg = {k: main.features(v).reshape(shape).cpu() for k, v in examples.items()}
    return DetectionResult(
        stats, eps, r["obj"], r["metrics"], r["se"], r["per"], gain, list(s.ref_sizes),
        r["curve"], r["curve_se"], cross, unseen, unseen_se, type1, power,
        {k: v.reshape(shape).clone() for k, v in examples.items()}, ex_nsg,
        [main.scaler.clip, main.scaler.scale], *view)  # fmt: skip


def set_tests(s: Settings, det: Detector) -> tuple[float, dict[str, float]]:
    """Permutation tests between sets of ``test_set`` videos (mean-embedding kernel):
    the type-I error on ``n_type1`` real-vs-real tests (held-out reals), and the power on
    fake sets against real sets (``n_type1 // 10`` tests per type)."""
    gen, F = Seeds(s.seed, **SEEDS).generator("perm"), det.F
    gram = ts.mean_embedding_gram(det.kernel, s.frames)
    reals = torch.cat([F[("calib", "real")], F[("test", "real")]]).flatten(2)
    run = lambda b, n: ts.rejection_rate(gram, reals, b, s.test_set, n, s.alpha, s.n_perm, gen)
    power = {k: run(F[("test", k)].flatten(2), max(1, s.n_type1 // 10)) for k in V.FAKES}
    return run(None, s.n_type1), power


def views(s: Settings, det: Detector, examples: dict[str, Tensor]) -> tuple[dict, ...]:
    """What the explorer shows per reference size (the first draw of :func:`reference_sweep`):
    test scores, the examples' scores, the threshold, and the set-level test of the first
    ``test_set`` test videos of each kind against the real reference videos
    [statistic, threshold, p-value]."""
    gen = Seeds(s.seed, **SEEDS).generator("perm")
    gram = ts.mean_embedding_gram(det.kernel, s.frames)
    real, fake = det.F[("ref", "real")], mixed(det.F, "ref", s.n_ref)
    ex = {k: det.features(v) for k, v in examples.items()}
    out: tuple[dict, ...] = ({}, {}, {}, {})
    for size in s.ref_sizes:
        i, j = reference_subsets(s, size, 0)
        sc, thr = score_videos(s, det, real[i], fake[j])
        out[0][size], out[2][size] = {k: v.clone() for k, v in sc.items()}, thr
        out[1][size] = {k: witness(det, real[i], fake[j], v) for k, v in ex.items()}
        tests = {k: ts.permutation_test(gram, det.F[("test", k)][: s.test_set].flatten(1),
                                        real[i].flatten(1), s.alpha, s.n_perm, gen)
                 for k in V.KINDS}  # fmt: skip
        out[3][size] = {k: [t.statistic, t.threshold, t.p_value] for k, t in tests.items()}
    return out


def detection(s: Settings) -> DetectionResult:
    """Train (or load) the denoiser, then :func:`evaluate_detection` (cached)."""
    with one_thread_on_cpu(blas=True):
        fit = train_denoiser(s)
        return evaluated(
            DetectionResult,
            "detection",
            cache_key(s, exclude=["scale"], prefix=""),
            lambda: evaluate_detection(s, fit),
            fits={"denoiser": fit},
        )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the theory check and the video detection experiment."""

    theory: TheoryCheck
    detection: DetectionResult


EXPERIMENTS = {"theory check": theory, "detection": detection}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_theory(th: TheoryCheck, sc: str) -> list[Claim]:
    """The identity (autograd), the closed form, the estimator, the zoom counterexample."""
    note = f"{th.n_cases} random Gaussians (d = 2..6), float64"
    out = [
        claim_below(
            "identity: max |v^T NSG + 1| (autograd, translating Gaussian)",
            "v^T NSG = -1 for divergence-free motion (an identity)",
            th.identity_error,
            1e-9,
            sc,
            note,
        )
    ]
    out.append(
        claim_below(
            "closed-form NSG vs autograd (max relative error)",
            "NSG = -Sigma^-1 r / (v^T Sigma^-1 r)",
            th.closed_form_error,
            1e-9,
            sc,
            note,
        )
    )
    out.append(
        claim_below(
            "estimator on an exactly transported video: max |v^T NSG_est - 1|",
            "<NSG_est, dx> ~ 1 by construction; NSG_est = -NSG when conserved",
            th.estimator_error,
            1e-9,
            sc,
            note + "; exact score, central differences",
        )
    )
    return out + [
        claim_above(
            "zoom (compressive) flow: median |v^T NSG + 1|",
            "a compressive flow breaks the identity",
            th.zoom_violation,
            0.1,
            sc,
            note + "; a(t) = 1 - 0.3 t",
        )
    ]


def claims_detection(d: DetectionResult, s: Settings) -> list[Claim]:
    """Detection beyond chance; gains over the frame-only baseline (paper: +16.00% recall,
    +10.75% F1); cross-type generalization; the full NSG against its parts; the test's
    calibration."""
    sc, m, se = s.scale, d.metrics, d.metrics_se
    note = "mean over the 4 fake types, each vs as many real test videos; " + ", ".join(
        f"{k} {v:.3f}" for k, v in d.per_type[MAIN].items()
    )
    out = [
        claim_above(
            f"{MAIN}: AUROC (all fake types)",
            "NSG-VD detects generated videos",
            m[MAIN]["auroc"],
            0.5,
            sc,
            note,
            se=se[MAIN]["auroc"],
        )
    ]
    for metric, paper in (
        ("recall", "+16.00% recall over baselines"),
        ("f1", "+10.75% F1 over baselines"),
    ):
        note = (
            f"{MAIN} {m[MAIN][metric]:.3f} vs {BASELINE} {m[BASELINE][metric]:.3f}; "
            f"threshold at {1 - s.alpha:.0%} of calibration reals; paired bootstrap SE"
        )
        out.append(
            claim_above(
                f"{metric} gain over the {BASELINE}",
                paper,
                d.gain[metric],
                0.0,
                sc,
                note,
                se=d.gain[f"{metric} se"],
            )
        )
    note = "; ".join(
        f"train {a}: " + ", ".join(f"{b} {v:.2f}" for b, v in row.items() if b != a)
        for a, row in d.cross.items()
    )
    out.append(
        claim_above(
            "cross-type: AUROC on fake types not trained on (mean)",
            "generalizes across generators",
            d.cross_unseen,
            0.5,
            sc,
            note,
            se=d.cross_unseen_se,
        )
    )
    parts = {k: m[k]["auroc"] for k in (MAIN, "spatial only (score)", "temporal only (dx)")}
    ses = {k: se[k]["auroc"] for k in parts}
    out.append(
        claim_ordered(
            "ablation: full NSG beats spatial-only and temporal-only (AUROC)",
            "the full NSG beats its parts",
            parts,
            sc,
            ses=ses,
            lower_is_better=False,
        )
    )
    half = 1.96 * math.sqrt(s.alpha * (1 - s.alpha) / s.n_type1)
    note = (
        f"{s.n_type1} permutation tests of {s.test_set} vs {s.test_set} held-out real videos, "
        f"{s.n_perm} permutations; power on fake sets: "
        + ", ".join(f"{k} {v:.2f}" for k, v in d.power.items())
    )
    out.append(
        claim_band(
            "MMD test: type-I error on real vs real",
            f"alpha = {s.alpha}",
            d.type1_rate,
            max(0.0, s.alpha - 2 * half),
            s.alpha + 2 * half,
            sc,
            note,
        )
    )
    return out


def claims(r: Results) -> list[Claim]:
    """The chapter's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    return claims_theory(r.theory, r.scale) + claims_detection(r.detection, s)


# ---- figures ------------------------------------------------------------------------------
def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    d = r.detection
    out = {
        f"ref_{m}": nf.metric_vs_size_figure(
            d.ref_sizes,
            {k: v[m] for k, v in d.ref_curve.items()},
            {k: v[m] for k, v in d.ref_curve_se.items()},
            m,
        )
        for m in ("auroc", "recall", "f1")
    }
    return out | {
        "detectors": nf.auroc_bars_figure(d.per_type),
        "cross_type": nf.cross_type_figure(d.cross),
        "examples": nf.frames_and_nsg_figure(d.examples, d.example_nsg),
    }


def preview() -> go.Figure:
    """A real and a zooming video's first and last frames (no training): the chapter in one
    picture, computed afresh."""
    gen = torch.Generator().manual_seed(0)
    real = V.make_videos("real", 1, 8, 16, gen)[0]
    zoom = V.make_videos("zoom", 1, 8, 16, gen)[0]
    z = torch.cat([torch.cat([real[0], real[-1]], 1), torch.cat([zoom[0], zoom[-1]], 1)], 0)
    fig = go.Figure(go.Heatmap(z=z.flip(0).tolist(), colorscale="gray", showscale=False))
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_xaxes(visible=False).update_yaxes(visible=False))
