// pflow-explore's front-end extension for Voila (and JupyterLab): widget outputs that wait
// for their model instead of giving up after 2 s.
//
// Why: ipywidgets' output renderer (WidgetRenderer in @jupyter-widgets/jupyterlab-manager)
// asks the widget manager for its model, which polls every 100 ms for at most 2 s and
// checks the clock before the registry. Voila renders every widget output as soon as its
// app has started, while the models are still coming from the kernel. If the kernel's
// models are restored just as a renderer's 2 s run out (on a busy CPU, any long task of the
// page - plotly drawing a figure, a module evaluating - spans that moment), the renderer
// gives up and, the manager being restored by then, shows "Error displaying widget: model
// not found" for good: a dead figure or slider. Measured under two CPU burners: 2-4 such
// outputs on most visits of chapters 01 and 03 (benchmarks/results/dashboard_pages_after.md).
//
// What: before Voila's app starts, this plugin wraps WidgetRenderer.renderModel so that a
// renderer first waits (no deadline shorter than PATIENCE_MS, registry checked before the
// clock) until its model is registered or the manager has restored every model; then the
// original renderModel finds the model at once. A model that really is missing still
// fails as before, once the manager is restored.
//
// Also: anywidget (plotly's FigureWidget and so LiveFigure are anywidgets) gives each
// model 2 s of wall-clock time, from its creation, to load its module and initialise
// (`AbortSignal.timeout(2000)` in its runtime), then fails it with "[anywidget] Failed to
// initialize model.": a dead figure. LiveFigure's module is 2 KB and its initialize returns
// at once, but on a starved main thread the 2 s run out before the import's task runs
// (measured: 1 of 84 visits beside two CPU burners, chapter 09). While this file is
// evaluated (before any widget exists) it stretches that one deadline, recognised by its
// length and by a caller from anywidget's own files, to PATIENCE_MS; a module that fails to
// load still fails at once, with its own error.
//
// How it is loaded: this file is a hand-written module-federation container (the protocol
// JupyterLab's extension loader speaks: `init(shareScope)` and `get("./extension")`), so it
// needs no build step. `pflow-explore serve` puts share/jupyter on JUPYTER_PATH and names
// "pflow-explore" in Voila's extension allow-list.
var _JUPYTERLAB;
(function () {
  "use strict";
  var NAME = "pflow-explore";
  var RENDERER_PACKAGE = "@jupyter-widgets/jupyterlab-manager";
  var PATIENCE_MS = 120000;
  var POLL_MS = 50;
  var ANYWIDGET_DEADLINE_MS = 2000;
  var shareScope = null;

  // anywidget's model deadline (see the top of this file); window.__pflowStretchedDeadlines
  // counts the deadlines stretched (read by tests/test_dashboards.py)
  if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
    var timeout = AbortSignal.timeout;
    window.__pflowStretchedDeadlines = 0;
    AbortSignal.timeout = function (ms) {
      if (ms === ANYWIDGET_DEADLINE_MS && /\/anywidget\//.test(new Error().stack || "")) {
        window.__pflowStretchedDeadlines += 1;
        ms = PATIENCE_MS;
      }
      return timeout.call(AbortSignal, ms);
    };
  }

  function arrived(manager, id) {
    return manager.has_model(id) || manager.restoredStatus;
  }

  function waitForModel(manager, id) {
    return new Promise(function (resolve) {
      var start = Date.now();
      (function look() {
        if (arrived(manager, id) || Date.now() - start > PATIENCE_MS) resolve();
        else setTimeout(look, POLL_MS);
      })();
    });
  }

  function makePatient(WidgetRenderer) {
    var proto = WidgetRenderer && WidgetRenderer.prototype;
    if (!proto || typeof proto.renderModel !== "function" || proto.__pflowPatient) return false;
    var renderModel = proto.renderModel;
    proto.renderModel = async function (model) {
      try {
        var source = model && model.data && model.data[this.mimeType];
        var id = source && source.model_id;
        var manager = id && this._manager ? await this._manager.promise : null;
        if (manager && typeof manager.has_model === "function" && !arrived(manager, id)) {
          await waitForModel(manager, id);
        }
      } catch (error) {
        // the original below reports whatever is wrong
      }
      return renderModel.call(this, model);
    };
    proto.__pflowPatient = true;
    return true;
  }

  async function activate() {
    var versions = (shareScope && shareScope[RENDERER_PACKAGE]) || {};
    var entries = Object.keys(versions).map(function (v) {
      return versions[v];
    });
    // the versions a page already uses; all of them if none is marked (older runtimes)
    var used = entries.filter(function (entry) {
      return entry.loaded;
    });
    var patched = 0;
    for (var entry of used.length ? used : entries) {
      try {
        var factory = await entry.get();
        if (makePatient((typeof factory === "function" ? factory() : factory).WidgetRenderer)) {
          patched += 1;
        }
      } catch (error) {
        console.warn("[pflow-explore] could not reach ipywidgets' renderer:", error);
      }
    }
    // read by tests/test_dashboards.py: how many renderer classes now wait for their model
    window.__pflowPatientRenderers = patched;
    if (!patched) {
      console.warn("[pflow-explore] ipywidgets' renderer not found: widgets keep their 2 s wait");
    }
  }

  var plugin = {
    id: NAME + ":patient-widget-renderers",
    description: "Widget outputs wait for their model instead of giving up after 2 s.",
    autoStart: true,
    activate: activate,
  };

  // --- math below the fold waits for an idle moment -------------------------------------
  // Voila typesets every markdown cell's LaTeX (MathJax) in one go when its app starts:
  // 0.35-0.45 s of main thread on a chapter page, before any figure is drawn or any slider
  // message handled. Here cells on screen are typeset at once, the others one at a time
  // when the page is idle (or after IDLE_TIMEOUT_MS at the latest), in page order.
  var RENDERMIME_PACKAGE = "@jupyterlab/rendermime";
  var IDLE_TIMEOUT_MS = 4000;

  function later(callback) {
    if (typeof requestIdleCallback === "function") {
      requestIdleCallback(callback, { timeout: IDLE_TIMEOUT_MS });
    } else {
      setTimeout(callback, 50);
    }
  }

  function deferOffscreen(typesetter) {
    if (!typesetter || typeof typesetter.typeset !== "function" || typesetter.__pflowDeferred) {
      return false;
    }
    var typeset = typesetter.typeset.bind(typesetter);
    var arriving = []; // asked for in this task: sorted into now and later in one layout
    var waiting = []; // off screen: typeset one per idle moment, in page order
    var scheduled = false;
    window.__pflowMathWaiting = 0;
    function run(node) {
      if (!node.isConnected) return;
      Promise.resolve(typeset(node)).catch(function (error) {
        console.warn("[pflow-explore] math could not be typeset:", error);
      });
    }
    function schedule() {
      if (!scheduled && waiting.length) {
        scheduled = true;
        later(drain);
      }
    }
    function drain() {
      scheduled = false;
      var node = waiting.shift();
      window.__pflowMathWaiting = waiting.length;
      if (node) run(node);
      schedule();
    }
    function sort() {
      // every box is read before any cell is typeset: one layout, not one per cell
      var nodes = arriving.splice(0);
      var height = window.innerHeight;
      var now = nodes.filter(function (node) {
        if (!node.isConnected) return false;
        var box = node.getBoundingClientRect();
        var visible = box.height > 0 && box.bottom > 0 && box.top < height;
        if (!visible) waiting.push(node);
        return visible;
      });
      now.forEach(run);
      window.__pflowMathWaiting = waiting.length;
      schedule();
    }
    typesetter.typeset = function (node) {
      if (!node || !node.isConnected) return typeset(node);
      if (!arriving.length) queueMicrotask(sort);
      arriving.push(node);
      return Promise.resolve();
    };
    typesetter.__pflowDeferred = true;
    return true;
  }

  async function rendermimeToken() {
    var versions = (shareScope && shareScope[RENDERMIME_PACKAGE]) || {};
    for (var v of Object.keys(versions)) {
      try {
        var factory = await versions[v].get();
        var module = typeof factory === "function" ? factory() : factory;
        if (module && module.IRenderMimeRegistry) return module.IRenderMimeRegistry;
      } catch (error) {
        // try the next version
      }
    }
    return null;
  }

  function mathPlugin(token) {
    return {
      id: NAME + ":math-when-idle",
      description: "LaTeX below the fold is typeset when the page is idle.",
      autoStart: true,
      optional: [token],
      activate: function (app, registry) {
        window.__pflowMathDeferred = Boolean(registry && deferOffscreen(registry.latexTypesetter));
      },
    };
  }

  _JUPYTERLAB = window._JUPYTERLAB = window._JUPYTERLAB || {};
  _JUPYTERLAB[NAME] = {
    init: function (scope) {
      shareScope = scope;
    },
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error('Module "' + module + '" does not exist in ' + NAME));
      }
      return rendermimeToken().then(function (token) {
        var plugins = token ? [plugin, mathPlugin(token)] : [plugin];
        return function () {
          return { __esModule: true, default: plugins };
        };
      });
    },
  };
})();
