"""How long a page spends loading plotly's widget bundle: plotly's own (every trace type)
against the lean one of ``make bundle`` (js/plotly-bundle: the trace types the course draws).

For each bundle, ``--runs`` fresh Chromium pages (empty cache, alternating between the two)
each ``import()`` the bundle from a local HTTP server; the time is from the import call to
the module's evaluation (fetch from localhost + parse + evaluate, all on the page's main
thread, which is what a dashboard page waits for before Voila starts its widgets). Also
checks that both export plotly's FigureModel and FigureView. Writes
results/plotly_bundle.md.

    python benchmarks/plotly_bundle.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from dashboard_tti import load_average  # noqa: E402
from machine import machine  # noqa: E402

from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM, ENV_CHROMIUM  # noqa: E402
from pflow_explore.widgets import live_figure as lf  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "plotly_bundle.md"

IMPORT_JS = """async (url) => {
  const t0 = performance.now();
  const m = await import(url);
  return [performance.now() - t0, "FigureModel" in m && "FigureView" in m];
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


async def measure(folder: Path, names: list[str], runs: int) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    times: dict[str, list[float]] = {n: [] for n in names}
    chromium = os.environ.get(ENV_CHROMIUM, DEFAULT_CHROMIUM)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium, args=list(CHROMIUM_FLAGS), headless=True
            )
            for _ in range(runs):
                for name in names:
                    context = await browser.new_context()
                    page = await context.new_page()
                    await page.goto(f"{base}/blank.html")
                    ms, exports = await page.evaluate(IMPORT_JS, f"/{name}")
                    if not exports:
                        raise RuntimeError(f"{name} does not export FigureModel and FigureView")
                    times[name].append(ms)
                    await context.close()
            await browser.close()
    finally:
        server.shutdown()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    lean_info = lf._lean_info()
    if lean_info is None:
        sys.exit("no fresh lean bundle: run `make bundle` first")
    bundles = {
        "plotly's own (widgetbundle.js)": lf.plotly_own_bundle(),
        "lean (make bundle)": lf.LEAN_DIR / lean_info["file"],
    }
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "blank.html").write_text("<!doctype html><html><body></body></html>")
        names = []
        for i, path in enumerate(bundles.values()):
            names.append(f"bundle{i}.js")
            shutil.copyfile(path, folder / names[-1])
        times = asyncio.run(measure(folder, names, args.runs))
    lines = [
        "# plotly's widget bundle: load and evaluate in a page",
        "",
        f"Written by `benchmarks/plotly_bundle.py --runs {args.runs}`. Each row: "
        f"{args.runs} fresh Chromium pages (empty cache), `import()` of the bundle from a "
        "local server, to its evaluation. The lean bundle is plotly's own front end with a "
        f"plotly.js {lean_info['plotly_js']} of the trace types "
        f"{', '.join(lean_info['traces'])} (js/plotly-bundle/build.js).",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before / after: {load_before}; {load_average()}",
        "",
        "| bundle | MB | import ms: median | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for (label, path), name in zip(bundles.items(), names, strict=True):
        t = times[name]
        mb = path.stat().st_size / 1e6
        lines.append(
            f"| {label} | {mb:.2f} | {statistics.median(t):.0f} | {min(t):.0f} | {max(t):.0f} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
