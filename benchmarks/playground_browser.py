"""The playground in a real browser: does its step slider stay live while a model trains?

Voila serves notebooks/playground.ipynb as `pflow-explore serve` does (scale cpu, no
preheating), headless Chromium opens it, trains the default method once, then measures the
slider's latency: from an ArrowRight key press on the explorer's step slider to the changed
data of the explorer's figure in the DOM (the figure the first idle press changed; the live
loss curve, which also changes during training, is not watched). First with the kernel idle,
then while a second training of the same method runs in the playground's background
thread (Train pressed again, presses until the status says it finished).

    .venv/bin/python benchmarks/playground_browser.py [--presses 12]

Writes benchmarks/results/playground_browser.md. The browser, Voila and the kernel share
the machine's cores (as on a laptop serving itself).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dashboard_tti import CHROMIUM, load_average, voila
from machine import machine

from pflow_explore.figures_export import CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "playground_browser.md"
PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
  el => (el.data || []).map(t => ['x', 'y'].map(k => {
    const a = t[k]; if (!a) return '';
    return a.length + ':' + Array.prototype.slice.call(a, 0, 16).join(',');
  }).join('|')).join(';'))"""


def press_latency(page, watch: int | None, timeout_s: float = 15.0) -> tuple[float, int]:  # noqa: ANN001
    """Seconds from one ArrowRight on the first slider to a change of plot ``watch`` (any
    plot when None) and the index of the plot that changed; nan on timeout."""
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    before = page.evaluate(PLOTS_JS)
    start = time.perf_counter()
    page.keyboard.press("ArrowRight")
    while time.perf_counter() - start < timeout_s:
        now = page.evaluate(PLOTS_JS)
        changed = [i for i, (a, b) in enumerate(zip(before, now, strict=False)) if a != b]
        hit = [i for i in changed if watch is None or i == watch]
        if hit:
            return time.perf_counter() - start, hit[0]
        page.wait_for_timeout(5)
    return float("nan"), -1


def status(page) -> str:  # noqa: ANN001
    return page.locator(".pflow-status").first.inner_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=12)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load_before = load_average()
    with voila("cpu", preheat=False) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{server.base}/voila/render/playground.ipynb", timeout=180_000)
        page.wait_for_selector(".pflow-train", timeout=180_000)
        train = page.locator(".pflow-train")
        start = time.perf_counter()
        train.click()
        page.wait_for_selector(".pflow-status:has-text('energy distance')", timeout=180_000)
        first_train = time.perf_counter() - start
        page.locator(".widget-slider .noUi-handle").first.focus()
        page.keyboard.press("Home")
        page.wait_for_timeout(1000)
        idle, watch = [], None
        for _ in range(args.presses):
            seconds, index = press_latency(page, watch)
            watch = index if watch is None and index >= 0 else watch
            idle.append(seconds)
        page.keyboard.press("Home")
        page.wait_for_timeout(1000)
        train.click()  # the second training: the explorer keeps showing the first model
        page.wait_for_timeout(300)
        busy, training_s = [], time.perf_counter()
        while "energy distance" not in status(page) and len(busy) < 200:
            seconds, _ = press_latency(page, watch)
            busy.append(seconds)
        training_s = time.perf_counter() - training_s
        page.close()
        browser.close()
    load_after = load_average()

    def row(name: str, xs: list[float]) -> str:
        ok = [x for x in xs if x == x]
        med = statistics.median(ok) * 1000 if ok else float("nan")
        worst = max(ok) * 1000 if ok else float("nan")
        return f"| {name} | {len(xs)} | {len(xs) - len(ok)} | {med:.0f} | {worst:.0f} |"

    lines = [
        "# Playground in the browser: the step slider while a model trains",
        "",
        "Written by `benchmarks/playground_browser.py` (Voila as `pflow-explore serve` starts it,",
        "scale cpu, headless Chromium on the same machine). Latency: from an ArrowRight press on",
        "the explorer's step slider to the changed data of the explorer's figure in the DOM.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1/5/15 min) before / after: {load_before}; {load_after}",
        "",
        "## Slider latency (ms)",
        "",
        "| kernel | presses | lost (no change in 15 s) | median | worst |",
        "|---|---:|---:|---:|---:|",
        row("idle", idle),
        row("training in the background thread", busy),
        "",
        f"First training (default method, from Train to samples on the page): {first_train:.1f} s; "
        f"the second training, during which the presses ran: {training_s:.1f} s.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
