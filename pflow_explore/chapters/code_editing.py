"""Chapter 08: CODE, confident ordinary differential editing of corrupted images.

van Delft, Martorella & Alahi 2024, docs/papers.md §08. Time convention: diffusion (t = 0
data, t = 1 noise) on the VP-linear path (:mod:`pflow_explore.paths`). The method lives in
:mod:`pflow_explore.editing` (PF-ODE inversion, Langevin at one level, decoding, clipping,
SDEdit) and its Gaussian closed form in :mod:`pflow_explore.theory.code_gaussian`. The
experiments, each callable on its own: :func:`gaussian` (the closed-form channels against
Monte Carlo simulation with the exact score, and the closed-form trade-off curves),
:func:`mixture` (a 2D mixture with its exact score: corrupted points pulled to the nearest
mode) and :func:`digits` (an eps-model of 8x8 digits editing five corruptions it never saw:
CODE against SDEdit, clipping on and off, the clip rate of clean data); ``run`` composes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import editing, experiment, paths
from pflow_explore.adjoint import eps_matching_loss
from pflow_explore.claims import Claim, claim_above, claim_below
from pflow_explore.datasets.corruptions import CORRUPTIONS, OUT_OF_RANGE, corrupt
from pflow_explore.datasets.digits import digits as digit_images
from pflow_explore.datasets.digits import flat_digits
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.metrics import digits_features, frechet_distance
from pflow_explore.nets import MLP
from pflow_explore.nets.classifier import load_digits_classifier
from pflow_explore.theory import code_gaussian as cg
from pflow_explore.theory.mixtures import MixtureFlow
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import code_figures as cf
from pflow_explore.viz import style

CHAPTER = "code_editing"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(gauss=0, mix=1, init=2, data=3, corrupt=(4, 100), edit=(5, 100), boot=6)
F64 = torch.float64
METHODS = ("CODE", "CODE, no clip", "SDEdit")


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name)."""

    scale: str
    path: str = "vp_linear"
    # the Gaussian check: random priors in gauss_dim, gauss_reps edits per input
    gauss_dim: int = 3
    gauss_cases: int = 2
    gauss_inputs: int = 4
    gauss_reps: int = 1500
    gauss_steps: int = 100  # DDIM / ancestral steps of the simulation
    curve_dim: int = 16  # the closed-form trade-off curves
    # the 2D mixture: 8 Gaussians on a ring of radius 4, std 0.25; inputs pushed off by N(0, push^2)
    n_mix: int = 2000
    push: float = 0.9
    mix_level: float = 0.1  # t_L and K of the 2D edit (the modes merge above t ~ 0.2 here)
    mix_langevin: int = 32
    # the digits model: flat 8x8 MLP eps-model
    hidden: int = 512
    depth: int = 3
    batch: int = 256
    lr: float = 1e-3
    steps: int = 2500
    # editing
    ode_steps: int = 16  # DDIM steps for inversion and decoding (ancestral for SDEdit)
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.45)  # t_L
    langevin: tuple[int, ...] = (4, 16, 48)  # K
    step_scale: float = 0.2  # e = step_scale sigma^2
    step_scales: tuple[float, ...] = (0.05, 0.1, 0.4)  # the extra step sweep at the middle
    eta: float = 2.0
    strength: float = 0.6
    corruptions: tuple[str, ...] = CORRUPTIONS
    n_eval: int = 359  # held-out digits (359 in the test split)
    n_boot: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_eval n_mix", low=8)
        need(self.n_eval <= 359, f"n_eval must be <= 359 (the test split), got {self.n_eval}")
        lv = list(self.levels)
        need(
            lv == sorted(set(lv)) and len(lv) >= 2 and 0.05 <= lv[0] and lv[-1] <= 0.95,
            f"levels must increase strictly within [0.05, 0.95] (two at least), got {lv}",
        )
        ks = list(self.langevin)
        need(ks == sorted(set(ks)) and ks[0] >= 1, f"langevin must increase from >= 1, got {ks}")
        need(
            0 < self.step_scale < 1 and all(0 < e < 1 for e in self.step_scales),
            "step scales must lie in (0, 1) (larger steps are unstable)",
        )
        need(self.eta >= 0 and 0 <= self.strength <= 1, "need eta >= 0 and strength in [0, 1]")
        need(self.push > 0 and self.lr > 0, "push and lr must be > 0")
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        need(not bad and len(self.corruptions) >= 1, f"corruptions must be from {CORRUPTIONS}")


SETTINGS = presets(
    Settings,
    tiny=dict(gauss_cases=1, gauss_inputs=2, gauss_reps=300, gauss_steps=30, curve_dim=4,
              n_mix=300, hidden=64, depth=2, steps=150, ode_steps=6, levels=(0.15, 0.3),
              langevin=(4, 12), step_scales=(0.1,), n_eval=48, n_boot=8,
              corruptions=("mask", "saturation", "blur")),
    cpu={},
    gpu=dict(gauss_cases=5, gauss_reps=10000, gauss_steps=300, curve_dim=64, n_mix=20000,
             hidden=1024, depth=4, steps=30000, ode_steps=50,
             levels=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6), langevin=(2, 8, 32, 128),
             step_scales=(0.02, 0.05, 0.1, 0.4, 0.6), n_boot=50),
)  # fmt: skip
FIELDS_GAUSS = "path gauss_dim gauss_cases gauss_inputs gauss_reps gauss_steps curve_dim".split()
EVAL_GAUSS = "levels langevin step_scale seed".split()
FIELDS_MIX = "path n_mix push mix_level mix_langevin step_scale ode_steps seed".split()
FIELDS_MODEL = "path hidden depth batch lr steps seed".split()
EVAL_DIGITS = (
    "ode_steps levels langevin step_scale step_scales eta strength corruptions".split()
    + ["n_eval", "n_boot"]
)


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def seeds(s: Settings) -> Seeds:
    return Seeds(s.seed, **SEEDS)  # the chapter's named seed streams


def middle(s: Settings) -> tuple[float, int]:
    """The chapter's reference setting: the middle level and the middle Langevin count."""
    return s.levels[len(s.levels) // 2], s.langevin[len(s.langevin) // 2]


def exact_eps(flow: MixtureFlow) -> editing.EpsModel:
    """eps(x, t) = -sigma_t grad log p_t(x), the exact noise predictor of a mixture."""
    return lambda x, t: -flow.path.sigma(t.double()).to(x) * flow.score(x, t.double())


# ---- the Gaussian closed form ---------------------------------------------------------------
@dataclass
class GaussianResult:
    """Max |z| of the simulated output means (against the closed form, SE from the
    closed-form variance) and of the covariance entries (SE of a sample covariance), for
    CODE and SDEdit; the same for a wrong CODE channel (gain b^K, one step short: the test
    that the check can fail); the closed-form curves: label -> (to_input, to_clean,
    frechet) lists, CODE over K at each level and SDEdit over the levels."""

    z_mean: dict[str, float]
    z_cov: dict[str, float]
    z_wrong: float
    curves: dict[str, dict[str, list[float]]]


def _z_scores(out: Tensor, mean: Tensor, cov: Tensor, n: int) -> tuple[float, float]:
    """(max |z| of means, max |z| of covariances) for out (m, n, d) against (m, d), (d, d)."""
    var = cov.diagonal()
    z_mean = ((out.mean(1) - mean) / (var / n).sqrt()).abs().max()
    se_cov = ((var[:, None] * var[None] + cov**2) / n).sqrt()
    z_cov = max(float(((o.T.cov() - cov) / se_cov).abs().max()) for o in out)
    return float(z_mean), z_cov


def gaussian_check(s: Settings) -> GaussianResult:
    """CODE at the middle setting and SDEdit at the middle level, simulated with the exact
    eps of random Gaussian priors (:func:`editing.code_edit`, :func:`editing.sdedit`,
    ``gauss_steps`` steps) against :mod:`theory.code_gaussian`."""
    path, sd = paths.get_path(s.path), seeds(s)
    t_L, k = middle(s)
    a, sg = float(path.alpha(t_L)), float(path.sigma(t_L))
    zm, zc, wrong = {m: 0.0 for m in ("CODE", "SDEdit")}, {m: 0.0 for m in ("CODE", "SDEdit")}, 0.0
    gen = sd.generator("gauss")
    for c in range(s.gauss_cases):
        prior = cg.GaussianPrior.random(s.gauss_dim, 100 * s.seed + c)
        flow = MixtureFlow(GaussianMixture(torch.ones(1), prior.mean[None], prior.cov[None]), path)
        eps = exact_eps(flow)
        y0 = prior.mean + 0.8 * torch.randn(s.gauss_inputs, s.gauss_dim, generator=gen, dtype=F64)
        y = y0.repeat_interleave(s.gauss_reps, 0)
        code = editing.code_edit(eps, path, y, t_L, k, s.step_scale, s.gauss_steps, gen).x0
        sde = editing.sdedit(eps, path, y, t_L, s.gauss_steps, gen)
        channels = {
            "CODE": cg.code_map(prior.lam, a, sg, s.step_scale, k),
            "SDEdit": cg.sdedit_map(prior.lam, a, sg),
        }
        for m, out in (("CODE", code), ("SDEdit", sde)):
            mean, cov = prior.moments(channels[m], y0)
            z1, z2 = _z_scores(
                out.reshape(s.gauss_inputs, s.gauss_reps, -1), mean, cov, s.gauss_reps
            )
            zm[m], zc[m] = max(zm[m], z1), max(zc[m], z2)
        b = channels["CODE"].gain ** (1 / (k + 1))  # the wrong channel: gain b^K
        bad = cg.EditMap(b**k, channels["CODE"].noise)
        mean, cov = prior.moments(bad, y0)
        z1, _ = _z_scores(code.reshape(s.gauss_inputs, s.gauss_reps, -1), mean, cov, s.gauss_reps)
        wrong = max(wrong, z1)
    return GaussianResult(zm, zc, wrong, tradeoff_curves(s))


def tradeoff_curves(s: Settings) -> dict[str, dict[str, list[float]]]:
    """:func:`theory.code_gaussian.tradeoff_curves` for a random prior in curve_dim and a
    corruption n ~ N(m, 0.3^2 I), |m| = 1, at the chapter's levels and step scale."""
    prior = cg.GaussianPrior.random(s.curve_dim, 7 + s.seed)
    m = torch.randn(s.curve_dim, generator=torch.Generator().manual_seed(3), dtype=F64)
    return cg.tradeoff_curves(
        paths.get_path(s.path), prior.lam, m / m.norm(), 0.3, s.levels, s.step_scale
    )


def gaussian(s: Settings) -> GaussianResult:
    """:func:`gaussian_check`, cached."""
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, FIELDS_GAUSS + EVAL_GAUSS)
        return evaluated(GaussianResult, "gaussian", key, lambda: gaussian_check(s))


# ---- the 2D mixture -------------------------------------------------------------------------
def ring(radius: float = 4.0, std: float = 0.25, k: int = 8) -> GaussianMixture:
    ang = torch.arange(k, dtype=F64) * 2 * math.pi / k
    return GaussianMixture.isotropic(radius * torch.stack([ang.cos(), ang.sin()], 1), std)


def nearest_mode(x: Tensor, mix: GaussianMixture) -> Tensor:
    return torch.cdist(x.to(F64), mix.means).argmin(1)


@dataclass
class MixtureResult:
    """Clean points, corrupted inputs (clean + N(0, push^2)), CODE and SDEdit outputs at
    (mix_level, mix_langevin); the share of outputs on the mode nearest their input (within 3 std)
    with SE, the same for SDEdit; mean log-density of inputs and outputs."""

    clean: Tensor
    inputs: Tensor
    code: Tensor
    sdedit: Tensor
    share_code: float
    share_sdedit: float
    se_code: float
    se_sdedit: float
    logp: dict[str, float]


def mixture_check(s: Settings) -> MixtureResult:
    """See :class:`MixtureResult`."""
    path, gen = paths.get_path(s.path), seeds(s).generator("mix")
    mix = ring()
    eps = exact_eps(MixtureFlow(mix, path))
    clean = mix.sample(s.n_mix, gen)
    y = clean + s.push * torch.randn(clean.shape, generator=gen, dtype=F64)
    t_L, k = s.mix_level, s.mix_langevin
    code = editing.code_edit(eps, path, y, t_L, k, s.step_scale, s.ode_steps, gen).x0
    sde = editing.sdedit(eps, path, y, t_L, s.ode_steps, gen)
    near = nearest_mode(y, mix)

    def share(x: Tensor) -> tuple[float, float]:
        ok = (nearest_mode(x, mix) == near) & ((x - mix.means[near]).norm(dim=1) < 3 * 0.25)
        p = float(ok.double().mean())
        return p, math.sqrt(max(p * (1 - p), 1 / s.n_mix) / s.n_mix)

    logp = {
        k_: float(mix.log_prob(x).mean())
        for k_, x in (("clean", clean), ("inputs", y), ("CODE", code), ("SDEdit", sde))
    }
    (pc, sc), (ps, ss) = share(code), share(sde)
    keep = min(s.n_mix, 600)
    return MixtureResult(
        *(x[:keep].float().clone() for x in (clean, y, code, sde)), pc, ps, sc, ss, logp
    )


def mixture(s: Settings) -> MixtureResult:
    """:func:`mixture_check`, cached."""
    with one_thread_on_cpu(blas=True):
        return evaluated(
            MixtureResult, "mixture", cache_key(s, FIELDS_MIX), lambda: mixture_check(s)
        )


# ---- the digits model -------------------------------------------------------------------------
def make_net(s: Settings) -> MLP:
    torch.manual_seed(seeds(s).seed("init"))
    return MLP(64, s.hidden, s.depth)


def train(s: Settings) -> FitResult:
    """A flat 8x8 digits eps-model (training split) by noise matching on the path (cached)."""
    x, _, _ = flat_digits(8)
    path, gen = paths.get_path(s.path), seeds(s).generator("data")

    def loss(m: MLP, step: int) -> Tensor:
        idx = torch.randint(len(x), (s.batch,), generator=gen)
        return eps_matching_loss(m, path, x[idx], gen)

    fit_kw = dict(steps=s.steps, lr=s.lr, desc="eps-model, digits")
    with one_thread_on_cpu(blas=True):
        return fit_cached(
            CHAPTER,
            "eps-digits",
            cache_key(s, FIELDS_MODEL),
            lambda: make_net(s),
            loss,
            version=VERSION,
            **fit_kw,
        )


def held_out(s: Settings) -> tuple[Tensor, Tensor]:
    """The first n_eval held-out digits (n, 64) and their labels (n,)."""
    x, labels = digit_images(8, "test")
    return x[: s.n_eval].flatten(1), labels[: s.n_eval]


def corrupted(s: Settings, kind: str, x: Tensor, strength: float | None = None) -> Tensor:
    """The corruption ``kind`` of flat digits x (n, 64) at ``strength`` (default s.strength)."""
    gen = seeds(s).generator("corrupt", CORRUPTIONS.index(kind))
    st = s.strength if strength is None else strength
    return corrupt(x.reshape(-1, 1, 8, 8), kind, st, gen).flatten(1)


def edit(
    model: Callable,
    s: Settings,
    method: str,
    y: Tensor,
    t_L: float,
    k: int,
    step: float | None = None,
    seed: int = 0,
) -> Tensor:
    """One of METHODS on flat inputs y (n, 64) with the chapter's steps and eta."""
    path, gen = paths.get_path(s.path), seeds(s).generator("edit", seed)
    if method == "SDEdit":
        return editing.sdedit(model, path, y, t_L, s.ode_steps, gen)
    eta = s.eta if method == "CODE" else None
    e = s.step_scale if step is None else step
    return editing.code_edit(model, path, y, t_L, k, e, s.ode_steps, gen, eta).x0


@dataclass
class DigitsResult:
    """Per corruption, one row per edit (method, t_L, K, step): distance per pixel (RMS) to
    the input and to the clean digit with SEs over images; Frechet distance of classifier
    features to the training digits with a bootstrap SE; classifier accuracy on the clean
    labels with its binomial SE; the same numbers for the corrupted inputs and the clean
    digits ("input", "clean"); the clip rates of clean digits per level, forward-noised
    and ODE-inverted; paired clip-on minus clip-off differences of the distance to clean at
    the middle setting (mean, SE) per corruption; a few digits for the figures."""

    rows: dict[str, dict[str, list]]
    refs: dict[str, dict[str, float]]
    clip_noised: list[float]
    clip_inverted: list[float]
    clip_gain: dict[str, tuple[float, float]]
    images: dict[str, Tensor]


class Scorer:
    """Distances, Frechet distance (bootstrap SE) and accuracy of flat digits (n, 64)."""

    def __init__(self, s: Settings, clean: Tensor, labels: Tensor) -> None:
        self.s, self.clean, self.labels = s, clean, labels
        train, _, _ = flat_digits(8)
        self.ref = digits_features(train.reshape(-1, 1, 8, 8))
        self.clf, self.gen = load_digits_classifier(), seeds(s).generator("boot")

    def __call__(self, x: Tensor, y: Tensor) -> dict[str, float]:
        n, x = len(x), x.float().clamp(-1, 1)
        d_in = (x - y).pow(2).mean(1).sqrt()
        d_cl = (x - self.clean).pow(2).mean(1).sqrt()
        feats = digits_features(x.reshape(-1, 1, 8, 8))
        fd = frechet_distance(feats, self.ref)
        boot = [
            frechet_distance(feats[torch.randint(n, (n,), generator=self.gen)], self.ref)
            for _ in range(self.s.n_boot)
        ]
        with torch.no_grad():
            acc = float((self.clf(x.reshape(-1, 1, 8, 8)).argmax(1) == self.labels).double().mean())
        se = lambda v: float(v.std() / math.sqrt(n))  # noqa: E731
        return dict(
            to_input=float(d_in.mean()),
            to_input_se=se(d_in),
            to_clean=float(d_cl.mean()),
            to_clean_se=se(d_cl),
            fd=fd,
            fd_se=float(torch.tensor(boot).std()),
            acc=acc,
            acc_se=math.sqrt(max(acc * (1 - acc), 1 / n) / n),
        )


def digits_eval(s: Settings, model: Callable) -> DigitsResult:
    """Every corruption x every method x (t_L, K) of the settings, plus the step sweep of
    CODE at the middle setting; the clip rates of clean digits (see :class:`DigitsResult`)."""
    path = paths.get_path(s.path)
    clean, labels = held_out(s)
    score = Scorer(s, clean, labels)
    rows, refs, gains, images = {}, {}, {}, {"clean": clean[:8].clone()}
    t_mid, k_mid = middle(s)
    for kind in s.corruptions:
        y = corrupted(s, kind, clean)
        refs[kind] = score(y, y)
        table: dict[str, list] = {}
        jobs = [(m, t, k, s.step_scale) for m in METHODS[:2] for t in s.levels for k in s.langevin]
        jobs += [("CODE", t_mid, k_mid, e) for e in s.step_scales]
        jobs += [("SDEdit", t, 0, 0.0) for t in s.levels]
        outs = {}
        for i, (m, t, k, e) in enumerate(jobs):
            x = edit(model, s, m, y, t, k, e, seed=i)
            outs[m, t, k, e] = x
            row = dict(method=m, t_L=t, K=k, step=e) | score(x, y)
            for key, v in row.items():
                table.setdefault(key, []).append(v)
        rows[kind] = table
        on, off = (outs[m, t_mid, k_mid, s.step_scale] for m in METHODS[:2])
        diff = (on.clamp(-1, 1) - clean).pow(2).mean(1).sqrt() - (off.clamp(-1, 1) - clean).pow(
            2
        ).mean(1).sqrt()
        gains[kind] = (float(diff.mean()), float(diff.std() / math.sqrt(len(diff))))
        images[kind] = torch.stack([y[:8], on[:8], outs["SDEdit", t_mid, 0, 0.0][:8]]).clone()
    refs["clean"] = score(clean, clean)
    gen = seeds(s).generator("edit", 999)
    noised, inverted = [], []
    for t in s.levels:
        a, sg = float(path.alpha(t)), float(path.sigma(t))
        b = editing.clip_bound(path, t, s.eta)
        noised.append(
            editing.clip_rate(a * clean + sg * torch.randn(clean.shape, generator=gen), b)
        )
        with torch.no_grad():
            inverted.append(
                editing.clip_rate(editing.invert(model, path, clean, t, s.ode_steps), b)
            )
    return DigitsResult(rows, refs, noised, inverted, gains, images)


def digits(s: Settings) -> DigitsResult:
    """Train (or load) the model, then evaluate every edit (cached)."""
    fit = train(s)
    with one_thread_on_cpu(blas=True):
        model = fit.model.eval()
        key = cache_key(s, FIELDS_MODEL + EVAL_DIGITS)
        return evaluated(DigitsResult, "digits", key, lambda: digits_eval(s, model))


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the Gaussian check, the mixture and the digits edits."""

    gaussian: GaussianResult
    mixture: MixtureResult
    digits: DigitsResult


EXPERIMENTS = {"gaussian": gaussian, "mixture": mixture, "digits": digits}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claim_gaussian(g: GaussianResult, sc: str) -> Claim:
    """Closed form = simulation: the largest |z| of means and covariances below 4.5."""
    worst = max(max(g.z_mean.values()), max(g.z_cov.values()))
    note = (
        f"max |z| means: {', '.join(f'{k} {v:.2f}' for k, v in g.z_mean.items())}; "
        f"covariances: {', '.join(f'{k} {v:.2f}' for k, v in g.z_cov.items())}; "
        f"a channel one Langevin step short reads |z| {g.z_wrong:.1f}"
    )
    name = "Gaussian prior: closed-form CODE and SDEdit channels vs simulation (max |z|)"
    return claim_below(name, "encode / Langevin / decode are linear maps", worst, 4.5, sc, note)


def claims_clip(d: DigitsResult, s: Settings) -> list[Claim]:
    """Clip rate of clean digits under the bound 1 - (2 Phi(eta) - 1): forward-noised (the
    theorem) and ODE-inverted by the trained model (what CODE clips)."""
    bound = 1 - editing.coverage(s.eta)
    n = s.n_eval * 64
    note = f"levels {list(s.levels)}: " + ", ".join(f"{v:.4f}" for v in d.clip_noised)
    out = [
        claim_below(
            f"clip rate of forward-noised clean digits (max over levels, eta {s.eta:g})",
            f"<= 1 - (2 Phi(eta) - 1) = {bound:.4f}",
            max(d.clip_noised),
            bound,
            s.scale,
            note,
            inclusive=True,
        )
    ]
    worst = max(d.clip_inverted)
    note = f"levels {list(s.levels)}: " + ", ".join(f"{v:.4f}" for v in d.clip_inverted)
    se = math.sqrt(max(worst * (1 - worst), 1 / n) / n)
    out.append(
        claim_below(
            "clip rate of ODE-inverted clean digits (max over levels)",
            f"<= {bound:.4f} if the inversion reaches p_t",
            worst,
            bound,
            s.scale,
            note + " (pixels are correlated: the SE is optimistic)",
            se=se,
        )
    )
    return out


def pareto_share(rows: dict[str, list], realism: str = "fd", z: float = 2.0) -> tuple[float, int]:
    """Share of SDEdit's points that a CODE point (with clipping) dominates: no larger
    distance to the input and a realism (``fd``) lower by z combined SEs."""
    idx = {m: [i for i, v in enumerate(rows["method"]) if v == m] for m in ("CODE", "SDEdit")}
    won = 0
    for j in idx["SDEdit"]:
        won += any(
            rows["to_input"][i] <= rows["to_input"][j]
            and rows[realism][i]
            + z * math.hypot(rows[realism + "_se"][i], rows[realism + "_se"][j])
            < rows[realism][j]
            for i in idx["CODE"]
        )
    return won / max(len(idx["SDEdit"]), 1), len(idx["SDEdit"])


def claims_dominance(d: DigitsResult, s: Settings) -> list[Claim]:
    """Per corruption: CODE dominates at least half of SDEdit's trade-off points."""
    out = []
    for kind in s.corruptions:
        share, n = pareto_share(d.rows[kind])
        r = d.rows[kind]
        best = {
            m: min(v for v, mm in zip(r["fd"], r["method"], strict=True) if mm == m)
            for m in METHODS
        }
        note = (
            f"{n} SDEdit levels; lowest FD: "
            + ", ".join(f"{m} {v:.1f}" for m, v in best.items())
            + f"; input {d.refs[kind]['fd']:.1f}, clean {d.refs['clean']['fd']:.1f}"
        )
        name = f"{kind}: share of SDEdit's points dominated by CODE (distance to input, FD)"
        out.append(
            claim_above(
                name,
                "better realism-fidelity trade-off than SDEdit",
                share,
                0.5,
                s.scale,
                note,
                inclusive=True,
            )
        )
    return out


def claims_clipping(d: DigitsResult, s: Settings) -> list[Claim]:
    """Clipping lowers the distance to the clean digit on the out-of-range corruptions."""
    out = []
    t, k = middle(s)
    for kind in [c for c in OUT_OF_RANGE if c in s.corruptions]:
        mean, se = d.clip_gain[kind]
        name = f"{kind}: clipping's change of RMS distance to clean (t_L {t:g}, K {k})"
        note = f"paired over {s.n_eval} digits, clip on minus off; eta {s.eta:g}"
        out.append(
            claim_below(
                name, "clipping helps on out-of-range pixels", mean, 0.0, s.scale, note, se=se
            )
        )
    return out


def claim_restores(d: DigitsResult, s: Settings) -> Claim:
    """The out-of-range mask: CODE's best classifier accuracy above the corrupted input's."""
    kind = "mask" if "mask" in s.corruptions else s.corruptions[0]
    r, ref = d.rows[kind], d.refs[kind]
    i = max((j for j, m in enumerate(r["method"]) if m == "CODE"), key=lambda j: r["acc"][j])
    note = (
        f"best at t_L {r['t_L'][i]:g}, K {r['K'][i]} (the best of {r['method'].count('CODE')} "
        f"settings: a selection, so a small optimism); input {ref['acc']:.3f}; clean "
        f"{d.refs['clean']['acc']:.3f}"
    )
    name = f"{kind}: classifier accuracy after CODE minus on the corrupted input"
    return claim_above(
        name,
        "restores the content blindly",
        r["acc"][i] - ref["acc"],
        0.0,
        s.scale,
        note,
        se=math.hypot(r["acc_se"][i], ref["acc_se"]),
    )


def claim_mixture(m: MixtureResult, s: Settings) -> Claim:
    note = f"SDEdit {m.share_sdedit:.3f} +- {m.se_sdedit:.3f}; mean log p: " + ", ".join(
        f"{k} {v:.2f}" for k, v in m.logp.items()
    )
    name = "2D mixture: CODE outputs on the mode nearest their input (share)"
    return claim_above(
        name,
        "the most probable in-distribution point near the input",
        m.share_code,
        0.8,
        s.scale,
        note,
        se=m.se_code,
    )


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    out = [claim_gaussian(r.gaussian, r.scale), claim_mixture(r.mixture, s)]
    out += claims_clip(r.digits, s) + claims_dominance(r.digits, s)
    return out + claims_clipping(r.digits, s) + [claim_restores(r.digits, s)]


# ---- figures ------------------------------------------------------------------------------
def gaussian_figure(g: GaussianResult) -> go.Figure:
    """Closed-form fidelity (to the input) vs realism (Frechet to the prior)."""
    return cf.tradeoff_figure(
        g.curves,
        "to_input",
        "frechet",
        "Gaussian prior: closed-form trade-off",
        "E|out - y|^2",
        "Frechet distance to the prior",
    )


def mixture_figure(m: MixtureResult) -> go.Figure:
    return cf.mixture_figure(m.clean, m.inputs, m.code, m.sdedit)


def digits_tradeoff_figure(d: DigitsResult, kind: str) -> go.Figure:
    return cf.digits_tradeoff(d.rows[kind], d.refs[kind], d.refs["clean"], kind)


def digits_images_figure(d: DigitsResult, kind: str) -> go.Figure:
    return cf.before_after(d.images["clean"], d.images[kind], kind)


def clip_figure(d: DigitsResult, s: Settings) -> go.Figure:
    return cf.clip_rate_figure(
        list(s.levels), d.clip_noised, d.clip_inverted, 1 - editing.coverage(s.eta)
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    s, d = r.settings, r.digits
    out = {
        "gaussian_tradeoff": gaussian_figure(r.gaussian),
        "mixture": mixture_figure(r.mixture),
        "clip_rate": clip_figure(d, s),
    }
    for kind in s.corruptions:
        out[f"tradeoff_{kind}"] = digits_tradeoff_figure(d, kind)
        out[f"images_{kind}"] = digits_images_figure(d, kind)
    return out


def preview() -> go.Figure:
    """CODE on the 2D ring with its exact score: 150 pushed points and where they land."""
    path, mix = paths.VPLinear(), ring()
    gen = torch.Generator().manual_seed(0)
    y = mix.sample(150, gen) + 0.9 * torch.randn(150, 2, generator=gen, dtype=F64)
    out = editing.code_edit(exact_eps(MixtureFlow(mix, path)), path, y, 0.1, 16, 0.2, 8, gen).x0
    fig = cf.mixture_figure(None, y.float(), out.float(), None)
    return style.thumbnail(fig)
