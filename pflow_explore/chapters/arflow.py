"""Chapter 09: ARFlow: autoregressive flow with hybrid linear attention.

Hui et al. 2025, docs/papers.md §09. Time convention: flow (t = 0 noise, t = 1 data), as in
:mod:`ar_flow`, which holds the method (same-class training sequences at sorted times, the
loss, autoregressive Euler generation, the per-step timer), and
:mod:`nets.hybrid_attention` (the hybrid attention in its chunk-parallel and recurrent forms,
and the image transformer). The experiments, each callable on its own: :func:`identities`
(parallel = recurrent, causality, one chunk = a plain flow transformer, on random float64
weights), :func:`experiment_lengths` (class-conditional 8x8 digits: sequence length 1 (a
plain flow) vs 3 vs 5 at equal compute; Frechet distance and class accuracy of samples) and
:func:`experiment_cost` (sampling time per step against the number of previous chunks,
recurrent state vs full attention); ``run`` composes the three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore import ar_flow as af
from pflow_explore import experiment, metrics, viz
from pflow_explore.claims import Claim, claim_above, claim_below, claim_ordered
from pflow_explore.datasets.digits import digits
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.metrics import frechet_distance
from pflow_explore.nets.hybrid_attention import ARFlowTransformer
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import style

CHAPTER = "arflow"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(identity=(0, 1), init=10, train=11, noise=12, boot=13, cost=14, explore=15)
PAPER_FID = "ImageNet 128px, no guidance: ARFlow FID 14.08 vs SiT 9.17 (400k steps)"


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name). The fields that
    train models are in their cache keys (:data:`FIELDS_TRAIN`)."""

    scale: str
    # the network: (image_size / patch)^2 patch tokens per image (chunk)
    image_size: int = 8
    patch: int = 2
    dim: int = 64
    depth: int = 2
    heads: int = 4
    # training: one model per sequence length, each on images_per_step images per step
    lengths: tuple[int, ...] = (1, 3, 5)
    images_per_step: int = 120
    steps: int = 450
    lr: float = 1e-3
    warmup: int = 20
    # evaluation: samples with sample_steps Euler steps (= chunks), n_eval per model
    sample_steps: int = 20
    n_eval: int = 500
    n_boot: int = 30
    # identities on random float64 weights
    check_chunks: int = 5
    # sampling cost per step vs previous chunks (same architecture, random weights)
    cost_counts: tuple[int, ...] = (1, 32, 64, 128, 256)
    cost_batch: int = 16
    cost_repeats: int = 9
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_eval n_boot check_chunks", low=2)
        need(
            self.image_size in (8, 16, 32), f"image_size must be 8, 16 or 32, got {self.image_size}"
        )
        need(self.image_size % self.patch == 0, "patch must divide image_size")
        need(self.dim % self.heads == 0, "dim must be a multiple of heads")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        ok = list(self.lengths) == sorted(set(self.lengths)) and self.lengths[0] == 1
        need(ok and len(self.lengths) >= 2, f"lengths must increase from 1, got {self.lengths}")
        need(max(self.lengths) <= 100, "lengths: at most 100 images of one class per sequence")
        grid = list(self.cost_counts)
        need(grid == sorted(set(grid)) and len(grid) >= 3, "cost_counts: 3+ increasing counts")


SETTINGS = presets(
    Settings,
    tiny=dict(dim=32, depth=1, images_per_step=60, steps=30, sample_steps=8, n_eval=100,
              n_boot=8, cost_counts=(1, 16, 48), cost_batch=8, cost_repeats=5),
    cpu={},
    gpu=dict(image_size=32, patch=4, dim=256, depth=6, heads=8, images_per_step=240,
             steps=6000, lr=3e-4, warmup=200, sample_steps=50, n_eval=1000, n_boot=50,
             cost_counts=(1, 64, 128, 256, 512), cost_batch=64, cost_repeats=15),
)  # fmt: skip
FIELDS_TRAIN = "image_size patch dim depth heads images_per_step steps lr warmup seed".split()
EVAL_LENGTHS = "lengths sample_steps n_eval n_boot".split()
EVAL_COST = "image_size patch dim depth heads cost_counts cost_batch cost_repeats seed".split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def make_model(s: Settings, mode: str = "hybrid", seed: int | None = None) -> ARFlowTransformer:
    """The chapter's network, fresh (seeded from ``init`` unless ``seed`` is given)."""
    torch.manual_seed(Seeds(s.seed, **SEEDS)["init"] if seed is None else seed)
    return ARFlowTransformer(s.image_size, 1, s.patch, s.dim, s.depth, s.heads, 10, mode)


def data(s: Settings, split: str) -> tuple[Tensor, Tensor]:
    """Digits (N, image_size^2) in [-1, 1] and labels (N,): train 1438 / test 359."""
    x, y = digits(s.image_size, split)
    return x.flatten(1), y


# ---- identities ---------------------------------------------------------------------------
@dataclass
class IdentityCheck:
    """Exact properties on random float64 weights (every parameter ~ N(0, 0.3^2), 3 draws,
    hybrid and full attention): max |parallel - recurrent|, max change of the outputs of
    chunks before a perturbed one, min change after it, max |one-chunk model - model with the
    path across chunks removed|, max |recurrent generation - parallel generation|."""

    parallel_recurrent: float
    causal_before: float
    causal_after: float
    single_chunk: float
    generation: float
    draws: int


def _random_model(s: Settings, mode: str, seed: int) -> ARFlowTransformer:
    m = make_model(s, mode, seed).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@torch.no_grad()
def identity_check(s: Settings) -> IdentityCheck:
    """See :class:`IdentityCheck`; ``check_chunks`` chunks, batch 3, the later half perturbed."""
    seeds, c, d = Seeds(s.seed, **SEEDS), s.check_chunks, s.image_size**2
    pr = before = single = gen_gap = 0.0
    after = math.inf
    for k in range(3):
        g = seeds.generator("identity", k)
        x = torch.randn(3, c, d, generator=g, dtype=torch.float64)
        t = torch.rand(3, c, generator=g, dtype=torch.float64).sort(1).values
        y = torch.randint(10, (3,), generator=g)
        for mode in ("hybrid", "full"):
            m = _random_model(s, mode, seeds.seed("identity", k))
            v, state, outs = m(x, t, y), m.init_state(3, x), []
            for i in range(c):
                o, state = m.step(x[:, i], t[:, i], y, state)
                outs.append(o)
            pr = max(pr, float((v - torch.stack(outs, 1)).abs().max()))
            cut, x2 = c // 2, x.clone()
            x2[:, cut:] += torch.randn(x2[:, cut:].shape, generator=g, dtype=torch.float64)
            w = m(x2, t, y)
            before = max(before, float((w[:, :cut] - v[:, :cut]).abs().max()))
            after = min(after, float((w[:, cut:] - v[:, cut:]).abs().max()))
            plain = _random_model(s, mode, seeds.seed("identity", k))
            plain.cross_chunk = False
            one = float((m(x[:, :1], t[:, :1], y) - plain(x[:, :1], t[:, :1], y)).abs().max())
            single = max(single, one)
            rec = af.generate(m, x[:, 0], y, c).x
            gen_gap = max(
                gen_gap, float((rec - af.generate_parallel(m, x[:, 0], y, c)).abs().max())
            )
    return IdentityCheck(pr, before, after, single, gen_gap, 3)


def identities(s: Settings) -> IdentityCheck:
    """:func:`identity_check`, cached."""
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, "image_size patch dim depth heads check_chunks seed".split())
        return evaluated(IdentityCheck, "identities", key, lambda: identity_check(s))


# ---- sequence length at equal compute -----------------------------------------------------
def train_lengths(s: Settings) -> dict[int, FitResult]:
    """One model per sequence length, same initial weights, ``steps`` steps of
    ``images_per_step`` images each (length 1: a plain class-conditional flow)."""
    x, y = data(s, "train")
    out = {}
    for length in s.lengths:
        gen = Seeds(s.seed, **SEEDS).generator("train")
        loss = af.objective(x, y, length, s.images_per_step, gen)
        key = cache_key(s, FIELDS_TRAIN, length=length)
        out[length] = fit_cached(CHAPTER, f"length-{length}", key, lambda: make_model(s), loss,
                                 version=VERSION, steps=s.steps, lr=s.lr, warmup=s.warmup,
                                 cosine=True, desc=f"sequences of {length}")  # fmt: skip
    return out


@dataclass
class LengthsResult:
    """Per model label ("length 1", "length 3", ..., "length 5, no context", "untrained",
    "data"): FD to the held-out digits (classifier features) and its bootstrap SE, class
    accuracy of the samples and its binomial SE; example samples (10 per model, digits
    0-9); training losses per length."""

    fd: dict[str, float]
    fd_se: dict[str, float]
    accuracy: dict[str, float]
    accuracy_se: dict[str, float]
    examples: dict[str, Tensor]
    losses: dict[str, list[float]]
    train_seconds: dict[str, float]


def label(length: int) -> str:
    return "length 1 (plain flow)" if length == 1 else f"length {length}"


@torch.no_grad()
def evaluate_lengths(s: Settings, models: dict[int, torch.nn.Module],
                     fits: dict[int, FitResult] | None = None) -> LengthsResult:  # fmt: skip
    """Samples of every model from the same noise and labels (n_eval, balanced classes):
    length 1 without context (a plain flow), the others with it; the longest also without
    (does it use its context?); an untrained net and held-out training images as anchors."""
    seeds, shape = Seeds(s.seed, **SEEDS), (-1, 1, s.image_size, s.image_size)
    test, _ = data(s, "test")
    train, train_y = data(s, "train")
    y = torch.arange(10).repeat(s.n_eval // 10 + 1)[: s.n_eval]
    z = torch.randn(s.n_eval, s.image_size**2, generator=seeds.generator("noise"))
    samples = {}
    for length, m in models.items():
        m.eval()
        samples[label(length)] = af.generate(m, z, y, s.sample_steps, context=length > 1).x
    top = max(models)
    samples[f"length {top}, no context"] = af.generate(models[top], z, y, s.sample_steps, False).x
    samples["untrained"] = af.generate(make_model(s), z, y, s.sample_steps).x
    pick = torch.randperm(len(train), generator=seeds.generator("noise"))[: s.n_eval]
    samples["data"], labels_of = train[pick], {"data": train_y[pick]}
    feats_test = metrics.digits_features(test.reshape(shape))
    fd, fd_se, acc, acc_se, examples = {}, {}, {}, {}, {}
    for name, x in samples.items():
        imgs = x.clamp(-1, 1).reshape(shape)
        feats = metrics.digits_features(imgs)
        fd[name] = frechet_distance(feats, feats_test)
        fd_se[name] = metrics.bootstrap_se(lambda i, f=feats: frechet_distance(f[i], feats_test),
                                           len(feats), s.n_boot, seeds["boot"])  # fmt: skip
        want = labels_of.get(name, y)
        acc[name] = metrics.class_accuracy(imgs, want)
        acc_se[name] = math.sqrt(max(acc[name] * (1 - acc[name]), 1e-12) / len(imgs))
        first = [int((want == c).nonzero()[0]) for c in range(10)]
        examples[name] = imgs[first].clone()
    fits = fits or {}
    losses = {label(k): f.losses for k, f in fits.items()}
    secs = {label(k): f.seconds for k, f in fits.items()}
    return LengthsResult(fd, fd_se, acc, acc_se, examples, losses, secs)


def experiment_lengths(s: Settings) -> LengthsResult:
    """Train (or load) one model per length, then evaluate them (cached)."""
    with one_thread_on_cpu(blas=True):
        fits = train_lengths(s)
        key = cache_key(s, FIELDS_TRAIN + EVAL_LENGTHS)
        models = {k: f.model for k, f in fits.items()}
        return evaluated(LengthsResult, "eval-lengths", key,
                         lambda: evaluate_lengths(s, models, fits), )  # fmt: skip


def trained_models(s: Settings) -> dict[int, torch.nn.Module]:
    """The trained model of every length (from the cache; trains when missing)."""
    with one_thread_on_cpu(blas=True):
        return {k: f.model.eval() for k, f in train_lengths(s).items()}


# ---- sampling cost per step ---------------------------------------------------------------
@dataclass
class CostResult:
    """Median seconds of one sampling step after n previous chunks, per attention mode, and
    the fitted slope (seconds per chunk) and relative growth slope * max(n) / time at n = 1."""

    counts: list[int]
    seconds: dict[str, list[float]]
    slope: dict[str, float]
    growth: dict[str, float]
    batch: int


def cost_check(s: Settings) -> CostResult:
    """:func:`ar_flow.per_step_seconds` for the recurrent hybrid state and full attention
    over every previous chunk (a key/value cache), same sizes, random weights."""
    seconds, slope, growth = {}, {}, {}
    for mode, name in (("hybrid", "recurrent state (hybrid)"), ("full", "full attention")):
        m = make_model(s, mode)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.05)
        sec = af.per_step_seconds(m, s.cost_counts, s.cost_batch, s.cost_repeats,
                                  Seeds(s.seed, **SEEDS)["cost"])  # fmt: skip
        seconds[name] = [sec[n] for n in s.cost_counts]
        slope[name], _ = af.fit_slope(s.cost_counts, seconds[name])
        growth[name] = slope[name] * max(s.cost_counts) / seconds[name][0]
    return CostResult(list(s.cost_counts), seconds, slope, growth, s.cost_batch)


def experiment_cost(s: Settings) -> CostResult:
    """:func:`cost_check`, cached (timings of the machine that built the cache)."""
    with one_thread_on_cpu(blas=True):
        return evaluated(CostResult, "cost", cache_key(s, EVAL_COST), lambda: cost_check(s))


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the identities, the sequence lengths and the sampling cost."""

    identities: IdentityCheck
    lengths: LengthsResult
    cost: CostResult


EXPERIMENTS = {
    "identities": identities,
    "sequence lengths": experiment_lengths,
    "sampling cost": experiment_cost,
}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_identities(r: IdentityCheck, sc: str) -> list[Claim]:
    """Identities (not reproductions): they hold by construction when the code is right."""
    note = f"identity; {r.draws} random float64 weight draws, hybrid and full attention"
    return [
        claim_below("identity: chunk-parallel = recurrent (max abs difference)",
                    "the two forms compute the same attention", r.parallel_recurrent, 1e-9, sc,
                    note),
        claim_below("identity: causality (max change before a perturbed chunk)",
                    "earlier (noisier) chunks never see later ones", r.causal_before, 1e-12, sc,
                    f"{note}; min change after it {r.causal_after:.3g}"),
        claim_below("identity: one chunk = plain flow transformer (max abs difference)",
                    "sequence length 1 reduces to SiT-like flow matching", r.single_chunk,
                    1e-12, sc, note),
        claim_below("identity: recurrent generation = parallel re-computation",
                    "constant-state sampling loses nothing", r.generation, 1e-9, sc, note),
    ]  # fmt: skip


def claims_lengths(r: LengthsResult, s: Settings) -> list[Claim]:
    """FD and accuracy by sequence length (paper: longer is better); context is used."""
    sc, names = s.scale, [label(k) for k in sorted(s.lengths, reverse=True)]
    note = (f"{s.n_eval} samples, {s.sample_steps} Euler steps, FD to the {359} held-out digits "
            f"(bootstrap SE); data {r.fd['data']:.2f}, untrained {r.fd['untrained']:.1f}; "
            f"equal compute: {s.steps} steps x {s.images_per_step} images each. Paper: "
            f"{PAPER_FID}")  # fmt: skip
    vals = {k: r.fd[k] for k in names}
    out = [claim_ordered("FD: longer training sequences give lower FD", PAPER_FID, vals, sc,
                         note, ses={k: r.fd_se[k] for k in names})]  # fmt: skip
    vals = {k: r.accuracy[k] for k in names}
    note = "share of samples the digits classifier labels as the asked class (binomial SE)"
    out.append(claim_ordered("class accuracy: longer sequences give more on-class samples",
                             "category-level context carried along the trajectory", vals, sc,
                             note, ses={k: r.accuracy_se[k] for k in names},
                             lower_is_better=False))  # fmt: skip
    top = label(max(s.lengths))
    plain, ctx = r.fd[f"length {max(s.lengths)}, no context"], r.fd[top]
    se = math.hypot(r.fd_se[f"length {max(s.lengths)}, no context"], r.fd_se[top])
    note = f"FD with context {ctx:.2f}, the same model with its state reset each step {plain:.2f}"
    out.append(claim_above(f"{top}: FD without context - with context",
                           "the model conditions on earlier denoising steps", plain - ctx, 0.0,
                           sc, note, se=se))  # fmt: skip
    return out


def claims_cost(r: CostResult, sc: str) -> list[Claim]:
    """Constant per-step cost with the recurrent state, growing with full attention."""
    note = "; ".join(f"{k}: " + ", ".join(f"{1e3 * v:.2f}" for v in vals) + " ms"
                     for k, vals in r.seconds.items())  # fmt: skip
    note = f"n = {r.counts}, batch {r.batch}, medians; {note}"
    hy, fu = "recurrent state (hybrid)", "full attention"
    paper = "hybrid linear attention makes the sampling cost per step constant"
    return [
        claim_below("recurrent state: time growth over the chunk range (slope x n_max / t_1)",
                    paper, r.growth[hy], 0.25, sc, note),
        claim_above("full attention: time growth over the chunk range (slope x n_max / t_1)",
                    "attention over all previous chunks grows with their number", r.growth[fu],
                    1.0, sc, note),
    ]  # fmt: skip


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    return (claims_identities(r.identities, r.scale) + claims_lengths(r.lengths, s)
            + claims_cost(r.cost, r.scale))  # fmt: skip


# ---- figures ------------------------------------------------------------------------------
COLORS = [style.GRAY, style.BLUE, style.GREEN, style.ORANGE, style.RED, "#9467bd"]


def quality_figure(r: LengthsResult) -> go.Figure:
    """FD (left) and class accuracy (right) of every model, with 2-SE error bars."""
    fig = make_subplots(1, 2, subplot_titles=("FD to held-out digits (lower is better)",
                                              "class accuracy of samples"))  # fmt: skip
    names = [k for k in r.fd if k != "untrained"]
    for col, (vals, ses) in enumerate(((r.fd, r.fd_se), (r.accuracy, r.accuracy_se)), 1):
        fig.add_trace(go.Bar(x=names, y=[vals[k] for k in names], showlegend=False,
                             marker_color=[COLORS[i % len(COLORS)] for i in range(len(names))],
                             error_y=dict(array=[2 * ses[k] for k in names])), 1, col)  # fmt: skip
    fig.update_layout(**style.figure_layout(None, 380, keep_view=False, width=980))
    return fig


def loss_figure(r: LengthsResult) -> go.Figure:
    """Training loss (running mean over 20 steps) of each sequence length."""
    traces = []
    for i, (name, losses) in enumerate(r.losses.items()):
        x = torch.tensor(losses)
        k = min(20, len(x))
        smooth = x.unfold(0, k, 1).mean(1).tolist()
        traces.append(viz.curve_trace(list(range(k, len(x) + 1)), smooth, name,
                                      line=dict(color=COLORS[(i + 1) % len(COLORS)])))  # fmt: skip
    fig = go.Figure(traces)
    fig.update_layout(**style.curves_layout("Training loss (equal images per step)", "step",
                                            "loss per pixel"))  # fmt: skip
    return fig


def samples_figure(r: LengthsResult) -> go.Figure:
    """One sample per digit 0-9 of every model (rows), same noise."""
    rows = [k for k in r.examples]
    titles = [k if i == 0 else "" for k in rows for i in range(10)]
    return viz.image_grid_figure(
        torch.cat([r.examples[k] for k in rows]),
        nrow=10,
        titles=titles,
        tile_px=44,
        title="Samples, digits 0-9 (same noise per column)",
    )


def cost_figure(r: CostResult) -> go.Figure:
    """Seconds per sampling step against the number of previous chunks."""
    traces = [viz.curve_trace(r.counts, [1e3 * v for v in vals], name, mode="lines+markers",
                              line=dict(color=(style.BLUE, style.RED)[i]))
              for i, (name, vals) in enumerate(r.seconds.items())]  # fmt: skip
    fig = go.Figure(traces)
    fig.update_layout(**style.curves_layout(f"Sampling cost per step (batch {r.batch}, median)",
                                            "previous chunks", "ms per step"))  # fmt: skip
    return fig


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    return {"quality": quality_figure(r.lengths), "losses": loss_figure(r.lengths),
            "samples": samples_figure(r.lengths), "cost": cost_figure(r.cost)}  # fmt: skip


def preview() -> go.Figure:
    """The decay matrix prod gamma of a random hybrid layer over 8 chunks: how fast the
    context fades, computed afresh (no training)."""
    from pflow_explore.nets.hybrid_attention import chunk_decays

    g = torch.Generator().manual_seed(0)
    log_gamma = -0.3 * torch.rand(8, 4, generator=g)
    z = chunk_decays(log_gamma).mean(-1) + torch.eye(8)
    fig = go.Figure(go.Heatmap(z=z.tolist(), colorscale="Blues", showscale=False))
    fig.update_yaxes(autorange="reversed")
    return style.thumbnail(fig)
