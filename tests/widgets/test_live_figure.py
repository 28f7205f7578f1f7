"""LiveFigure without a browser: it is a FigureWidget whose module is a small loader naming
the served, content-versioned plotly bundle (not the 5 MB bundle itself), the bundle is
installed under that name, and the kernel answers the browser's request for it. The
browser side is exercised in tests/test_dashboards.py."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import plotly.graph_objects as go
import pytest

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
    url = f"/course/{lf.bundle_url_path()}"
    assert f'<link rel="modulepreload" href="{url}">' in html  # fetched while the page loads
    assert f'import("{url}")' in html and 'addEventListener("load"' in html  # run after load
    assert "globalThis.__pflowPlotlyPreload" in html
    assert "globalThis.__pflowPlotlyPreload" in lf.esm_source()
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


def _forget_bundle() -> None:
    """Clear the cached choice of bundle, so the next call looks at LEAN_DIR and env again."""
    lf._lean_info.cache_clear()
    lf.plotly_bundle.cache_clear()


def _lean_dir(tmp_path, monkeypatch, source_sha: str) -> Path:
    """A fake lean build in tmp_path whose sidecar names ``source_sha``; caches cleared."""
    (tmp_path / "widgetbundle-lean.js").write_text("export const lean = 1;")
    sidecar = {"file": "widgetbundle-lean.js", "source_sha256": source_sha, "traces": ["scatter"]}
    (tmp_path / "widgetbundle-lean.json").write_text(json.dumps(sidecar))
    monkeypatch.setattr(lf, "LEAN_DIR", tmp_path)
    monkeypatch.delenv(lf.ENV_BUNDLE, raising=False)
    _forget_bundle()
    return tmp_path


@pytest.fixture
def restore_bundle_caches():
    yield
    _forget_bundle()


def test_lean_bundle_served_only_while_it_matches_plotly(
    tmp_path, monkeypatch, restore_bundle_caches
):
    own = lf.plotly_own_bundle()
    own_sha = hashlib.sha256(own.read_bytes()).hexdigest()
    lean = _lean_dir(tmp_path, monkeypatch, own_sha)
    assert lf.plotly_bundle()[0] == lean / "widgetbundle-lean.js"
    assert lf.served_traces() == {"scatter"}
    monkeypatch.setenv(lf.ENV_BUNDLE, "full")  # the opt-out
    _forget_bundle()
    assert lf.plotly_bundle()[0] == own and lf.served_traces() is None
    _lean_dir(tmp_path, monkeypatch, "0" * 64)  # built from another plotly: not served
    assert lf.plotly_bundle()[0] == own and lf.served_traces() is None
    (tmp_path / "widgetbundle-lean.json").write_text("{not json")  # damaged: not served
    _forget_bundle()
    assert lf.plotly_bundle()[0] == own


def test_a_trace_type_the_lean_bundle_lacks_warns(tmp_path, monkeypatch, restore_bundle_caches):
    own_sha = hashlib.sha256(lf.plotly_own_bundle().read_bytes()).hexdigest()
    _lean_dir(tmp_path, monkeypatch, own_sha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LiveFigure(go.Figure(go.Scatter(x=[0], y=[0])))
    with pytest.warns(UserWarning, match="scatter3d are not in the served plotly bundle"):
        LiveFigure(go.Figure(go.Scatter3d(x=[0], y=[0], z=[0])))


def _trace_types_drawn(root: Path) -> set[str]:
    """Trace types the package's source builds: go.<Trace>(...) and type="<trace>" dicts."""
    from plotly.basedatatypes import BaseTraceType

    names = {
        name.lower()
        for name in dir(go)
        if name[:1].isupper()
        and isinstance(obj := getattr(go, name), type)
        and issubclass(obj, BaseTraceType)
    }
    found = set()
    for path in (p for p in root.rglob("*") if p.suffix in (".py", ".ipynb")):
        text = path.read_text()
        found |= {m.lower() for m in re.findall(r"\bgo\.([A-Z]\w*)\(", text)} & names
        found |= set(re.findall(r"""\btype\s*=\s*["'](\w+)["']""", text)) & names
        found |= set(re.findall(r"""["']type["']\s*:\s*["'](\w+)["']""", text)) & names
    return found


def test_the_lean_bundle_lists_every_trace_type_the_course_draws():
    repo = Path(__file__).parents[2]
    listed = set(json.loads((repo / "js/plotly-bundle/traces.json").read_text()))
    drawn = _trace_types_drawn(repo / "pflow_explore") | _trace_types_drawn(repo / "notebooks")
    assert {"scatter", "heatmap", "table"} <= drawn  # the scan finds what is there
    assert drawn <= listed, f"add {sorted(drawn - listed)} to js/plotly-bundle/traces.json"


def _heatmap_delta(fig: go.FigureWidget) -> dict:
    """What plotly.js sends back after drawing a heatmap whose x/y came from numpy: its
    computed defaults, x and y among them as typed arrays ({"0": .., "1": ..})."""
    heat = fig.data[0]
    as_object = lambda a: {str(i): float(v) for i, v in enumerate(a)}  # noqa: E731
    delta = {"uid": heat.uid, "zmin": 0.0, "zmax": 1.0, "x": as_object(heat.x)}
    delta["y"] = as_object(heat.y)
    return {"trace_deltas": [delta], "trace_edit_id": fig._last_trace_edit_id}


def test_heatmap_trace_deltas_with_typed_arrays_do_not_raise():
    import numpy as np

    heat = go.Heatmap(z=np.eye(3), x=np.arange(3.0), y=np.arange(3.0))
    plain = go.FigureWidget(go.Figure(heat))
    with pytest.raises(ValueError, match="truth value of an array"):  # plotly's own handler
        plain._handler_js2py_traceDeltas({"new": _heatmap_delta(plain)})
    fig = LiveFigure(go.Figure(heat))
    fig._js2py_traceDeltas = _heatmap_delta(fig)  # as the browser's message sets it
    assert fig.data[0]._prop_defaults["zmax"] == 1.0  # the defaults still arrive
    assert list(fig.data[0].x) == [0.0, 1.0, 2.0]  # the data stay the kernel's own
    assert lf._without_typed_arrays({"a": {"0": 1}, "b": [{"c": {"1": 2, "x": 3}}]}) == {
        "b": [{"c": {"1": 2, "x": 3}}]
    }


def test_a_figure_displayed_on_its_own_is_drawn_after_the_controls():
    import ipywidgets as widgets
    from IPython.core.formatters import DisplayFormatter

    alone, beside = LiveFigure(), LiveFigure()
    box = widgets.VBox([widgets.IntSlider(), beside])
    assert not alone._draw_later and not beside._draw_later
    formatter = DisplayFormatter()
    data, _ = formatter.format(alone)
    assert "application/vnd.jupyter.widget-view+json" in data
    formatter.format(box)
    assert alone._draw_later and not beside._draw_later  # the box's figure draws at once
    assert "_draw_later" in alone.get_state() and alone.get_state()["_draw_later"] is True
    assert 'model.get("_draw_later")' in lf.esm_source()
