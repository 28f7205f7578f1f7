"""How long plotly.js holds a page's main thread to redraw a figure after a slider move.

A dashboard slider's latency is key press -> websocket -> kernel -> websocket -> plotly.js
redraw. Measured in Chromium on the 2-core machine (benchmarks/dashboard_pages.py and the
split below), the kernel's share was about 10 ms and the websocket's 30-40 ms, while one
long task of 230-260 ms redrew chapter 04's jump figure. This benchmark measures that
redraw on its own: scatter figures of N markers (2D, SVG, as the course draws them) in
headless Chromium, the median time of ``Plotly.restyle`` giving one trace new x/y (what a
slider move sends), of ``Plotly.relayout`` changing the title, and of one changing an
annotation's text (what make_subplots' subplot titles are); then the jump explorer's
figure of chapter 04 as one figure of two panels (2,100 markers) against its jump panel
alone (900 markers), which is what a t move redraws since the panels are two figures.

plotly.js is the plotly.min.js that the installed plotly ships (the same plotly.js as its
widget bundle). Writes results/plotly_redraw.md.

    python benchmarks/plotly_redraw.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

import plotly

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from dashboard_tti import load_average  # noqa: E402
from machine import machine  # noqa: E402

from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM, ENV_CHROMIUM  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "plotly_redraw.md"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
MARKERS = (250, 500, 1000, 2000, 4000)

# traces: [n markers, subplot]; one "lines" trace of n segments per panel as the widgets draw
TIME_JS = """async ({traces, repeats, twoPanels}) => {
  const gd = document.createElement('div');
  gd.style.width = '940px';
  document.body.replaceChildren(gd);
  let seed = 1;
  const rand = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 - 0.5; };
  const cloud = (n) => Array.from({length: n}, () => 4 * rand());
  const data = traces.map(([n, panel, mode]) => ({
    type: 'scatter', mode, x: cloud(n), y: cloud(n), hoverinfo: 'skip',
    marker: {size: 4}, line: {width: 1},
    xaxis: panel === 2 ? 'x2' : 'x', yaxis: panel === 2 ? 'y2' : 'y',
  }));
  const layout = {height: 460, width: 940, showlegend: false, title: {text: 'start'},
    annotations: [{text: 'start', x: 0.2, y: 1.05, xref: 'paper', yref: 'paper',
                   showarrow: false}],
    xaxis: {range: [-4, 4], domain: twoPanels ? [0, 0.47] : [0, 1]},
    yaxis: {range: [-4, 4]}};
  if (twoPanels) {
    layout.xaxis2 = {range: [-4, 4], domain: [0.53, 1], anchor: 'y2'};
    layout.yaxis2 = {range: [-4, 4], anchor: 'x2'};
  }
  await Plotly.newPlot(gd, data, layout);
  const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const restyle = [], relayout = [], annotation = [];
  for (let i = 0; i < repeats; i++) {
    const n = traces[0][0];
    let t = performance.now();
    await Plotly.restyle(gd, {x: [cloud(n)], y: [cloud(n)]}, [0]);
    restyle.push(performance.now() - t);
    t = performance.now();
    await Plotly.relayout(gd, {'title.text': 'move ' + i});
    relayout.push(performance.now() - t);
    t = performance.now();
    await Plotly.relayout(gd, {'annotations[0].text': 'move ' + i});
    annotation.push(performance.now() - t);
  }
  return {restyle: median(restyle), relayout: median(relayout), annotation: median(annotation)};
}"""


def jump_explorer(both: bool) -> list[list]:
    """Chapter 04's jump explorer at cpu scale: jump panel x_t, segments, exact G, learned G
    (300 each); sampling panel data (600), paths, exact, learned (300 each)."""
    jump = [[300, 1, "markers"], [600, 1, "lines"], [300, 1, "markers"], [300, 1, "markers"]]
    sampling = [[600, 2, "markers"], [120, 2, "lines"], [300, 2, "markers"], [300, 2, "markers"]]
    return jump + sampling if both else jump


async def run(repeats: int) -> dict:
    from playwright.async_api import async_playwright

    chromium = os.environ.get(ENV_CHROMIUM, DEFAULT_CHROMIUM)
    out: dict = {"markers": {}, "jump": {}}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=list(CHROMIUM_FLAGS), headless=True
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.set_content("<html><body></body></html>")
        await page.add_script_tag(path=str(PLOTLY_JS))
        for n in MARKERS:  # four marker traces of n / 4 each, one panel
            traces = [[n // 4, 1, "markers"]] * 4
            arg = {"traces": traces, "repeats": repeats, "twoPanels": False}
            out["markers"][n] = await page.evaluate(TIME_JS, arg)
            print(n, json.dumps(out["markers"][n]), flush=True)
        for name, both in (("one figure, both panels", True), ("jump panel alone", False)):
            arg = {"traces": jump_explorer(both), "repeats": repeats, "twoPanels": both}
            out["jump"][name] = await page.evaluate(TIME_JS, arg)
            print(name, json.dumps(out["jump"][name]), flush=True)
        await browser.close()
    return out


def report(out: dict, load_before: str, repeats: int) -> str:
    per = [v["restyle"] / n * 1000 for n, v in out["markers"].items() if n >= 1000]
    lines = [
        "# plotly.js redraw after a slider move",
        "",
        "Written by `benchmarks/plotly_redraw.py`: headless Chromium (software rendering, as "
        "in the dashboard tests), plotly.js from the installed plotly; median of "
        f"{repeats} redraws each. restyle: one trace gets new x/y (a slider move), which "
        "redraws every trace of the figure; title relayout: the figure's title changes; "
        "annotation relayout: an annotation's text changes (make_subplots' subplot titles "
        "are annotations).",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before / after: {load_before}; {load_average()}",
        "",
        "## Scatter markers in one figure",
        "",
        "| markers | restyle ms | title relayout ms | annotation relayout ms |",
        "|---:|---:|---:|---:|",
    ]
    for n, v in out["markers"].items():
        lines.append(f"| {n} | {v['restyle']:.0f} | {v['relayout']:.0f} | {v['annotation']:.0f} |")
    lines += [
        "",
        f"About {statistics.median(per):.0f} us a marker (median over 1,000 markers and more).",
        "",
        "## Chapter 04's jump explorer",
        "",
        "| figure | restyle ms | title relayout ms | annotation relayout ms |",
        "|---|---:|---:|---:|",
    ]
    for name, v in out["jump"].items():
        lines.append(
            f"| {name} | {v['restyle']:.0f} | {v['relayout']:.0f} | {v['annotation']:.0f} |"
        )
    lines += [
        "",
        "A slider's figure change in a dashboard also waits for the websocket and the "
        "kernel: 30-40 ms there and back and about 10 ms in the kernel for chapter 04's t "
        "slider in a websocket trace of one page (Chrome DevTools protocol frame times and "
        "the kernel's message dates, 2026-12-06). To stay under 150 ms, a figure that a "
        "slider redraws should hold about 1,000 markers or fewer, and panels that change "
        "apart should be figures apart.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    load_before = load_average()
    out = asyncio.run(run(args.repeats))
    RESULTS.write_text(report(out, load_before, args.repeats))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
