"""experiment.py: presets, stopwatch, named seeds, cache keys.

The cache-key tests are against the artifacts shipped in data/shipped: the key in their
file names was computed by each chapter's own key function before this module existed, so
a key builder that hashes anything else (a missing field, a renamed label) fails here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

from pflow_explore import cache, scale
from pflow_explore import experiment as E

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "shipped"


@dataclasses.dataclass(frozen=True)
class Toy:
    scale: str = "cpu"
    steps: int = 100
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")


# ---- presets -----------------------------------------------------------------------------------
def test_presets_apply_changes_and_name_the_scale():
    p = E.presets(Toy, tiny=dict(steps=5), cpu={}, gpu=dict(steps=5000, lr=3e-4))
    assert p == {
        "tiny": Toy("tiny", 5, 1e-3, 0),
        "cpu": Toy("cpu", 100, 1e-3, 0),
        "gpu": Toy("gpu", 5000, 3e-4, 0),
    }


def test_presets_refuse_unknown_fields_and_missing_scales():
    with pytest.raises(TypeError, match="'stepz'.*valid fields: scale, steps, lr, seed"):
        E.presets(Toy, tiny=dict(stepz=5), cpu={}, gpu={})
    with pytest.raises(scale.ScaleError, match="missing: gpu"):
        E.presets(Toy, tiny={}, cpu={})
    with pytest.raises(scale.ScaleError, match="unknown: laptop"):
        E.presets(Toy, tiny={}, cpu={}, gpu={}, laptop={})
    with pytest.raises(ValueError, match="steps must be"):  # __post_init__ still validates
        E.presets(Toy, tiny=dict(steps=0), cpu={}, gpu={})


def test_choose_resolves_scale_and_validates_changes(monkeypatch):
    p = E.presets(Toy, tiny=dict(steps=5), cpu={}, gpu={})
    assert E.choose(p, "tiny", lr=0.5) == Toy("tiny", 5, 0.5, 0)
    monkeypatch.setenv(scale.ENV_SCALE, "tiny")
    assert E.choose(p).steps == 5
    monkeypatch.delenv(scale.ENV_SCALE)
    assert E.choose(p).scale == "cpu"
    with pytest.raises(scale.ScaleError, match="laptop"):
        E.choose(p, "laptop")
    with pytest.raises(TypeError, match="'rate'"):
        E.choose(p, "tiny", rate=1.0)
    with pytest.raises(ValueError, match="steps must be"):
        E.choose(p, "tiny", steps=-1)


# ---- stopwatch ---------------------------------------------------------------------------------
def test_stopwatch_books_time_since_last_tick(monkeypatch):
    now = iter([10.0, 11.5, 14.0, 20.0, 20.25, 21.0])
    monkeypatch.setattr(E.time, "perf_counter", lambda: next(now))
    watch = E.Stopwatch()  # 10.0
    assert watch.tick("data") == 1.5  # 11.5
    assert watch.tick("train") == 2.5  # 14.0
    with watch.phase("eval"):  # 20.0 .. 20.25: the gap before the block is not booked
        pass
    watch.tick("train")  # 21.0: again "train", adds 0.75
    assert watch.seconds == {"data": 1.5, "train": 3.25, "eval": 0.25}
    assert list(watch.seconds) == ["data", "train", "eval"]
    assert watch.total == 5.0


def test_run_named_calls_in_order_and_times_each(monkeypatch):
    now = iter([0.0, 1.0, 3.5])
    monkeypatch.setattr(E.time, "perf_counter", lambda: next(now))
    calls = []
    experiments = {"b": lambda s: calls.append(("b", s)) or 2 * s, "a": lambda s: s + 1}
    values, seconds = E.run_named(10, experiments)
    assert values == [20, 11] and calls == [("b", 10)]
    assert seconds == {"b": 1.0, "a": 2.5} and list(seconds) == ["b", "a"]


# ---- seeds -------------------------------------------------------------------------------------
def test_seeds_reproduce_offsets_and_draws():
    seeds = E.Seeds(7, noise=1, share=2, augment=(1000, 1000), pairs=(10, 1))
    assert seeds["noise"] == 8 and seeds.seed("share") == 9
    # painters' augmentation: seed + 1000 * (i + 1); rectified_flow's pairs: seed + 10 + k
    assert [seeds.seed("augment", i) for i in (0, 1)] == [1007, 2007]
    assert [seeds.seed("pairs", k) for k in (1, 2)] == [18, 19]
    a = torch.randn(5, generator=seeds.generator("pairs", 2))
    b = torch.randn(5, generator=torch.Generator().manual_seed(7 + 10 + 2))
    assert torch.equal(a, b)
    # a stream reused gives the same numbers again (painters draws "share" twice on purpose)
    assert torch.equal(
        torch.rand(3, generator=seeds.generator("share")),
        torch.rand(3, generator=seeds.generator("share")),
    )


def test_seeds_refuse_typos_collisions_and_bad_specs():
    seeds = E.Seeds(0, data=1)
    with pytest.raises(KeyError, match="'dta'.*declared: data"):
        seeds.generator("dta")
    with pytest.raises(ValueError, match="not indexed"):
        seeds.seed("data", 3)
    with pytest.raises(ValueError, match="'a' and 'b' share offset 1"):
        E.Seeds(0, a=1, b=1)
    assert E.Seeds(0, a=1, b=1, allow_shared=True)["b"] == 1
    with pytest.raises(ValueError, match="non-negative"):
        E.Seeds(-1)
    with pytest.raises(ValueError, match="offset"):
        E.Seeds(0, a=-2)


# ---- cache keys --------------------------------------------------------------------------------
def test_cache_key_selects_fields_prefix_and_extras():
    @dataclasses.dataclass
    class S:
        trap_a: int = 1
        trap_b: float = 0.5
        ring_a: int = 3
        seed: int = 0

    assert E.cache_key(S(), ("seed",), prefix="trap_") == {"trap_a": 1, "trap_b": 0.5, "seed": 0}
    assert E.cache_key(S(), ("ring_a",), stage="x") == {"ring_a": 3, "stage": "x"}
    with pytest.raises(TypeError, match="'ring_b'"):
        E.cache_key(S(), ("ring_b",))
    with pytest.raises(ValueError, match="'seed'"):
        E.cache_key(S(), ("seed",), seed=1)
    with pytest.raises(ValueError, match="'trap_a'"):
        E.cache_key(S(), ("trap_a",), prefix="trap_")
    assert E.cache_key(S(), prefix="trap_", exclude=("trap_b",)) == {"trap_a": 1}
    with pytest.raises(TypeError, match="'trap_c'"):
        E.cache_key(S(), prefix="trap_", exclude=("trap_c",))
    # the digest sees content, not order
    a = E.artifact_digest("c", "n", {"x": 1, "y": 2.0}, 1)
    assert a == E.artifact_digest("c", "n", {"y": 2.0, "x": 1}, 1)
    assert a != E.artifact_digest("c", "n", {"x": 1, "y": 2.0}, 2)
    assert a != E.artifact_digest("c", "n", {"x": 1, "y": 2.0}, 1, fit={"steps": 1})


def _shipped(chapter: str, name: str, key: dict, fit: dict | None = None) -> bool:
    """Whether data/shipped holds the artifact that (key, fit) digests to (the chapter's
    code VERSION: a chapter that retrains on purpose bumps it and re-ships)."""
    version = importlib.import_module(f"pflow_explore.chapters.{chapter}").VERSION
    digest = E.artifact_digest(chapter, name, key, version, fit)
    return (SHIPPED / chapter / f"{name}-{digest}.pt").exists()


def test_stored_numbers_are_computed_once_per_inputs_key_and_version(data_dir):
    calls = []

    def compute():
        calls.append(1)
        return {"w2": torch.tensor([0.5, 0.25]), "n": [3]}

    x = torch.arange(4.0)
    args = ("ch", "table", {"x": x}, {"nfe": [3, 5]})
    first = E.stored_numbers(*args, compute)
    assert first == {"w2": [0.5, 0.25], "n": [3.0]} and len(calls) == 1
    assert E.stored_numbers(*args, compute) == first and len(calls) == 1  # read back
    E.stored_numbers("ch", "table", {"x": x + 1e-6}, {"nfe": [3, 5]}, compute)  # other inputs
    E.stored_numbers("ch", "table", {"x": x}, {"nfe": [3]}, compute)  # another key
    E.stored_numbers(*args, compute, version=2)  # the computation changed
    assert len(calls) == 4


def test_stored_calls_keep_each_answer_by_its_input_and_numbers(data_dir):
    calls = []

    def slow(x, t):
        calls.append(t)
        return x * t

    x = torch.arange(3.0)
    f = E.stored_calls("ch", "f", slow, {"what": "x t"})
    assert torch.equal(f(x, 2.0), x * 2) and torch.equal(f(x.clone(), 2.0), x * 2)
    assert calls == [2.0]  # the same input and number: read back
    f(x, 3.0), f(x + 1, 2.0), E.stored_calls("ch", "f", slow, {"what": "other"})(x, 2.0)
    assert calls == [2.0, 3.0, 2.0, 2.0]  # another number, input or key: computed


def test_weights_digest_follows_values_names_and_shapes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    digest = E.weights_digest(net)
    assert len(digest) == 16 and E.weights_digest(copy.deepcopy(net)) == digest
    with torch.no_grad():
        net[1].bias[0] += 1e-7  # one value, one ulp-scale change
    assert E.weights_digest(net) != digest
    # the same values under other names or shapes are other weights
    flat = torch.nn.Linear(4, 3)
    with torch.no_grad():
        flat.weight.copy_(net[0].weight.T)
        flat.bias.zero_()
    other = torch.nn.Linear(3, 4)
    with torch.no_grad():
        other.weight.copy_(net[0].weight)
        other.bias.copy_(net[0].bias)
    assert E.weights_digest(other) == E.weights_digest(torch.nn.Sequential(other)[0])
    assert E.weights_digest(torch.nn.Sequential(other)) != E.weights_digest(other)
    assert E.weights_digest(flat) != E.weights_digest(other)


def test_cache_keys_find_the_shipped_painters_denoiser():
    from pflow_explore.chapters import painters

    s = painters.settings("cpu")
    fields = (
        "image_size augment aug_copies net hidden depth unet_base unet_mults "
        "embedding_scale batch p_mean p_std seed"
    ).split()
    fit = dict(
        steps=s.steps,
        lr=s.lr,
        ema_decay=s.ema_decay,
        warmup=min(200, s.steps // 10),
        cosine=True,
        desc="painters: EDM denoiser (cpu)",
    )
    key = E.cache_key(s, fields)
    assert _shipped("painters", "denoiser", key, fit)
    wrong = E.cache_key(s, fields[:-1])  # without the seed: another key
    assert not _shipped("painters", "denoiser", wrong, fit)


FIELDS_2D = "hidden_2d depth_2d batch_2d lr_2d rf_steps_2d reflow_steps_2d distill_steps_2d "
FIELDS_2D += "n_pairs_2d pair_steps_2d t_eps seed"
FIELDS_DIGITS = "image_size augment aug_copies net hidden depth unet_base unet_mults batch lr "
FIELDS_DIGITS += "ema_decay teacher_steps reflow_steps distill_steps p_uncond guidance_reflow "
FIELDS_DIGITS += "guidance_distill n_pairs pair_steps distill_loss huber_c t_eps seed"


@pytest.mark.parametrize("scale_name", ["tiny", "cpu"])
def test_cache_keys_find_the_shipped_rectified_flow_models(scale_name):
    from pflow_explore.chapters import rectified_flow as R

    s = R.settings(scale_name)

    def fit(steps: int, desc: str, ema: float | None) -> dict:
        return dict(
            steps=steps, lr=s.lr_2d if ema is None else s.lr, ema_decay=ema,
            warmup=min(100, steps // 10), cosine=True, desc=desc,
        )  # fmt: skip

    for ds in s.datasets:
        for stage, steps, desc in (
            ("1rf", s.rf_steps_2d, f"{ds}: 1-RF"),
            ("2rf", s.reflow_steps_2d, f"{ds}: reflow to 2-RF"),
            ("distill2", s.distill_steps_2d, f"{ds}: distil 2-RF"),
        ):
            key = E.cache_key(s, FIELDS_2D.split(), dataset=ds, stage=stage)
            name = f"2d-{ds}-{stage}"
            assert _shipped("rectified_flow", name, key, fit(steps, desc, None)), name
    key = E.cache_key(s, FIELDS_DIGITS.split(), stage="teacher")
    f = fit(s.teacher_steps, "digits: 1-RF teacher", s.ema_decay)
    assert _shipped("rectified_flow", "digits-teacher", key, f)


@pytest.mark.parametrize("scale_name", ["tiny", "cpu"])
def test_cache_keys_find_the_shipped_interpolants_pairs_and_sweeps(scale_name):
    from pflow_explore.chapters import interpolants as I

    s = I.settings(scale_name)
    titles = {"mixtures": "eight Gaussians -> mixture", "checkerboard": "N(0, I) -> checkerboard"}
    for pair in s.pairs:
        train = E.cache_key(
            s, "interpolant gamma gamma_a t_delta seed hidden depth batch".split(), pair=pair
        )
        fit = dict(
            steps=s.steps, lr=s.lr, ema_decay=s.ema_decay, warmup=min(200, s.steps // 10),
            cosine=True, progress=False,
            desc=f"interpolants: b and eta, {titles[pair]} ({scale_name})",
        )  # fmt: skip
        name = f"pair-{pair}"
        assert _shipped("interpolants", name, train, fit)
        sweep = E.cache_key(
            s,
            "ema_decay eps_values n_ode_steps n_sde_steps n_show".split(),
            training=train,
            steps=s.steps,
            lr=s.lr,
            n_eval=s.n_eval,
        )
        name = f"sweep-{pair}"
        assert _shipped("interpolants", name, sweep)


@pytest.mark.parametrize("scale_name", ["tiny", "cpu"])
def test_cache_keys_find_the_shipped_active_matter_data_and_scores(scale_name):
    from pflow_explore.chapters import active_matter as A

    s = A.settings(scale_name)
    data = E.cache_key(s, "trap_v0s trap_A trap_gamma trap_eps trap_test sim_dt seed".split())
    assert _shipped("active_matter", "trap_data", data)
    for what, label, warm, skip in (
        ("trap", "trap score", 100, ()),
        ("ring", "ring local score", 50, ("ring_n_eval", "ring_test")),
    ):
        steps = getattr(s, f"{what}_steps")
        fit = dict(
            steps=steps, lr=getattr(s, f"{what}_lr"), warmup=min(warm, steps // 10), cosine=True,
            ema_decay=s.ema_decay, desc=f"active_matter: {label} ({scale_name})",
        )  # fmt: skip
        key = E.cache_key(s, ("dyn_dt", "sim_dt", "seed"), prefix=f"{what}_", exclude=skip)
        name = f"{what}_score"
        assert _shipped("active_matter", name, key, fit)


def test_one_thread_on_cpu_pins_and_restores():
    before = torch.get_num_threads()
    with E.one_thread_on_cpu(device=torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with E.one_thread_on_cpu(active=False):
        assert torch.get_num_threads() == before
    assert E.torch_threads is scale.torch_threads


def test_require_at_least_names_the_field():
    import dataclasses

    import pytest

    from pflow_explore.experiment import require, require_at_least

    @dataclasses.dataclass
    class S:
        steps: int = 3
        batch: int = 0
        lr: float = 0.5

    require_at_least(S(), "steps lr", low=0.5)
    with pytest.raises(ValueError, match="batch must be a number >= 1, got 0"):
        require_at_least(S(), ["steps", "batch"])
    with pytest.raises(ValueError, match="steps must be a number >= 1, got 'x'"):
        require_at_least(S(steps="x"), "steps")
    with pytest.raises(ValueError, match="nope"):
        require(False, "nope")


def test_on_settings_threads_pins_the_count_inside_and_restores_it():
    @dataclasses.dataclass(frozen=True)
    class Sized:
        threads: int | None

    seen = []

    @E.on_settings_threads
    def experiment(s: Sized, extra: int) -> int:
        seen.append(torch.get_num_threads())
        return extra + 1

    before = torch.get_num_threads()
    assert experiment(Sized(1), 4) == 5 and seen == [1]
    assert torch.get_num_threads() == before
    experiment(Sized(None), 0)  # None: leaves the count as it is
    assert seen[-1] == before
    assert experiment.__name__ == "experiment"


def test_lazy_tensors_compute_once_at_the_first_call():
    calls = []

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(n)
        return torch.zeros(n), torch.ones(n, dtype=torch.float64)

    data = E.lazy_tensors("cpu", make, 3)
    assert calls == []  # nothing simulated until asked
    a, b = data()
    assert calls == [3] and a.shape == (3,) and b.dtype == torch.float64
    assert data()[0] is a and calls == [3]


def test_device_of_a_module_is_its_parameters_device():
    net = torch.nn.Linear(2, 2)
    assert scale.device_of(net) == torch.device("cpu")


def test_cached_result_stores_the_fields_and_passes_the_extra_ones(data_dir):
    @dataclasses.dataclass
    class Measured:
        model: object
        values: dict
        samples: torch.Tensor

    calls = []

    def evaluate():
        calls.append(1)
        return Measured("net", {"a": 1.5}, torch.arange(3.0))

    key = {"n": 3}
    first = E.cached_result("demo", 1, Measured, "eval", key, evaluate, model="net")
    again = E.cached_result("demo", 1, Measured, "eval", key, evaluate, model="other")
    assert (
        len(calls) == 1 and again.values == {"a": 1.5} and torch.equal(again.samples, first.samples)
    )
    assert again.model == "other"  # extra fields are never stored
    E.cached_result("demo", 1, Measured, "eval", {"n": 4}, evaluate, model="net")
    assert len(calls) == 2  # another key computes again


def test_cached_result_rebuilds_the_dataclasses_inside_and_recomputes_what_no_longer_fits(
    data_dir,
):
    from pflow_explore import mips

    @dataclasses.dataclass
    class Measured:
        sweeps: list
        pair: tuple

    calls = []

    def sweep(k: float) -> mips.PhiSweep:
        return mips.PhiSweep(*(torch.arange(3.0) + k for _ in range(4)), trained_phi=0.5 + k)

    def evaluate():
        calls.append(1)
        return Measured([sweep(0), sweep(1)], (sweep(2), 7))

    first = E.cached_result("demo", 1, Measured, "nested", {"n": 1}, evaluate)
    again = E.cached_result("demo", 1, Measured, "nested", {"n": 1}, evaluate)
    assert len(calls) == 1 and isinstance(again.pair, tuple) and again.pair[1] == 7
    for a, b in zip([*again.sweeps, again.pair[0]], [*first.sweeps, first.pair[0]], strict=True):
        assert type(a) is mips.PhiSweep and a.trained_phi == b.trained_phi
        assert torch.equal(a.epr, b.epr) and torch.equal(a.dense_share, b.dense_share)
    # a file from before the class changed its fields: computed again, not a TypeError
    stale = {"sweeps": [{E.DATACLASS: "pflow_explore.mips:PhiSweep", "phis": 1}], "pair": ()}
    cache.cached("demo", "stale", {"n": 1}, lambda: stale, version=1)
    fresh = E.cached_result("demo", 1, Measured, "stale", {"n": 1}, evaluate)
    assert len(calls) == 2 and fresh.pair[1] == 7
    # only pflow_explore's dataclasses are stored, and rebuilt from a stored file
    with pytest.raises(TypeError, match="pflow_explore only"):
        E.cached_result("demo", 1, Measured, "local", {}, lambda: Measured([Measured([], ())], ()))
    with pytest.raises(ValueError, match="not a pflow_explore dataclass"):
        E._rebuilt({E.DATACLASS: "os:system", "command": "true"})


# ---- a chapter's prepare and run ----------------------------------------------------------------
@dataclasses.dataclass
class ToyResults(E.ChapterResults):
    """Two experiments' values."""

    double: int
    nothing: None


TOY_EXPERIMENTS = {"double": lambda s: 2 * s.steps, "nothing": lambda s: None}


def test_chapter_steps_prepare_and_run_go_through_the_same_experiments(monkeypatch):
    now = iter([0.0, 1.0, 1.5, 10.0, 12.0, 12.25])
    monkeypatch.setattr(E.time, "perf_counter", lambda: next(now))
    calls = []
    experiments = {"double": lambda s: calls.append(s) or 2 * s.steps, "nothing": lambda s: None}
    prepare, run = E.chapter_steps(experiments, ToyResults)
    s = Toy("tiny", steps=5)
    assert prepare(s) is None and calls == [s]  # every experiment ran, nothing returned
    r = run(s)
    assert r == ToyResults(s, "tiny", 10, None, seconds={"double": 2.0, "nothing": 0.25})
    assert list(r.seconds) == ["double", "nothing"] and calls == [s, s]
    # the two steps read as the chapter's own, with docstrings naming the experiments
    assert (prepare.__name__, run.__qualname__, run.__module__) == ("prepare", "run", __name__)
    assert "(double, nothing)" in prepare.__doc__ and "double, nothing in turn" in run.__doc__
    assert ":class:`ToyResults`" in run.__doc__


def test_chapter_results_built_by_hand_have_no_seconds():
    r = ToyResults(Toy(), "cpu", 4, None)  # as a notebook gathers what it computed
    assert r.seconds == {} and r.settings == Toy() and r.double == 4
    names = [f.name for f in dataclasses.fields(ToyResults)]
    assert names == ["settings", "scale", "seconds", "double", "nothing"]


def test_chapter_steps_refuse_a_mismatch_early():
    with pytest.raises(ValueError, match="at least one"):
        E.chapter_steps({}, ToyResults)
    with pytest.raises(TypeError, match="ChapterResults dataclass, got <class '.*Toy'>"):
        E.chapter_steps(TOY_EXPERIMENTS, Toy)
    three = dict(TOY_EXPERIMENTS, extra=lambda s: 0)
    with pytest.raises(TypeError, match=r"2 result field\(s\) \(double, nothing\) for 3 exp"):
        E.chapter_steps(three, ToyResults)


def test_require_counts_checks_the_plain_int_fields_but_the_seed():
    @dataclasses.dataclass
    class S:
        steps: int = 3
        batch: int = 2
        seed: int = 0  # a seed may be 0
        limit: int | None = None  # not a plain int: not a count
        grid: tuple[int, ...] = ()
        lr: float = 0.0

    E.require_counts(S())
    with pytest.raises(ValueError, match="batch must be a number >= 1, got 0"):
        E.require_counts(S(batch=0))
    with pytest.raises(ValueError, match="seed must be a number >= 1, got 0"):
        E.require_counts(S(), but=())
    E.require_counts(S(batch=0), but=("seed", "batch"))
