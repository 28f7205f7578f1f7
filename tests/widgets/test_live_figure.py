"""LiveFigure without a browser: it is a FigureWidget whose module is a small loader naming
the served, content-versioned plotly bundle (not the 5 MB bundle itself), the bundle is
installed under that name, and the kernel answers the browser's request for it. The
browser side is exercised in tests/test_dashboards.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import plotly.graph_objects as go

from pflow_explore.widgets import LiveFigure
from pflow_explore.widgets import live_figure as lf


def test_is_a_figure_widget_with_a_small_module():
    fig = LiveFigure(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])))
    assert isinstance(fig, go.FigureWidget)
    assert list(fig.data[0].y) == [1, 0]
    path, digest = lf.plotly_bundle()
    assert len(fig._esm) < 20_000 < path.stat().st_size, "the bundle must not travel per figure"
    assert "__BUNDLE_PATH__" not in fig._esm
    assert f"voila/templates/pflow/static/plotly/widgetbundle-{digest}.js?v={digest}" in fig._esm
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_install_bundle_versioned_and_replacing_old_copies(tmp_path):
    stale = tmp_path / "plotly" / "widgetbundle-0000000000000000.js"
    stale.parent.mkdir()
    stale.write_text("old")
    target = lf.install_bundle(tmp_path)
    assert target.name == lf.bundle_name() and not stale.exists()
    assert target.read_bytes() == lf.plotly_bundle()[0].read_bytes()
    target.write_bytes(b"truncated")  # a damaged copy is replaced
    assert lf.install_bundle(tmp_path).read_bytes() == lf.plotly_bundle()[0].read_bytes()


def test_preload_partial_names_the_url_the_module_imports(tmp_path):
    import jinja2

    lf.install_bundle(tmp_path)
    partial = (tmp_path / "plotly" / lf.PRELOAD).read_text()
    html = jinja2.Template(partial).render(resources={"base_url": "/course/"})
    # the same URL live_figure.js imports (base URL + bundle path), so the browser fetches once
    assert f'import * as bundle from "/course/{lf.bundle_url_path()}"' in html
    assert '<script type="module">' in html and "globalThis.__pflowPlotlyBundle" in html
    assert "globalThis.__pflowPlotlyBundle" in lf.esm_source()
    assert lf.bundle_url_path() in lf.esm_source()
    template = Path(__file__).parents[2] / "share/jupyter/voila/templates/pflow/index.html.j2"
    assert "static/plotly/preload.html.j2" in template.read_text()


def test_kernel_sends_the_bundle_only_when_asked(monkeypatch):
    fig = LiveFigure()
    sent = []
    monkeypatch.setattr(fig, "send", lambda content, buffers=None: sent.append((content, buffers)))
    fig._send_bundle(fig, {"type": "something else"}, [])
    fig._send_bundle(fig, "not a dict", [])
    assert sent == []
    fig._send_bundle(fig, {"type": "pflow-bundle-request"}, [])
    ((content, buffers),) = sent
    assert content == {"type": "pflow-bundle"}
    assert buffers[0] == lf.plotly_bundle()[0].read_bytes()


def test_unreadable_bundle_becomes_a_message(monkeypatch, tmp_path):
    fig = LiveFigure()
    sent = []
    monkeypatch.setattr(fig, "send", lambda content, buffers=None: sent.append((content, buffers)))
    monkeypatch.setattr(lf, "plotly_bundle", lambda: (tmp_path / "missing.js", "0"))
    fig._send_bundle(fig, {"type": "pflow-bundle-request"}, [])
    ((content, buffers),) = sent
    assert buffers is None and "cannot read plotly's bundle" in content["error"]
