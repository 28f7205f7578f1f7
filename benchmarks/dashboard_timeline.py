"""Where a preheated dashboard page's first seconds go, in the page's own clock.

For each page asked for (fresh browser context, empty cache, preheated server at
PFLOW_SCALE=cpu, the server quiet before each visit): the navigation's milestones (HTML
received, DOMContentLoaded, ``load``: Voila starts its app only then), the first websocket
frame sent and received (the kernel connection, the widget state), the first slider in the
DOM, the first figure drawn and the last, the first slider move that changed a figure (as
``dashboard_pages.py`` measures it), and the page's main-thread long tasks (> 50 ms) in each
phase. It says which phase to attack for the 3 s preheated target (issue 11).

    .venv/bin/python benchmarks/dashboard_timeline.py [--pages 00,02,04] [--label after]

Writes benchmarks/results/dashboard_timeline_<label>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from dashboard_pages import CHROMIUM, Serve, _slider_works, _wait_for, pages
from dashboard_tti import load_average
from machine import machine
from playwright.async_api import async_playwright

from pflow_explore.figures_export import CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[1]

# stamps in the page's clock (performance.now(), ms since navigation): first slider, first
# and last figure drawn (each drawn figure adds plotly's .main-svg layers), long tasks
MARKS_JS = """
window.__pflowT = {figures: []};
const mark = (k) => { if (!(k in window.__pflowT)) window.__pflowT[k] = performance.now(); };
new MutationObserver(() => {
  if (document.querySelector(".widget-slider")) mark("slider");
  const drawn = document.querySelectorAll(".js-plotly-plot .main-svg").length;
  const f = window.__pflowT.figures;
  if (drawn && (!f.length || f[f.length - 1][1] !== drawn)) f.push([performance.now(), drawn]);
}).observe(document, {subtree: true, childList: true});
window.__pflowLong = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__pflowLong.push([e.startTime, e.duration]);
}).observe({type: "longtask", buffered: true});
"""
PHASES = ("HTML", "to load", "load to kernel", "kernel to slider", "slider to working")


async def visit(browser, url: str) -> dict:  # noqa: ANN001
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    page = await context.new_page()
    await page.add_init_script(MARKS_JS)
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    frames: dict[str, list[float]] = {"sent": [], "received": []}
    first_request: list[float] = []
    cdp.on("Network.requestWillBeSent", lambda e: first_request.append(e["timestamp"]))
    cdp.on("Network.webSocketFrameSent", lambda e: frames["sent"].append(e["timestamp"]))
    cdp.on("Network.webSocketFrameReceived", lambda e: frames["received"].append(e["timestamp"]))
    start = time.perf_counter()
    await page.goto(url, timeout=120_000)
    await _wait_for(page, ".js-plotly-plot .main-svg", 120)
    working = await _slider_works(page, 30)
    working_ms = (working - start) * 1000 if working is not None else float("nan")
    await page.wait_for_timeout(1500)  # the figures below the first have drawn
    nav = await page.evaluate(
        "JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))"
    )
    marks = await page.evaluate("window.__pflowT")
    longs = await page.evaluate("window.__pflowLong")
    await page.close(run_before_unload=True)
    await context.close()
    # CDP timestamps (s, monotonic) -> the page's clock: the navigation request is at ~0
    zero = first_request[0] if first_request else 0.0
    ws_sent = (frames["sent"][0] - zero) * 1000 if frames["sent"] else float("nan")
    ws_received = (frames["received"][0] - zero) * 1000 if frames["received"] else float("nan")
    figures = marks.get("figures", [])
    row = {
        "html": nav["responseEnd"],
        "load": nav["loadEventStart"],
        "ws_sent": ws_sent,
        "ws_received": ws_received,
        "slider": marks.get("slider", float("nan")),
        "first_figure": figures[0][0] if figures else float("nan"),
        "last_figure": figures[-1][0] if figures else float("nan"),
        "working": working_ms,
    }
    bounds = [0, row["html"], row["load"], row["ws_received"], row["slider"], row["working"]]
    row["long"] = [
        sum(
            min(s + d, hi) - max(s, lo)
            for s, d in longs
            if s < hi and s + d > lo and lo == lo and hi == hi
        )
        for lo, hi in zip(bounds, bounds[1:], strict=False)
    ]
    return row


async def run(args: argparse.Namespace) -> list[tuple[str, dict]]:
    wanted = [p.strip() for p in args.pages.split(",") if p.strip()]
    names = [n for n in pages(ROOT) if any(n.startswith(w) for w in wanted)]
    server = Serve(ROOT, preheat=True)
    rows = []
    try:
        print(f"server quiet after {server.wait_quiet():.0f} s", flush=True)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            for name in names:
                row = await visit(browser, f"{server.base}/voila/render/{name}")
                rows.append((name, row))
                print(name, {k: v for k, v in row.items() if k != "long"}, flush=True)
                server.wait_quiet()  # the used kernel's replacement has run its notebook
            await browser.close()
    finally:
        server.stop()
    return rows


def report(rows: list[tuple[str, dict]], label: str, load_before: str) -> str:
    lines = [
        f"# Dashboard page timeline ({label})",
        "",
        "Written by `benchmarks/dashboard_timeline.py`: one visit per page, preheated server at "
        "PFLOW_SCALE=cpu, fresh browser context (empty cache), server quiet before each "
        "visit; browser and server on the same machine. Times in ms since navigation, in the "
        "page's clock. *load*: the page's load event (Voila starts its app, the kernel "
        "connection and the widgets, only then); *kernel*: first websocket frame received "
        "(the kernel's answer, widget state follows); *slider*: first slider in the DOM; "
        "*figures*: first and last figure drawn; *working*: the first slider move that "
        "changed a figure (`dashboard_pages.py`'s measure; presses repeat until one does). "
        "Long tasks: main-thread tasks over 50 ms, their ms within each phase.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before: {load_before}",
        "",
        "## Pages",
        "",
        "| page | HTML | load | kernel | slider | figures: first - last | working | long tasks "
        "ms: " + " / ".join(PHASES) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['html']:.0f} | {r['load']:.0f} | {r['ws_received']:.0f} | "
            f"{r['slider']:.0f} | {r['first_figure']:.0f} - {r['last_figure']:.0f} | "
            f"{r['working']:.0f} | " + " / ".join(f"{x:.0f}" for x in r["long"]) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default="00,01,02,04,09,12")
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    load_before = load_average()
    rows = asyncio.run(run(args))
    out = ROOT / "benchmarks" / "results" / f"dashboard_timeline_{args.label}.md"
    out.write_text(report(rows, args.label, load_before))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
