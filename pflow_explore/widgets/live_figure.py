"""LiveFigure: plotly's ``go.FigureWidget`` with one copy of plotly.js per page.

plotly's FigureWidget is an anywidget whose module (``_esm``) is plotly's whole ~5 MB
bundle, sent through the websocket with every figure; anywidget gives each model 2 s to
load and initialise it, and a page of ten figures on a busy CPU misses that: figures drawn
but dead to their sliders (issue "Dashboards that never go dead"). LiveFigure keeps the
whole Python API of FigureWidget (``fig.data[0].x = ...``, ``batch_update``, callbacks) and
swaps only the module: ``live_figure.js`` (2 KB) loads plotly's own widget bundle once per
page from our server, as a static file the browser caches by its content hash, and falls
back to asking the kernel for it where no such server is (a plain ``jupyter lab``).

The served copy lives in the Voila template's static folder (:func:`install_bundle`,
called by ``pflow-explore serve``); Voila and the Voila server extension of JupyterLab serve
it at ``<base_url>voila/templates/pflow/static/plotly/widgetbundle-<hash>.js``.

Which bundle: plotly's own carries the whole plotly.js (3D, maps, WebGL), and evaluating it
takes a page about 1.4 s of main thread on a 2-core laptop. ``make bundle`` builds
``build/plotly/widgetbundle-lean.js`` (js/plotly-bundle/build.js): plotly's front end
unchanged, with a plotly.js of the trace types the course draws (:func:`served_traces`),
1.6 MB instead of 5 MB. It is served while it was built from the installed plotly's bundle
(its sidecar JSON holds that file's sha256); otherwise, or with ``PFLOW_PLOTLY_BUNDLE=full``,
plotly's own bundle is. A LiveFigure with a trace type the lean bundle lacks warns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import plotly
import plotly.graph_objects as go
from traitlets import Bool, observe

log = logging.getLogger(__name__)

TEMPLATE = "pflow"  # the Voila template whose static folder serves the bundle
_JS = Path(__file__).with_name("live_figure.js")


LEAN_DIR = Path(__file__).resolve().parents[2] / "build" / "plotly"  # where make bundle writes
ENV_BUNDLE = "PFLOW_PLOTLY_BUNDLE"  # "full": plotly's own bundle even where the lean one is built


def plotly_own_bundle() -> Path:
    """plotly's own widget bundle, as installed (what ``make bundle`` builds from)."""
    return Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _lean_info() -> dict | None:
    """The lean bundle's sidecar when it is there, wanted, and built from the installed
    plotly's bundle; else None (logged when it is there but stale or unreadable)."""
    if os.environ.get(ENV_BUNDLE, "").strip().lower() == "full":
        return None
    sidecar = LEAN_DIR / "widgetbundle-lean.json"
    if not sidecar.exists():
        return None
    full = plotly_own_bundle()
    try:
        info = json.loads(sidecar.read_text())
        fresh = info["source_sha256"] == _sha256(full) and (LEAN_DIR / info["file"]).exists()
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("LiveFigure: ignoring %s (%s); serving plotly's full bundle", sidecar, err)
        return None
    if not fresh:
        log.warning(
            "LiveFigure: %s was built from another plotly bundle than the installed one; "
            "serving plotly's full bundle (make bundle rebuilds it)",
            sidecar,
        )
        return None
    return info


@functools.lru_cache(maxsize=1)
def plotly_bundle() -> tuple[Path, str]:
    """The served widget bundle (plotly.js and plotly's FigureWidget front end): the lean one
    where it is built and fresh, else plotly's own (module docstring); (path, sha256[:16])."""
    info = _lean_info()
    if info is not None:
        path = LEAN_DIR / info["file"]
    else:
        path = plotly_own_bundle()
    return path, _sha256(path)[:16]


def served_traces() -> frozenset[str] | None:
    """The trace types the served bundle can draw; None for plotly's full bundle (all)."""
    info = _lean_info()
    return None if info is None else frozenset(info["traces"])


def can_draw(trace_type: str) -> bool:
    """Whether the served bundle draws ``trace_type`` (e.g. "scatter3d"): a widget offers
    a view only where its figure will not stay empty."""
    traces = served_traces()
    return traces is None or trace_type in traces


def bundle_name() -> str:
    """The served file's name, versioned by content: ``widgetbundle-<hash>.js``."""
    return f"widgetbundle-{plotly_bundle()[1]}.js"


def bundle_url_path() -> str:
    """The bundle's path below the server's base URL; ``?v=`` lets the browser keep it."""
    return f"voila/templates/{TEMPLATE}/static/plotly/{bundle_name()}?v={plotly_bundle()[1]}"


PRELOAD = "preload.html.j2"  # the template partial, next to the served bundle


def preload_partial() -> str:
    """The Jinja partial the pflow template includes in every page's head: plotly's bundle
    fetched and compiled while the page loads (``modulepreload``), and evaluated in the
    first idle moment after the page's ``load`` event, when Voila has started its app and
    waits for the kernel's widget models; ``globalThis.__pflowPlotlyPreload`` holds the
    promise of the bundle (or of null, if it could not be loaded) for ``live_figure.js``,
    which then falls back to importing it itself, then to the kernel.

    Evaluating the bundle takes 0.3 s of main thread (more on a busy CPU). Until
    2026-12-06 a module script did it before ``load``, so Voila started its app that much
    later; it was put there when ipywidgets' renderers gave up on a model after 2 s and a
    long evaluation during that wait left dead widgets. The pflow-explore front-end
    extension now makes them wait for their models, and anywidget's own 2 s deadline is
    stretched (share/jupyter/labextensions/pflow-explore). The URL is exactly the one
    ``live_figure.js`` imports (one module, fetched and evaluated once per page)."""
    url = f"{{{{ resources.base_url }}}}{bundle_url_path()}"
    return (
        "{#- written by pflow_explore.widgets.live_figure.install_bundle -#}\n"
        f'<link rel="modulepreload" href="{url}">\n'
        "<script>\n"
        "  globalThis.__pflowPlotlyPreload = new Promise((resolve) => {\n"
        '    const load = () => import("' + url + '").then(resolve, () => resolve(null));\n'
        "    const later = () =>\n"
        "      globalThis.requestIdleCallback ? requestIdleCallback(load, { timeout: 1000 })\n"
        "        : setTimeout(load, 0);\n"
        '    addEventListener("load", later, { once: true });\n'
        "  });\n"
        "</script>\n"
    )


def install_bundle(static_dir: Path) -> Path:
    """Copy plotly's widget bundle into ``static_dir/plotly/`` (a template's static folder)
    under its versioned name, removing copies of other versions, and write the template's
    preload partial (:func:`preload_partial`) beside it; returns the copy's path."""
    source, _ = plotly_bundle()
    folder = Path(static_dir) / "plotly"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / bundle_name()
    for old in folder.glob("widgetbundle-*.js"):
        if old != target:
            old.unlink()
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)
    partial = folder / PRELOAD
    if not partial.exists() or partial.read_text() != preload_partial():
        partial.write_text(preload_partial())
    return target


@functools.lru_cache(maxsize=1)
def esm_source() -> str:
    """live_figure.js with the bundle's path filled in."""
    return _JS.read_text().replace("__BUNDLE_PATH__", bundle_url_path())


class LiveFigure(go.FigureWidget):
    """A ``go.FigureWidget`` whose browser side loads plotly once per page (module docstring).

    Use it wherever a figure must follow widgets: ``LiveFigure(fig)`` for a ``go.Figure``.
    Arguments are those of ``go.FigureWidget``. Clicks and box/lasso selections reach the
    traces' ``on_click``/``on_selection``; hover events are not sent to the kernel (in
    ipywidgets' send queue a hover right after a selection replaced it: live_figure.js).
    """

    _esm = esm_source()
    # True once the figure is displayed on its own (an output of its own, no control beside
    # it): the browser then draws it in a background task of its own, after the page's
    # controls and their figures (live_figure.js), instead of before the page can answer
    # a slider. A figure inside a box (an explorer's) draws at once, with its controls.
    _draw_later = Bool(False).tag(sync=True)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.on_msg(self._send_bundle)
        traces = served_traces()
        missing = sorted({t.type for t in self.data} - traces) if traces is not None else []
        if missing:
            warnings.warn(
                f"LiveFigure: trace type(s) {', '.join(missing)} are not in the served plotly "
                f"bundle (it draws {', '.join(sorted(traces))}): the figure will stay empty. "
                f"Add them to js/plotly-bundle/traces.json and run `make bundle`, or set "
                f"{ENV_BUNDLE}=full",
                stacklevel=2,
            )

    def _repr_mimebundle_(self, *args: object, **kwargs: object) -> dict:
        """The widget's output, as plotly's; a figure displayed on its own draws later."""
        self._draw_later = True
        return super()._repr_mimebundle_(*args, **kwargs)

    @observe("_js2py_traceDeltas")
    def _handler_js2py_traceDeltas(self, change: dict) -> None:  # noqa: N802 (plotly's name)
        """plotly's handler of the defaults plotly.js computed for each trace, without the
        data arrays among them. For a heatmap whose x/y came from numpy, plotly.js reports
        x and y back as typed arrays, which arrive as {"0": .., "1": ..} objects; plotly's
        handler then tests a numpy array for truth and raises, so every slider move over
        such a figure left a ValueError traceback in the kernel (chapter 02: 11 KB and
        about 40 ms a move). Arrays are data the kernel already has, never defaults."""
        msg = change.get("new")
        if isinstance(msg, dict) and isinstance(msg.get("trace_deltas"), list):
            deltas = [_without_typed_arrays(d) for d in msg["trace_deltas"]]
            change = {**change, "new": {**msg, "trace_deltas": deltas}}
        super()._handler_js2py_traceDeltas(change)

    def _send_bundle(self, _widget: object, content: dict, _buffers: list) -> None:
        """Answer the browser's request for the bundle (made only where no server has it)."""
        if not isinstance(content, dict) or content.get("type") != "pflow-bundle-request":
            return
        try:
            data = plotly_bundle()[0].read_bytes()
        except OSError as err:  # the browser shows this text inside the figure
            log.warning("LiveFigure: cannot read plotly's bundle: %s", err)
            self.send({"type": "pflow-bundle", "error": f"cannot read plotly's bundle: {err}"})
            return
        self.send({"type": "pflow-bundle"}, buffers=[data])


def _without_typed_arrays(value: object) -> object:
    """``value`` (a trace delta from plotly.js) without the typed arrays in it: dicts whose
    keys are all digits ({"0": 1.5, "1": 2.0, ...}, how a Float64Array reaches JSON)."""
    if isinstance(value, dict):
        return {
            k: _without_typed_arrays(v)
            for k, v in value.items()
            if not (isinstance(v, dict) and v and all(str(key).isdigit() for key in v))
        }
    if isinstance(value, list):
        return [_without_typed_arrays(v) for v in value]
    return value
