"""The plumbing every chapter repeats, one way each: presets, a stopwatch, named seed streams,
a chapter's ``prepare`` and ``run``, cache keys, thread pinning and lazily computed data.

    SETTINGS = presets(Settings, tiny=dict(steps=150), cpu={}, gpu=dict(steps=8000))
    s = choose(SETTINGS, "tiny", lr=1e-3)               # the preset, with changes applied
    seeds = Seeds(s.seed, data=1, noise=2, eval=(100, 1))
    gen = seeds.generator("noise")                      # torch.Generator seeded s.seed + 2
    key = cache_key(s, ("hidden", "depth", "seed"), stage="teacher")
    watch = Stopwatch(); ...; watch.tick("train")       # watch.seconds == {"train": 1.7}
    values, seconds = run_named(s, {"theory": theory, "2D": experiment_2d})
    prepare, run = chapter_steps(EXPERIMENTS, Results)  # Results(ChapterResults)

Nothing here changes a number: ``Seeds`` reproduces ``seed + offset`` exactly and
``cache_key`` builds the same dict a chapter hashed before, so shipped artifacts still load.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

from pflow_explore import cache, scale, training
from pflow_explore.scale import single_threaded, torch_threads

__all__ = [
    "ChapterResults",
    "Seeds",
    "Stopwatch",
    "artifact_digest",
    "cache_key",
    "chapter_steps",
    "choose",
    "lazy_tensors",
    "on_settings_threads",
    "one_thread_on_cpu",
    "presets",
    "require",
    "require_at_least",
    "require_counts",
    "run_named",
    "single_threaded",
    "torch_threads",
]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R", bound="ChapterResults")


# ---- presets --------------------------------------------------------------------------------
def _check_fields(cls: type, changes: Mapping[str, object], what: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise TypeError(
            f"{what}: {cls.__name__} has no field(s) {', '.join(map(repr, unknown))}; "
            f"valid fields: {', '.join(names)}"
        )


def presets(base: type[S], **scales: Mapping[str, object]) -> dict[str, S]:
    """{"tiny": base(**tiny), "cpu": base(**cpu), "gpu": base(**gpu)}: the scale contract.

    Each keyword is one scale's changes to the dataclass defaults; when ``base`` has a field
    ``scale`` it is set to the preset's name. All of :data:`scale.SCALES` must be given,
    nothing else; an unknown field names the valid ones.
    """
    if not (dataclasses.is_dataclass(base) and isinstance(base, type)):
        raise TypeError(f"base must be a dataclass type, got {base!r}")
    missing = [s for s in scale.SCALES if s not in scales]
    extra = [s for s in scales if s not in scale.SCALES]
    if missing or extra:
        raise scale.ScaleError(
            f"presets need exactly the scales {', '.join(scale.SCALES)}; "
            f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(extra) or 'none'}"
        )
    has_scale = any(f.name == "scale" for f in dataclasses.fields(base))
    out = {}
    for name in scale.SCALES:
        changes = dict(scales[name])
        _check_fields(base, changes, f"preset {name!r}")
        if has_scale:
            changes.setdefault("scale", name)
        out[name] = base(**changes)
    return out


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``: a Settings' ``__post_init__`` check."""
    if not ok:
        raise ValueError(message)


def require_at_least(settings: object, names: str | Iterable[str], low: float = 1) -> None:
    """Every named field of ``settings`` is a number >= ``low`` (counts, sizes, steps), else
    ``ValueError`` naming the field and its value. ``names``: an iterable or one string of
    space-separated names. Use ``low=0`` with a strict check for rates (see :func:`require`).
    """
    for name in names.split() if isinstance(names, str) else names:
        value = getattr(settings, name)
        require(
            isinstance(value, int | float) and value >= low,
            f"{name} must be a number >= {low:g}, got {value!r}",
        )


def require_counts(settings: object, but: Iterable[str] = ("seed",)) -> None:
    """Every dataclass field of ``settings`` annotated plain ``int`` (sizes, steps, sample
    counts), but those in ``but``, is >= 1 (:func:`require_at_least`): the first line of a
    Settings' ``__post_init__``. ``int | None`` or tuple fields are not counts, so not checked.
    """
    skip = set(but)
    ints = [f.name for f in dataclasses.fields(settings) if f.type in ("int", int)]
    require_at_least(settings, [name for name in ints if name not in skip])


def require_choice(settings: object, name: str, choices: tuple[object, ...]) -> None:
    """The field ``name`` of ``settings`` is one of ``choices``, else ``ValueError``."""
    value = getattr(settings, name)
    require(value in choices, f"{name} must be one of {choices}, got {value!r}")


def choose(settings: Mapping[str, S], scale_name: str | None = None, **changes: object) -> S:
    """The preset of the resolved scale (argument > env ``PFLOW_SCALE`` > cpu) with
    ``changes`` applied through ``dataclasses.replace`` (so ``__post_init__`` validates them).

    An unknown scale raises :class:`scale.ScaleError`, an unknown field a TypeError naming
    the valid fields.
    """
    chosen = scale.preset(settings, scale_name)
    _check_fields(type(chosen), changes, "settings")
    return dataclasses.replace(chosen, **changes)


# ---- stopwatch ------------------------------------------------------------------------------
class Stopwatch:
    """Wall time of named phases, in the order they ran: ``seconds`` {name: s}.

    ``tick(name)`` books the time since the previous tick (or since creation) to ``name``;
    ``with watch.phase(name):`` books the block alone. A repeated name adds up.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def _book(self, name: str, elapsed: float) -> float:
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        return elapsed

    def tick(self, name: str) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return self._book(name, elapsed)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            now = time.perf_counter()
            self._book(name, now - start)
            self._last = now

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run_named(
    s: S, experiments: Mapping[str, Callable[[S], Any]]
) -> tuple[list[Any], dict[str, float]]:
    """A chapter's named experiments in order, each called with the settings ``s``: their
    values in that order and {name: wall seconds}. A chapter's ``prepare`` and ``run`` both
    go through it, so the two never list different experiments."""
    watch, values = Stopwatch(), []
    for name, experiment in experiments.items():
        values.append(experiment(s))
        watch.tick(name)
    return values, watch.seconds


# ---- a chapter's prepare and run ------------------------------------------------------------
_COMMON = ("settings", "scale", "seconds")


@dataclasses.dataclass
class ChapterResults:
    """What every chapter's ``Results`` holds besides one field per named experiment: the
    ``settings`` it ran with, ``scale`` (the preset's name, which the claims report) and,
    keyword-only so that it comes after a subclass's own fields, ``seconds``: {experiment
    name: wall seconds} of ``run`` ({} when built by hand, as a notebook does)::

        @dataclass
        class Results(experiment.ChapterResults):
            theory: TheoryCheck      # one field per entry of EXPERIMENTS, in its order
            digits: DigitsResult | None

        Results(s, s.scale, th, digits)  # .seconds == {}
    """

    settings: Any
    scale: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict, kw_only=True)


def chapter_steps(
    experiments: Mapping[str, Callable[[S], Any]], results: type[R]
) -> tuple[Callable[[S], None], Callable[[S], R]]:
    """A chapter's ``prepare(s)`` and ``run(s)``, both through :func:`run_named` over the
    same ``experiments`` (so the two never list different ones)::

        prepare, run = chapter_steps(EXPERIMENTS, Results)

    ``prepare(s)`` calls every experiment for its cached artifacts and returns None;
    ``run(s)`` returns ``results(s, s.scale, *values, seconds=...)``. ``results`` is a
    :class:`ChapterResults` dataclass with one field per experiment (checked here, so a new
    experiment without its field fails at import, not at the end of a long run). The two
    functions carry docstrings naming the experiments and belong to ``results``' module.
    """
    if not experiments:
        raise ValueError("chapter_steps needs at least one named experiment")
    if not (isinstance(results, type) and issubclass(results, ChapterResults)):
        raise TypeError(f"results must be a ChapterResults dataclass, got {results!r}")
    own = [f.name for f in dataclasses.fields(results) if f.name not in _COMMON]
    if len(own) != len(experiments):
        raise TypeError(
            f"{results.__name__} has {len(own)} result field(s) ({', '.join(own)}) for "
            f"{len(experiments)} experiment(s) ({', '.join(experiments)}): one each, in order"
        )
    names = ", ".join(experiments)

    def prepare(s: S) -> None:
        run_named(s, experiments)

    def run(s: S) -> R:
        values, seconds = run_named(s, experiments)
        return results(s, s.scale, *values, seconds=seconds)

    prepare.__doc__ = (
        f"Train (or find in the cache / shipped folder) every model of the chapter and cache "
        f"every evaluation, by running its experiments ({names}); returns None."
    )
    run.__doc__ = (
        f"The experiments {names} in turn: a :class:`{results.__name__}` of their values and "
        "the wall seconds of each (what ``prepare`` trained and measured is loaded)."
    )
    for step in (prepare, run):
        step.__module__, step.__qualname__ = results.__module__, step.__name__
    return prepare, run


# ---- named seed streams ---------------------------------------------------------------------
class Seeds:
    """Named seed streams over one base seed: ``Seeds(s.seed, data=1, pairs=(10, 1))``.

    A stream is declared as ``name=offset`` (seed = base + offset) or
    ``name=(offset, stride)`` for an indexed family (seed(name, i) = base + offset +
    stride * i, e.g. one stream per reflow round). This reproduces a chapter's historical
    ``seed + k`` exactly, so naming streams changes no number. Two names with the same plain
    offset would draw the same numbers, so that is refused unless ``allow_shared``: use one
    name for a stream that is meant to be reused. An undeclared name is a KeyError listing
    the declared ones (a typo never silently gets a fresh stream).

    A new chapter declares one ``SEEDS = dict(init=0, data=1, ...)`` per experiment at module
    level, seeds initial weights with ``torch.manual_seed(seeds["init"])`` right before
    building a net, and hands ``seeds.generator(name)`` to every draw (never the global
    RNG), so each experiment gives the same numbers whatever ran before it. Once artifacts
    are shipped an offset is frozen: a new stream takes a new, unused offset.
    """

    def __init__(
        self, base: int, *, allow_shared: bool = False, **streams: int | tuple[int, int]
    ) -> None:
        if not isinstance(base, int) or base < 0:
            raise ValueError(f"base seed must be a non-negative int, got {base!r}")
        self.base = base
        self.streams: dict[str, tuple[int, int]] = {}
        for name, spec in streams.items():
            offset, stride = (spec, 0) if isinstance(spec, int) else tuple(spec)
            if not (isinstance(offset, int) and isinstance(stride, int)) or offset < 0:
                raise ValueError(f"stream {name!r}: need an offset >= 0 or (offset, stride)")
            self.streams[name] = (offset, stride)
        plain = [(o, n) for n, (o, st) in self.streams.items() if st == 0]
        seen: dict[int, str] = {}
        for offset, name in plain:
            if offset in seen and not allow_shared:
                raise ValueError(
                    f"streams {seen[offset]!r} and {name!r} share offset {offset} (the same "
                    "numbers); use one name, or pass allow_shared=True"
                )
            seen.setdefault(offset, name)

    def seed(self, name: str, index: int = 0) -> int:
        """base + offset (+ stride * index) of stream ``name``."""
        if name not in self.streams:
            raise KeyError(f"no seed stream {name!r}; declared: {', '.join(self.streams)}")
        offset, stride = self.streams[name]
        if index and not stride:
            raise ValueError(f"stream {name!r} is not indexed; declare it as (offset, stride)")
        return self.base + offset + stride * index

    __getitem__ = seed

    def generator(
        self, name: str, index: int = 0, device: torch.device | str | None = None
    ) -> torch.Generator:
        """A fresh ``torch.Generator(device)`` seeded with :meth:`seed`."""
        gen = torch.Generator(device=device) if device is not None else torch.Generator()
        return gen.manual_seed(self.seed(name, index))

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={o if not s else (o, s)}" for n, (o, s) in self.streams.items())
        return f"Seeds({self.base}, {parts})"


# ---- cache keys -----------------------------------------------------------------------------
def weights_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's state dict (names, dtypes, shapes, values): put it in
    the key of results measured on trained weights, so retrained weights never reuse them."""
    return tensors_digest(module.state_dict())


def tensors_digest(named: Mapping[str, Tensor]) -> str:
    """sha256 (16 hex) of named tensors (names, dtypes, shapes, values, in order): the key of
    results computed from them (:func:`weights_digest` for a module's weights)."""
    h = hashlib.sha256()
    for name, value in named.items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(
    s: Any,
    fields: Iterable[str] = (),
    *,
    prefix: str | None = None,
    exclude: Iterable[str] = (),
    **extra: object,
) -> dict[str, object]:
    """What an artifact depends on: {f: s.f} for each name in ``fields`` and each field of
    ``s`` starting with ``prefix`` (but those in ``exclude``), plus ``extra`` (labels,
    renamed or derived values).

    Pass the result as ``settings`` to ``training.fit_cached`` or ``cache.cached``. Only the
    content counts (the digest sorts keys), so the order of fields does not matter. A name
    that is not a field, or given twice, raises.
    """
    names = [f.name for f in dataclasses.fields(s)]
    chosen, skip = list(fields), set(exclude)
    if prefix is not None:
        chosen = [n for n in names if n.startswith(prefix) and n not in skip] + chosen
    unknown = [n for n in [*chosen, *skip] if n not in names]
    if unknown:
        raise TypeError(f"{type(s).__name__} has no field(s) {', '.join(map(repr, unknown))}")
    twice = sorted({n for n in chosen if chosen.count(n) > 1} | (set(chosen) & set(extra)))
    if twice:
        raise ValueError(f"cache key names {', '.join(map(repr, twice))} more than once")
    return {**{n: getattr(s, n) for n in chosen}, **extra}


def artifact_digest(
    chapter: str,
    name: str,
    key: object,
    version: str | int = 0,
    fit: Mapping[str, object] | None = None,
) -> str:
    """The 16-hex-digit name suffix of the artifact: what ``cache.cached`` (``fit=None``)
    or ``training.fit_cached`` (``fit`` = its fit keyword arguments) stores ``key`` under."""
    settings = key if fit is None else training.fit_key(key, fit)
    return cache.artifact_key(chapter, name, settings, version)


def cached_result(
    chapter: str,
    version: str | int,
    cls: type[T],
    name: str,
    key: Mapping[str, object],
    evaluate: Callable[[], T],
    **extra: object,
) -> T:
    """``evaluate()``, a results dataclass of type ``cls``, stored as the artifact
    ``<chapter>/<name>`` (``cache.cached``; ``key``: everything the results depend on), so a
    chapter's ``run`` and dashboard load measured numbers and samples instead of computing
    them on every open. Its fields must be what ``torch.load(weights_only=True)`` reads back
    (tensors, numbers, strings, lists, tuples, dicts) or dataclasses of ``pflow_explore``
    made of those (stored as tagged dicts, rebuilt on load); the ``extra`` fields (trained
    models, sympy derivations) are not stored but given to ``cls`` on load and on build. A
    stored dataclass that no longer exists or fits is computed again."""

    def build() -> dict[str, object]:
        r = evaluate()
        fields = (f.name for f in dataclasses.fields(cls) if f.name not in extra)
        return {name: _storable(getattr(r, name)) for name in fields}

    obj, _ = cache.cached(chapter, name, dict(key), build, version=version)
    try:
        return cls(**_rebuilt(obj), **extra)
    except (AttributeError, ImportError, TypeError, ValueError) as err:
        say = f"cache: {chapter}/{name} no longer fits its results ({err}); computing again"
        print(say, file=sys.stderr)
        obj, _ = cache.cached(chapter, name, dict(key), build, version=version, rebuild=True)
        return cls(**_rebuilt(obj), **extra)


DATACLASS = "__dataclass__"  # the tag of a dataclass stored by cached_result


def _storable(value: Any) -> Any:
    """value with every dataclass in it as {DATACLASS: "module:QualName", field: value}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = type(value)
        if kind.__module__.split(".")[0] != "pflow_explore":
            raise TypeError(f"results can hold dataclasses of pflow_explore only, not {kind}")
        fields = {f.name: _storable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {DATACLASS: f"{kind.__module__}:{kind.__qualname__}", **fields}
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_storable(v) for v in value)
    return value


def _rebuilt(value: Any) -> Any:
    """The inverse of :func:`_storable`: only dataclasses of pflow_explore are rebuilt."""
    if isinstance(value, dict):
        items = {k: _rebuilt(v) for k, v in value.items() if k != DATACLASS}
        if DATACLASS not in value:
            return items
        module, _, qualname = str(value[DATACLASS]).partition(":")
        if module.split(".")[0] != "pflow_explore":
            raise ValueError(f"not a pflow_explore dataclass: {value[DATACLASS]}")
        kind: Any = importlib.import_module(module)
        for part in qualname.split("."):
            kind = getattr(kind, part)
        if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            raise TypeError(f"{value[DATACLASS]} is not a dataclass")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        if set(items) != set(fields):
            raise TypeError(f"{value[DATACLASS]} has other fields now")
        made = kind(**{k: v for k, v in items.items() if fields[k].init})
        for k, v in items.items():
            if not fields[k].init:
                object.__setattr__(made, k, v)
        return made
    if isinstance(value, list | tuple):
        return type(value)(_rebuilt(v) for v in value)
    return value


def stored_numbers(
    chapter: str,
    name: str,
    inputs: Mapping[str, Tensor],
    key: Mapping[str, object],
    compute: Callable[[], Mapping[str, Iterable[float]]],
    version: str | int = 0,
) -> dict[str, list[float]]:
    """``compute()``, named lists of numbers computed from the tensors ``inputs``, kept as
    the artifact ``<chapter>/<name>`` under ``key`` and a digest of ``inputs``
    (:func:`tensors_digest`): what an explorer computes for its first picture, stored so a
    dashboard opens without computing it again. Other inputs (another problem, retrained
    weights) have another digest and are computed anew; ``version``: bump it when the
    computation changes."""

    def build() -> dict[str, list[float]]:
        return {str(k): [float(v) for v in vals] for k, vals in compute().items()}

    full = {**key, "inputs": tensors_digest(inputs)}
    obj, _ = cache.cached(chapter, name, full, build, version=version)
    return obj


def stored_calls(
    chapter: str,
    name: str,
    fn: Callable[..., Tensor],
    key: Mapping[str, object],
    version: str | int = 0,
) -> Callable[..., Tensor]:
    """``fn(x, *numbers) -> Tensor`` with each answer kept as an artifact ``<chapter>/<name>``
    under ``key`` (what ``fn`` is: its data, tolerances), a digest of x and the numbers: an
    exact solution an explorer asks for again at every open (chapter 04's exact jumps, one
    ODE solve each) is solved once. Returned on x's device."""

    def call(x: Tensor, *numbers: float) -> Tensor:
        full = {**key, "x": tensors_digest({"x": x}), "numbers": [float(a) for a in numbers]}
        obj, _ = cache.cached(chapter, name, full, lambda: {"y": fn(x, *numbers)}, version=version)
        return obj["y"].to(x.device)

    return call


def chapter_results(chapter: str, version: str | int) -> Callable[..., Any]:
    """:func:`cached_result` for one chapter's cache folder and version; a chapter module
    says ``evaluated = experiment.chapter_results(CHAPTER, VERSION)`` and then
    ``evaluated(cls, name, key, evaluate, **extra)``."""
    return functools.partial(cached_result, chapter, version)


# ---- threads --------------------------------------------------------------------------------
def one_thread_on_cpu(
    active: bool = True, device: torch.device | None = None, blas: bool = False
) -> AbstractContextManager[None]:
    """One torch thread (and one BLAS thread with ``blas``) inside the block when ``active``
    and the device is the CPU; else nothing changes. Why: :func:`scale.torch_threads`."""
    dev = scale.device() if device is None else torch.device(device)
    return torch_threads(1 if active and dev.type == "cpu" else None, blas=blas)


def on_settings_threads(experiment: Callable[..., T]) -> Callable[..., T]:
    """Decorator: run ``experiment(s, ...)`` on ``s.threads`` torch threads (``None``: as
    set), so an experiment called alone reduces in the same order, and gives the same
    numbers, as when the chapter's ``run`` calls it inside its own ``torch_threads``."""

    @functools.wraps(experiment)
    def pinned(s: Any, *args: Any, **kw: Any) -> T:
        with torch_threads(s.threads):
            return experiment(s, *args, **kw)

    return pinned


# ---- lazy artifacts -------------------------------------------------------------------------
def lazy_tensors(
    device: torch.device | str, make: Callable[..., tuple[Tensor, ...]], *args: Any
) -> Callable[[], tuple[Tensor, ...]]:
    """A function returning ``make(*args)`` moved to ``device``, computed at its first call
    and kept: training data that a cached network never needs are never simulated."""
    return functools.cache(lambda: tuple(t.to(device) for t in make(*args)))
