"""Every chapter module meets the contract of pflow_explore/chapters/__init__.py."""

import dataclasses

import plotly.graph_objects as go
import pytest

from pflow_explore import chapters, scale
from pflow_explore.claims import Claim

MODULES = chapters.modules()


def test_start_here_is_discovered():
    assert "start_here" in MODULES


@pytest.mark.parametrize("slug", list(MODULES))
def test_presets_and_settings(slug, monkeypatch):
    mod = MODULES[slug]
    assert set(mod.SETTINGS) == set(scale.SCALES)
    for preset in mod.SETTINGS.values():
        assert dataclasses.is_dataclass(preset)
    monkeypatch.setenv("PFLOW_SCALE", "gpu")
    assert mod.settings() == mod.SETTINGS["gpu"]
    assert mod.settings("tiny") == mod.SETTINGS["tiny"]


@pytest.mark.parametrize("slug", list(MODULES))
def test_tiny_run_gives_claims_and_figures(slug, data_dir):
    mod = MODULES[slug]
    s = mod.settings("tiny")
    mod.prepare(s)
    results = mod.run(s)
    cs = mod.claims(results)
    assert cs and all(isinstance(c, Claim) for c in cs)
    figs = mod.figures(results)
    assert figs and all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(mod.preview(), go.Figure)
