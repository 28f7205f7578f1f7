// The browser side of LiveFigure (live_figure.py): plotly's own FigureWidget front end,
// loaded once per page from our server instead of once per figure through the websocket.
//
// Why: plotly's FigureWidget ships its ~5 MB bundle (plotly.js + the widget) inside every
// widget model; anywidget gives a model 2 s to load and initialise its module, and ten
// figures parsing 5 MB each on a busy CPU miss that deadline: the figure is drawn but never
// updates again. Here the module anywidget loads is this small file; it returns from
// `initialize` at once, loads the bundle in the background (one shared promise per page),
// remembers the figure edits Python sends meanwhile, and hands them to plotly's
// FigureModel when the bundle is in. Every step that can fail says so inside the figure.
//
// __BUNDLE_PATH__ is filled in by live_figure.py: the bundle's path below the server's base
// URL, versioned by its content hash (so the browser may cache it for good).

const BUNDLE_PATH = "__BUNDLE_PATH__";
const LOAD_TIMEOUT_MS = 60000;
// plotly's Python -> JS edit messages (plotly/basewidget.py, the _py2js_* traits)
const EDITS = [
  "_py2js_addTraces",
  "_py2js_deleteTraces",
  "_py2js_moveTraces",
  "_py2js_restyle",
  "_py2js_relayout",
  "_py2js_update",
  "_py2js_animate",
  "_py2js_removeLayoutProps",
  "_py2js_removeTraceProps",
];

// Hover events are not reported to Python. ipywidgets sends one message at a time and
// merges what waits behind it by trait, so a hover or unhover right after a box selection or
// a click overwrote it in plotly's one points trait (_js2py_pointsCallback) before it left:
// the kernel never heard of the selection (measured: plotly emitted plotly_selected with 80
// points, the websocket carried only the unhover). No chapter listens to hover, and each
// mouse move over a figure no longer costs the kernel a message.
const UNREPORTED = new Set(["plotly_hover", "plotly_unhover"]);

function withoutHoverEvents(model) {
  const set = model.set.bind(model);
  model.set = (key, value, ...rest) => {
    if (key === "_js2py_pointsCallback" && value && UNREPORTED.has(value.event_type)) return;
    return set(key, value, ...rest);
  };
  return model;
}

// After every draw and redraw, plotly's view diffs the figure plotly.js computed (every
// default of every trace and axis) against the model's and sends both diffs to the kernel
// (`_js2py_traceDeltas`, `_js2py_layoutDelta`: 5-20 KB each per figure on a chapter page),
// where plotly's handlers merge them into defaults no course code reads, and echo each
// trait back. On a page load that is 20-30 such messages, and the kernel answers a first
// slider move only after it has worked through them (measured: 0.4-0.7 s from key press to
// redraw on chapter 07). Here each view acknowledges its edit ids only, with no defaults,
// so plotly's edit bookkeeping (`on_edits_completed`) still completes.
function withoutDefaults(FigureView) {
  const proto = FigureView && FigureView.prototype;
  if (!proto || proto.__pflowNoDefaults) return;
  proto._sendTraceDeltas = function (traceEditId) {
    this.model.set("_js2py_traceDeltas", { trace_deltas: [], trace_edit_id: traceEditId });
    this.touch();
  };
  proto._sendLayoutDelta = function (layoutEditId) {
    this.model.set("_js2py_layoutDelta", { layout_delta: {}, layout_edit_id: layoutEditId });
    this.touch();
  };
  proto.__pflowNoDefaults = true;
}

function baseUrl() {
  // Voila and JupyterLab both put the server's base URL in this element
  const el = document.getElementById("jupyter-config-data");
  try {
    return (el && JSON.parse(el.textContent).baseUrl) || "/";
  } catch {
    return "/";
  }
}

// Evaluating plotly's bundle blocks the page for ~0.5 s (seconds on a busy CPU). Voila's
// output renderers wait for their widget models by polling every 100 ms for at most 2 s,
// and they check the clock before the registry: a block that outlasts their deadline makes
// them give up ("widget model not found") although the model arrived meanwhile. In a pflow
// dashboard the template evaluates the bundle (preload_partial in live_figure.py) and the
// course's front-end extension makes the renderers wait for their models. Elsewhere (another template, JupyterLab)
// one pause longer than a poll lets the renderers waiting at that moment find their models
// before the long evaluation starts.
const YIELD_TO_RENDERERS_MS = 150;

function fromServer() {
  return new Promise((resolve) => setTimeout(resolve, YIELD_TO_RENDERERS_MS)).then(() =>
    import(new URL(baseUrl() + BUNDLE_PATH, document.baseURI).href),
  );
}

// Elsewhere (a plain `jupyter lab`, VS Code, ...) the kernel sends the bundle once per page.
function fromKernel(model) {
  return new Promise((resolve, reject) => {
    const onMessage = (msg, buffers) => {
      if (!msg || msg.type !== "pflow-bundle") return;
      model.off("msg:custom", onMessage);
      if (!buffers || !buffers.length) {
        reject(new Error(msg.error || "the kernel sent no plotly bundle"));
        return;
      }
      const blob = new Blob([buffers[0]], { type: "text/javascript" });
      const url = URL.createObjectURL(blob);
      import(url)
        .then(resolve, reject)
        .finally(() => URL.revokeObjectURL(url));
    };
    model.on("msg:custom", onMessage);
    model.send({ type: "pflow-bundle-request" });
  });
}

function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`plotly did not load within ${ms / 1000} s`)),
      ms,
    );
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function plotlyBundle(model) {
  if (!globalThis.__pflowPlotlyBundle) {
    // the pflow template's preload (live_figure.preload_partial): the bundle, or null
    const preloaded = globalThis.__pflowPlotlyPreload || Promise.resolve(null);
    globalThis.__pflowPlotlyBundle = withTimeout(
      preloaded.then((bundle) => bundle || fromServer().catch(() => fromKernel(model))),
      LOAD_TIMEOUT_MS,
    );
    // a failed load may be retried by the next figure that starts (e.g. after a reconnect)
    globalThis.__pflowPlotlyBundle.catch(() => {
      globalThis.__pflowPlotlyBundle = undefined;
    });
  }
  return globalThis.__pflowPlotlyBundle;
}

// Apply the edits Python sent before plotly's FigureModel existed to the model's copy of the
// figure, exactly as that FigureModel would have (its do_* methods read one trait each).
function replay(FigureModel, model, edits) {
  for (const [name, value] of edits) {
    const view = { get: (key) => (key === name ? value : model.get(key)) };
    new FigureModel(view, {})[`do${name.slice("_py2js".length)}`]();
  }
}

function showFailure(el, error) {
  el.replaceChildren();
  const box = document.createElement("div");
  box.className = "pflow-figure-failed";
  box.setAttribute("role", "alert");
  box.style.cssText =
    "color:#b00020;background:#fdecea;border-left:3px solid #b00020;padding:6px 10px;";
  box.textContent =
    `This figure could not start (${error && error.message ? error.message : error}). ` +
    "Reload the page; if it stays like this, restart the server (pflow-explore serve) " +
    "and tell the course maintainers what this message says.";
  el.appendChild(box);
}

// Every figure is drawn in a task of its own, after `render` has returned: drawing a chapter
// page's figures back to back in one go held its main thread for 1-2 s (chapter 02: nine
// figures, 1.2-1.8 s), and a box of controls appeared only once every figure in it was
// drawn. Now the boxes appear at once, key presses and kernel messages get in between two
// figures, and the figures come in two lanes (scheduler.postTask where the browser has it):
// - a figure inside a box (an explorer's, beside its controls): priority "user-visible",
//   in the order they came;
// - a figure displayed on its own (model `_draw_later`, set by live_figure.py): priority
//   "background", one after another, after everything else waiting.
// The figure's box keeps the figure's height meanwhile, so the page does not jump.
const drawQueue = [];
let drawing = false;

function nextTask(callback, priority = "background") {
  if (globalThis.scheduler && typeof globalThis.scheduler.postTask === "function") {
    globalThis.scheduler.postTask(callback, { priority });
  } else {
    setTimeout(callback, 0);
  }
}

// A figure displayed on its own waits, besides, until it comes on screen, or until the page
// has been left alone: 3 s after the figure arrived and after the reader's last key press,
// click or scroll, in an idle moment. (anywidget imports this file once per figure, from a
// blob URL of its own, so the state below is each figure's own, drawQueue's too; only
// globalThis is shared by a page's figures.) A chapter page holds several,
// most far below the first screen; drawing them all at open kept the main thread busy
// while the first slider presses waited (preheated, back-to-back A/Bs: chapter 02's first
// working slider 0.1-0.4 s sooner, the other pages within the noise;
// benchmarks/results/dashboard_pages_onscreen_ab*). The catch-up keeps what a plain page
// gained before: its kernel runs the notebook for seconds, and the figures that arrived
// meanwhile are drawn while the page waits (dashboard_pages_idle_ab_*). Drawing them half
// a screen ahead (an observer on #rendered_cells, the panel that scrolls a Voila page, with
// a margin) made the first working slider 0.4-0.6 s later on chapters 07 and 12: a slider
// focused for its first press scrolls the page, and the figures around it drew in its way.
// Printing draws every figure still waiting (beforeprint). Each figure's element has the
// class pflow-figure (the browser tests scroll through a page and find every one drawn).
// An explorer's figure is not held back so: Voila keeps the page's cells display:none until
// its widgets are up, so nothing is on screen before then, and holding explorer figures
// until they were (with the observer, or with a bounding-box test at their first draw) made
// every page's first working slider 0.6-0.9 s later, chapter 00's too
// (dashboard_pages_s16_explorers_ab*, dashboard_pages_s16_offscreen_explorers_ab*).
const QUIET_MS = 3000;
const offScreen = new Map(); // element -> {draw, since}: the figures not yet on screen
let watcher = null;
let lastInput = 0;
let catchUp = null;

function drawAll() {
  const waiting = Array.from(offScreen.values());
  offScreen.clear();
  if (watcher) watcher.disconnect();
  watcher = null;
  for (const { draw } of waiting) draw();
}

function stopWatching(el) {
  if (offScreen.delete(el) && watcher) watcher.unobserve(el);
}

function drawWhenQuiet() {
  if (catchUp || !offScreen.size) return;
  const [el, { since }] = offScreen.entries().next().value;
  const wait = Math.max(since, lastInput) + QUIET_MS - performance.now();
  catchUp = setTimeout(() => {
    const idle = globalThis.requestIdleCallback || ((f) => setTimeout(f, 0));
    idle(() => {
      catchUp = null;
      const waiting = offScreen.get(el);
      if (waiting && performance.now() - Math.max(waiting.since, lastInput) >= QUIET_MS) {
        stopWatching(el);
        drawLater(waiting.draw);
      }
      drawWhenQuiet();
    });
  }, Math.max(0, wait));
}

function whenOnScreen(el, draw) {
  if (typeof globalThis.IntersectionObserver !== "function") {
    drawLater(draw);
    return;
  }
  if (!watcher) {
    watcher = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const waiting = offScreen.get(entry.target);
        if (!entry.isIntersecting || !waiting) continue;
        stopWatching(entry.target);
        drawLater(waiting.draw);
      }
    });
    globalThis.addEventListener("beforeprint", drawAll);
    for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) {
      const seen = () => {
        lastInput = performance.now();
      };
      globalThis.addEventListener(type, seen, { capture: true, passive: true });
    }
  }
  offScreen.set(el, { draw, since: performance.now() });
  watcher.observe(el);
  drawWhenQuiet();
}

function drawLater(draw) {
  drawQueue.push(draw);
  if (drawing) return;
  drawing = true;
  const step = () => {
    const next = drawQueue.shift();
    try {
      if (next) next();
    } finally {
      if (drawQueue.length) nextTask(step);
      else drawing = false;
    }
  };
  nextTask(step);
}

export default () => {
  let figure = null; // plotly's own {initialize, render} for this model, once loaded
  let failure = null;
  let ready = Promise.resolve();
  return {
    initialize({ model }) {
      const edits = [];
      const listeners = EDITS.map((name) => {
        const listener = () => {
          const value = model.get(name);
          if (value !== null && value !== undefined) edits.push([name, value]);
        };
        model.on(`change:${name}`, listener);
        return [name, listener];
      });
      const stopListening = () => {
        for (const [name, listener] of listeners) model.off(`change:${name}`, listener);
      };
      // not awaited: anywidget allows initialize 2 s; the bundle may take longer on a busy CPU
      ready = plotlyBundle(model)
        .then((bundle) => {
          stopListening();
          withoutDefaults(bundle.FigureView);
          replay(bundle.FigureModel, model, edits);
          figure = bundle.default();
          // plotly's views send their events through the model given here
          figure.initialize({ model: withoutHoverEvents(model) });
        })
        .catch((error) => {
          stopListening();
          figure = null;
          failure = error;
          // the page's own script (Voila template) turns this into a line atop the page
          console.error("[pflow-explore] a figure could not start:", error);
        });
    },
    async render({ model, el }) {
      if (!figure && !failure) {
        const waiting = document.createElement("div");
        waiting.className = "pflow-figure-loading";
        waiting.style.cssText = "color:#666;padding:6px 10px;min-height:2em;";
        waiting.textContent = "loading the figure…";
        el.appendChild(waiting);
        await ready;
        waiting.remove();
      }
      if (failure) {
        showFailure(el, failure);
        return;
      }
      el.classList.add("pflow-figure");
      const beside = !model.get("_draw_later");
      const layout = model.get("_widget_layout") || {};
      el.style.minHeight = `${layout.height || 360}px`;
      let removed = false;
      let cleanup = null;
      const draw = () => {
        if (removed) return;
        try {
          cleanup = figure.render({ model, el });
        } catch (error) {
          console.error("[pflow-explore] a figure could not be drawn:", error);
          showFailure(el, error);
        }
        el.style.minHeight = "";
      };
      if (beside) nextTask(draw, "user-visible");
      else whenOnScreen(el, draw);
      return () => {
        removed = true;
        stopWatching(el);
        if (typeof cleanup === "function") cleanup();
      };
    },
  };
};
