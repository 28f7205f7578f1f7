"""Derivations kept on disk (theory/derivation_store.py): what is read back is what sympy
derives, a file cannot run code, and a bad file is derived again."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest
import sympy as sp

import pflow_explore.theory as theory
from pflow_explore.theory import derivation_store as store

# every theory module, so that every stored derivation is registered
for _info in pkgutil.iter_modules(theory.__path__):
    importlib.import_module(f"{theory.__name__}.{_info.name}")


def _same(a, b) -> bool:
    """Equal as sympy compares them (which sees assumptions srepr omits) and as text."""
    if isinstance(a, dict):  # named expressions
        pairs = [(a[k], b[k]) for k in a] if a.keys() == b.keys() else [(0, 1)]
    else:
        if a.title != b.title or [n for n, _ in a.steps] != [n for n, _ in b.steps]:
            return False
        pairs = [(x, y) for (_, x), (_, y) in zip(a.steps, b.steps, strict=True)]
        pairs.append((a.result, b.result))
    return all(x == y and sp.srepr(x) == sp.srepr(y) for x, y in pairs)


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    """An empty data folder, and every stored derivation's in-memory cache cleared."""
    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))
    for fn in store.STORED:
        fn.cache_clear()
    yield tmp_path / "cache" / store.FOLDER
    for fn in store.STORED:
        fn.cache_clear()


@pytest.mark.parametrize("fn", store.STORED, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_a_stored_derivation_reads_back_as_sympy_derives_it(fn, fresh_store):
    derived = fn()  # derives, keeps a copy on disk
    (path,) = fresh_store.glob(f"*.{fn.__name__}-*.json")
    fn.cache_clear()
    read = fn()  # from the file: sympy does no work
    assert read is not derived and _same(read, derived)
    assert _same(read, fn.__wrapped__())  # __wrapped__ derives afresh
    assert path.exists()


def test_ten_derivations_are_stored():
    # the derivations the chapters show: a module that stops registering them fails here
    assert len(store.STORED) >= 10
    assert len({f"{f.__module__}.{f.__name__}" for f in store.STORED}) == len(store.STORED)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo no')",
        "Symbol('x').__class__",
        "eval('1')",
        "Integer(1) + Integer(2)",
        "lambda: 1",
        "[Integer(1)]",
        "open('/etc/passwd')",
        "Symbol(**{'name': 'x'})",
        "Add(",
    ],
)
def test_from_srepr_builds_nothing_but_sympy(text):
    with pytest.raises(ValueError):
        store.from_srepr(text)


def test_from_srepr_round_trips_what_derivations_hold():
    t, lam = sp.symbols("t lambda", positive=True)
    c = sp.Function("c")
    alpha = sp.Function("alpha", real=True)
    for expr in (
        sp.Eq(c(t).diff(t), -lam * c(t) / (1 + t**2)),
        alpha(t) * c(t) + alpha(t).diff(t),  # srepr omits alpha's real=True
        sp.Eq(c(t), c(t)),  # an identity stays an equation
        sp.Matrix([[t, sp.Rational(1, 2)], [sp.pi, sp.Float(1.5)]]),
        sp.Tuple(sp.sqrt(lam), sp.exp(-t), sp.oo),
    ):
        back = store.from_srepr(sp.srepr(expr), store.functions_of([expr]))
        assert back == expr and sp.srepr(back) == sp.srepr(expr)
    # without the assumptions, alpha(t) is another function: the table is needed
    assert store.from_srepr(sp.srepr(alpha(t))) != alpha(t)


def test_a_bad_file_is_derived_again_and_rewritten(fresh_store, caplog):
    fn = next(f for f in store.STORED if f.__name__ == "pf_ode_eigen_ve")
    derived = fn()
    (path,) = fresh_store.glob("*.pf_ode_eigen_ve-*.json")
    path.write_text('{"title": "x", "steps": [], "result": "__import__(\'os\')"}')
    fn.cache_clear()
    with caplog.at_level(logging.WARNING):
        again = fn()
    assert "deriving again" in caplog.text
    assert _same(again, derived)
    fn.cache_clear()
    assert _same(fn(), derived)  # the rewritten file


def test_a_file_whose_sympy_objects_cannot_be_built_is_derived_again(fresh_store):
    fn = next(f for f in store.STORED if f.__name__ == "perturbation_gain")
    derived = fn()
    (path,) = fresh_store.glob("*.perturbation_gain-*.json")
    path.write_text('{"functions": {}, "title": "x", "steps": [], "result": "Integer(\'x\')"}')
    fn.cache_clear()
    assert _same(fn(), derived)


def test_a_derivation_of_an_earlier_theory_is_replaced(fresh_store):
    fn = next(f for f in store.STORED if f.__name__ == "feature_share")
    fresh_store.mkdir(parents=True)
    stale = fresh_store / "gaussian_flow.feature_share-0123456789abcdef.json"
    stale.write_text("{}")
    fn()
    assert not stale.exists()
    assert len(list(fresh_store.glob("gaussian_flow.feature_share-*.json"))) == 1


def test_the_key_follows_sympy_and_the_theory_source(monkeypatch):
    before = store._theory_key()
    monkeypatch.setattr(sp, "__version__", sp.__version__ + ".other")
    store._theory_key.cache_clear()
    try:
        assert store._theory_key() != before
    finally:
        monkeypatch.undo()
        store._theory_key.cache_clear()
    assert store._theory_key() == before
