"""pflow_explore.widgets loads each explorer's module on first use (PEP 562)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pflow_explore.widgets as W


def test_every_exported_name_resolves_to_its_modules_object():
    for name in W.__all__:
        obj = getattr(W, name)
        module = sys.modules[f"pflow_explore.widgets.{W._HOME[name]}"]
        assert obj is getattr(module, name)
    assert set(W.__all__) <= set(dir(W))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        W.Nope  # noqa: B018


def test_the_live_figure_alone_does_not_import_sympy_or_the_explorers():
    code = (
        "import sys; from pflow_explore.widgets import LiveFigure; "
        "print('sympy' in sys.modules, 'pflow_explore.widgets.gaussian_playground' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
