// plotly's FigureWidget bundle, with a plotly.js holding only the trace types in traces.json.
//
//   node build.js <plotly's widgetbundle.js> <out dir>
//
// plotly.py ships its FigureWidget front end as one esbuild ESM file, widgetbundle.js, with
// the whole plotly.js (every trace type: 3D, maps, WebGL) inside one CommonJS wrapper.
// Evaluating it costs a page about 1.4 s of main thread on a 2-core laptop before any
// figure can draw (benchmarks/results/plotly_bundle.md). This script keeps plotly's front
// end as it is, byte for byte, and swaps only the body of that wrapper for a plotly.js
// built here from the same plotly.js version with the trace types the course draws:
//   1. esbuild builds `plotly.js/lib/core` + the traces of traces.json as CommonJS;
//   2. acorn parses widgetbundle.js, finds the CommonJS wrapper that holds plotly.js (the
//      largest one; checked to carry plotly.js's version string) and replaces its function
//      with `(exports, module) => { <the lean plotly.js> }`;
//   3. the result is parsed again and written as <out>/widgetbundle-lean.js, with
//      <out>/widgetbundle-lean.json saying what it was built from (the sha256 of
//      widgetbundle.js: pflow_explore.widgets.live_figure serves the lean file only while
//      plotly's installed bundle is that one).
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const acorn = require("acorn");
const esbuild = require("esbuild");
const { environmentPlugin } = require("esbuild-plugin-environment");
const InlineCSSPlugin = require("esbuild-plugin-inline-css");

const PLOTLY_JS = require("plotly.js/package.json").version;

function fail(message) {
  console.error(`build.js: ${message}`);
  process.exit(1);
}

async function leanPlotly(traces) {
  const lines = traces
    .filter((t) => t !== "scatter") // core registers scatter
    .map((t) => `  require("plotly.js/lib/${t}"),`);
  const entry = [
    'var Plotly = require("plotly.js/lib/core");',
    "Plotly.register([",
    ...lines,
    "]);",
    "module.exports = Plotly;",
  ].join("\n");
  const result = await esbuild.build({
    stdin: { contents: entry, resolveDir: __dirname, sourcefile: "lean-plotly.js" },
    bundle: true,
    format: "cjs",
    minify: true,
    write: false,
    target: "es2016",
    // as plotly.js's own esbuild-config.js (no glsl: the WebGL traces are left out)
    plugins: [InlineCSSPlugin(), environmentPlugin({ NODE_DEBUG: false })],
    alias: { stream: "stream-browserify" },
    define: { global: "window", "define.amd": "false" },
    logLevel: "error",
  });
  return result.outputFiles[0].text;
}

function plotlyWrapper(source) {
  const ast = acorn.parse(source, { ecmaVersion: "latest", sourceType: "module" });
  let best = null;
  for (const node of ast.body) {
    if (node.type !== "VariableDeclaration") continue;
    for (const d of node.declarations) {
      const init = d.init;
      if (!init || init.type !== "CallExpression" || init.arguments.length !== 1) continue;
      const fn = init.arguments[0];
      if (!/FunctionExpression$/.test(fn.type) || fn.params.length !== 2) continue;
      if (!best || fn.end - fn.start > best.end - best.start) best = fn;
    }
  }
  if (!best) fail("no CommonJS wrapper found in widgetbundle.js");
  const text = source.slice(best.start, best.end);
  if (!text.includes(`version="${PLOTLY_JS}"`)) {
    const found = /version="(\d+\.\d+\.\d+)"/.exec(text);
    fail(
      `widgetbundle.js carries plotly.js ${found ? found[1] : "(unknown)"}, this build ` +
        `pins ${PLOTLY_JS}: set plotly.js in package.json to that version and npm install`,
    );
  }
  return best;
}

async function main() {
  const [widget, outDir] = process.argv.slice(2);
  if (!widget || !outDir) fail("usage: node build.js <widgetbundle.js> <out dir>");
  const traces = JSON.parse(fs.readFileSync(path.join(__dirname, "traces.json"), "utf8"));
  const source = fs.readFileSync(widget, "utf8");
  const wrapper = plotlyWrapper(source);
  const lean = await leanPlotly(traces);
  const out =
    source.slice(0, wrapper.start) + "(exports,module)=>{" + lean + "\n}" + source.slice(wrapper.end);
  acorn.parse(out, { ecmaVersion: "latest", sourceType: "module" });
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, "widgetbundle-lean.js"), out);
  const info = {
    file: "widgetbundle-lean.js",
    source: path.resolve(widget),
    source_sha256: crypto.createHash("sha256").update(source).digest("hex"),
    plotly_js: PLOTLY_JS,
    traces,
    bytes: { source: Buffer.byteLength(source), lean: Buffer.byteLength(out) },
  };
  fs.writeFileSync(path.join(outDir, "widgetbundle-lean.json"), JSON.stringify(info, null, 2) + "\n");
  const mb = (n) => (n / 1e6).toFixed(2);
  console.log(
    `plotly widget bundle: ${mb(info.bytes.source)} MB -> ${mb(info.bytes.lean)} MB ` +
      `(plotly.js ${PLOTLY_JS}: ${traces.join(", ")}) in ${outDir}`,
  );
}

main().catch((err) => fail(err.stack || String(err)));
