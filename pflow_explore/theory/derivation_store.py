"""Derivations kept on disk, so a kernel shows them without redoing sympy's work.

sympy's ``dsolve`` and ``simplify`` take 0.3-1.5 s per derivation, in every kernel that
shows or uses one: every dashboard page served without a preheated kernel waited that long,
once per derivation. :func:`stored` is ``functools.cache`` plus a copy on disk, under
``<data>/cache/derivations/<function>-<key>.json``; the key hashes sympy's version and the
source of every module in ``pflow_explore/theory/``, so any change of the theory derives
again.

The file holds each expression as ``sympy.srepr`` text, with the assumptions of its
undefined functions (``Function('alpha', real=True)``: srepr leaves them out, and without
them ``alpha(t)`` is another function). :func:`from_srepr` reads it back and builds only
sympy objects (an allow-list walk of the text's syntax tree: no ``eval``, so a cache file
cannot run code, as artifacts are loaded with ``weights_only=True``). A file that is
missing, unreadable or holds anything else is derived again and rewritten; a folder that
cannot be written only costs the time.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sympy as sp

log = logging.getLogger(__name__)

FOLDER = "derivations"  # below cache.cache_dir()
STORED: list[Callable[[], Any]] = []  # every stored derivation, for the round-trip test


@functools.cache
def _theory_key() -> str:
    """sha256 (16 hex) of sympy's version and the source of every theory module."""
    digest = hashlib.sha256(sp.__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _allowed(obj: object) -> bool:
    """sympy classes and singletons (Add, Symbol, Function, pi, ...), matrices and undefined
    functions (what ``Function('c')`` returns): all a derivation's srepr text is made of."""
    if isinstance(obj, sp.core.function.UndefinedFunction):
        return True
    if isinstance(obj, type):
        return issubclass(obj, sp.Basic | sp.MatrixBase)
    return isinstance(obj, sp.Basic)


def _build(node: ast.AST, functions: dict[str, dict[str, bool]]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _build(node.operand, functions)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_build(e, functions) for e in node.elts)
    if isinstance(node, ast.Name):
        obj = getattr(sp, node.id, None)
        if _allowed(obj):
            return obj
        raise ValueError(f"not a sympy name: {node.id!r}")
    if isinstance(node, ast.Call):
        func = _build(node.func, functions)
        if not _allowed(func):
            raise ValueError(f"not a sympy constructor: {func!r}")
        args = [_build(a, functions) for a in node.args]
        kwargs = {k.arg: _build(k.value, functions) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise ValueError("** arguments are not sympy's srepr")
        if func is sp.Function and len(args) == 1 and not kwargs:
            # srepr drops an undefined function's assumptions (Function('alpha', real=True)
            # prints as Function('alpha')), and without them alpha(t) is another function
            kwargs = dict(functions.get(args[0], {}))
        if isinstance(func, type) and issubclass(func, sp.core.relational.Relational):
            kwargs["evaluate"] = False  # a derivation's step may be an identity: Eq(a, a)
        return func(*args, **kwargs)
    raise ValueError(f"not sympy's srepr: {ast.dump(node)[:80]}")


def from_srepr(
    text: str, functions: dict[str, dict[str, bool]] | None = None
) -> sp.Basic | sp.MatrixBase:
    """The sympy object whose ``sympy.srepr`` is ``text``, built without ``eval``;
    ``functions``: the assumptions of its undefined functions by name (:func:`functions_of`),
    which srepr leaves out.

    Raises ValueError for text that is anything but sympy constructors applied to
    constants (``__import__('os')``, attribute access, operators, ...)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not sympy's srepr: {err}") from None
    obj = _build(tree.body, functions or {})
    if not isinstance(obj, sp.Basic | sp.MatrixBase):
        raise ValueError(f"not a sympy object: {text[:80]!r}")
    return obj


def _path(fn: Callable[[], Any]) -> Path:
    from pflow_explore import cache  # here: cache imports torch, which theory modules need not

    name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}"
    return cache.cache_dir() / FOLDER / f"{name}-{_theory_key()}.json"


def functions_of(exprs: list[Any]) -> dict[str, dict[str, bool]]:
    """The assumptions (``real=True``, ...) of every undefined function in ``exprs``, by name;
    ValueError where one name has two sets (srepr could not tell them apart)."""
    table: dict[str, dict[str, bool]] = {}
    for expr in exprs:
        for applied in sp.sympify(expr).atoms(sp.core.function.AppliedUndef):
            cls = type(applied)
            if table.setdefault(cls.__name__, dict(cls._kwargs)) != cls._kwargs:
                raise ValueError(f"two functions named {cls.__name__!r}")
    return table


def dump(derivation: Any) -> str:
    """A Derivation (title, steps, result), or a dict of named sympy expressions, as the JSON
    text :func:`load` reads."""
    if isinstance(derivation, dict):
        functions = functions_of(list(derivation.values()))
        exprs = {k: sp.srepr(v) for k, v in derivation.items()}
        return json.dumps({"functions": functions, "exprs": exprs})
    exprs = [expr for _, expr in derivation.steps] + [derivation.result]
    return json.dumps(
        {
            "functions": functions_of(exprs),
            "title": derivation.title,
            "steps": [[label, sp.srepr(expr)] for label, expr in derivation.steps],
            "result": sp.srepr(derivation.result),
        }
    )


def load(text: str) -> Any:
    """The Derivation, or dict of expressions, :func:`dump` wrote; ValueError for anything
    else."""
    from pflow_explore.theory.gaussian_flow import Derivation  # the class is defined there

    try:
        data = json.loads(text)
        functions = data["functions"]
        if not all(
            isinstance(a, dict) and all(isinstance(v, bool) for v in a.values())
            for a in functions.values()
        ):
            raise TypeError("function assumptions are not true/false")
        if "exprs" in data:
            return {str(k): from_srepr(v, functions) for k, v in data["exprs"].items()}
        title, steps, result = data["title"], data["steps"], data["result"]
        if not isinstance(title, str) or not all(isinstance(s[0], str) for s in steps):
            raise TypeError("labels are not text")
        return Derivation(
            title,
            tuple((label, from_srepr(s, functions)) for label, s in steps),
            from_srepr(result, functions),
        )
    except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as err:
        raise ValueError(f"not a stored derivation: {err}") from None


def stored(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``functools.cache`` for a function of no arguments returning a Derivation or a dict of
    named sympy expressions, kept on disk too (module docstring). ``fn.__wrapped__`` derives
    afresh."""

    def load_or_derive() -> Any:
        path = _path(fn)
        try:
            return load(path.read_text())
        except FileNotFoundError:
            pass
        except Exception as err:  # noqa: BLE001 (whatever the file holds, derive again)
            log.warning("%s: %s; deriving again", path, err)
        derivation = fn()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(dump(derivation))
            os.replace(tmp, path)  # atomic: a kernel reading at the same time sees all or none
            for old in path.parent.glob(path.name.replace(_theory_key(), "*")):
                if old != path:
                    old.unlink(missing_ok=True)  # derived from an earlier theory
        except (OSError, ValueError) as err:  # no folder to write; two functions, one name
            log.warning("cannot keep %s (%s): it will be derived again", path, err)
        return derivation

    cached = functools.cache(load_or_derive)
    functools.update_wrapper(cached, fn)  # fn's name and docstring; __wrapped__ is fn
    STORED.append(cached)
    return cached
