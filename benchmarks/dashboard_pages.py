"""Every dashboard page in headless Chromium: bytes, time to first plot and to a working
slider, slider latency, a stress walk beside two CPU burners, and 8 sessions at once.

For one server (`pflow-explore serve` of a checkout, PFLOW_SCALE=cpu, started plain or
preheated) and every page (the landing page and each chapter):
- bytes: JavaScript over HTTP (decoded, and as transferred: gzip where the server
  compresses), bytes received over the websocket (widget state, and with plotly's
  FigureWidget each figure's copy of plotly's bundle); fresh browser context, empty cache;
- time from navigation to the first plotly plot drawn, and (waited for side by side: a
  page's controls now come before its figures) to the first slider move that changed the
  data of a figure drawn before the press, confirmed by the next press changing one again
  (each press waits up to PRESS_WAIT_S for its change; until 2026-12-06 presses repeated
  every second and any change counted, a figure drawn late included, and the slider was
  tried only once a plot was drawn);
- slider latency: key press -> the figures it changed redrawn and painted (plotly_afterplot,
  next animation frame; the page's clock), median of several moves of the first slider,
  right after the slider first worked (the page may still be drawing) and once it has
  settled (SETTLE_S later);
- stress walk (preheated server): two busy-loop Python processes beside the server, every
  page opened WALKS times in a row by one browser (a new tab per visit, closed as a reader
  closes it, which shuts its kernel down; the used kernels are replaced while the walk goes
  on): dead sliders (no figure change
  within 30 s of the first working-slider attempt), pages with console errors, pages showing
  a failure line;
- 8 sessions opened at the same moment on one chapter: time to a working slider, p50/p95.

    .venv/bin/python benchmarks/dashboard_pages.py [--repo DIR] [--label after] [--walks 20]
        [--parts plain,preheated,cached,walk,concurrent] [--pages 00,04,index.ipynb]
        [--repeat 3]

``--repo DIR`` serves another checkout (e.g. a `git worktree` of an earlier commit, for
"before" numbers) with this venv. Writes benchmarks/results/dashboard_pages_<label>.md.
The browser runs on the same machine as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dashboard_tti import FIGURE_FINGERPRINT_JS, free_port, load_average
from machine import machine

from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM, ENV_CHROMIUM
from pflow_explore.voila_app import stop_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get(ENV_CHROMIUM, DEFAULT_CHROMIUM)
DEAD_AFTER_S = 30.0
SETTLE_S = 5.0  # after the first latency moves, before the settled ones
PARTS = "plain,preheated,cached,walk,concurrent"
IGNORED_CONSOLE = ("Unsatisfied version", "No satisfying version")  # warnings, not errors


class Serve:
    """`pflow-explore serve` of the checkout ``repo`` on a free port (stopped with its kernels)."""

    def __init__(self, repo: Path, preheat: bool, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PFLOW_SCALE="cpu", PYTHONPATH=str(repo))
        args = [sys.executable, "-m", "pflow_explore.cli", "serve", "--port", str(self.port)]
        self.log = Path(f"/tmp/dashboard-pages-{self.port}.log")
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                args + ([] if preheat else ["--no-preheat"]) + list(extra),
                cwd=repo,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(self.base + "/voila/tree", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log = self.log.read_text()[-2000:]
                    raise RuntimeError(f"serve did not start:\n{log}") from None
                time.sleep(0.3)

    def wait_quiet(self, timeout_s: float = 600) -> float:
        """Seconds until the server and its kernels used < 15 % of a core for 2 s."""
        import psutil

        start, quiet_since = time.perf_counter(), None
        while time.perf_counter() - start < timeout_s:
            try:
                procs = [psutil.Process(self.proc.pid)]
                procs += procs[0].children(recursive=True)
                before = [p.cpu_times() for p in procs]
                time.sleep(0.5)
                used = sum(
                    a.user + a.system - b.user - b.system
                    for a, b in zip([p.cpu_times() for p in procs], before, strict=True)
                )
            except psutil.NoSuchProcess:
                continue
            if used / 0.5 < 0.15:
                quiet_since = quiet_since or time.perf_counter()
                if time.perf_counter() - quiet_since >= 2:
                    return time.perf_counter() - start
            else:
                quiet_since = None
        return float("nan")

    def stop(self) -> None:
        stop_server(self.proc)


@dataclass
class Visit:
    page: str
    plot_s: float = float("nan")
    interactive_s: float = float("nan")
    latency_ms: list[float] = field(default_factory=list)
    settled_ms: list[float] = field(default_factory=list)
    js_bytes: int = 0
    js_transferred: int = 0
    ws_bytes: int = 0
    console: list[str] = field(default_factory=list)
    failure_shown: bool = False
    error: str = ""
    diagnosis: str = ""  # what a dead page showed (DIAGNOSIS_JS)

    @property
    def dead(self) -> bool:
        return self.page != "index.ipynb" and not self.interactive_s == self.interactive_s


# Each drawn figure's data (lengths and first values of x, y, z), keyed by the element: a figure
# drawn after the press (a late draw, or a cell's output still arriving under progressive
# rendering) is not a change of the figures that were there.
KEYED_FIGURES_JS = (
    """() => {
  window.__pflowFigures = window.__pflowFigures || 0;
  const out = {};
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.data) continue;
    if (!el.dataset.pflowFigure) el.dataset.pflowFigure = String(++window.__pflowFigures);
    out[el.dataset.pflowFigure] = """
    + FIGURE_FINGERPRINT_JS
    + """;
  }
  return out;
}"""
)
# The first slider's handle, focused: the direction a press can move it. Through page.evaluate,
# not a Playwright locator: a locator's actions wait for the element on animation frames too,
# and took 0.5 s on a page drawing its figures.
HANDLE = ".widget-slider .noUi-handle"
FOCUS_FIRST_HANDLE_JS = f"""() => {{
  const h = document.querySelector({HANDLE!r});
  h.focus();
  return Number(h.getAttribute('aria-valuenow')) >=
    Number(h.getAttribute('aria-valuemax')) ? 'ArrowLeft' : 'ArrowRight';
}}"""
PRESS_WAIT_S = 1.0  # how long a press's change is waited for before the next press
# Waits poll in the page every POLL_MS with a timer, not with Playwright's selector waits: those
# poll on animation frames, which a page drawing its figures one task after another starves
# (measured: a figure drawn at 2.3 s seen at 4.0 s), so the first plot and the first press
# came late by the benchmark's own doing.
POLL_MS = 25


async def _wait_for(page, selector: str, timeout_s: float) -> None:  # noqa: ANN001
    await page.wait_for_function(
        f"() => !!document.querySelector({selector!r})",
        polling=POLL_MS,
        timeout=timeout_s * 1000,
    )


async def _fingerprint(page) -> dict[str, str]:  # noqa: ANN001
    return await page.evaluate(KEYED_FIGURES_JS)


def _changed(before: dict[str, str], now: dict[str, str]) -> bool:
    return any(key in now and now[key] != value for key, value in before.items())


# What a page whose slider never moved a figure shows: its figures (drawn, with a size, still
# "loading"), sliders, outputs holding an error, and the slider's own label and value
DIAGNOSIS_JS = """() => {
  const n = (sel) => document.querySelectorAll(sel).length;
  const sized = Array.from(document.querySelectorAll(".js-plotly-plot"))
    .filter((el) => el.getBoundingClientRect().height > 0).length;
  const slider = document.querySelector(".widget-slider");
  const label = slider ? slider.innerText.replace(/\\s+/g, " ").slice(0, 60) : "";
  const errors = Array.from(document.querySelectorAll(".jp-OutputArea-output"))
    .map((el) => el.innerText).filter((t) => /Error|Traceback/.test(t))
    .map((t) => t.slice(0, 120).replace(/\\s+/g, " "));
  return `plots ${n(".js-plotly-plot")} (${sized} sized), loading ${n(".pflow-figure-loading")}, ` +
    `sliders ${n(".widget-slider")} (first: ${label}), error outputs ${errors.length}` +
    (errors.length ? `: ${errors[0]}` : "");
}"""


async def _slider_works(page, timeout_s: float) -> float | None:  # noqa: ANN001
    """When the first slider started to move a figure: ``time.perf_counter()`` at the first
    change of a figure that was drawn before a key press on the slider, confirmed by the next
    press (the other way) changing one again; None if that did not happen in ``timeout_s``.

    A press whose change has not come within PRESS_WAIT_S is followed by one the other way
    (the time then counts from the next change); a change that no press caused (a late
    draw, an output arriving) is not taken for a working slider unless the next press moves
    a figure too."""
    await _wait_for(page, HANDLE, timeout_s)
    deadline = time.perf_counter() + timeout_s
    key = None
    first = None
    while time.perf_counter() < deadline:
        before = await _fingerprint(page)
        towards = await page.evaluate(FOCUS_FIRST_HANDLE_JS)
        key = key or towards
        await page.keyboard.press(key)
        key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
        end = min(deadline, time.perf_counter() + PRESS_WAIT_S)
        changed = None
        while time.perf_counter() < end:
            if _changed(before, await _fingerprint(page)):
                changed = time.perf_counter()
                break
            await asyncio.sleep(0.025)
        if changed is None:
            first = None
        elif first is None:
            first = changed
        else:
            return first
    return None


# In the page's own clock: each key press, and each redraw of a plotly figure (plotly_afterplot),
# stamped at the next animation frame, when the new picture is painted.
REDRAW_HOOK_JS = """() => {
  if (!window.__pflowKeys) {
    window.__pflowKeys = []; window.__pflowDrawn = [];
    document.addEventListener("keydown", () => window.__pflowKeys.push(performance.now()), true);
  }
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    if (gd.__pflowHooked || !gd.on) continue;
    gd.__pflowHooked = true;
    gd.on("plotly_afterplot", () =>
      requestAnimationFrame(() => window.__pflowDrawn.push(performance.now())));
  }
  window.__pflowKeys.length = 0; window.__pflowDrawn.length = 0;
}"""
QUIET_MS = 300  # a move's redraws are over when none followed the last for this long


async def _latency_ms(page, moves: int = 6) -> list[float]:  # noqa: ANN001
    """Key press -> the last figure redraw it caused, painted (page clock), for ``moves``
    alternating moves of the first slider.

    Measured inside the page: the press's keydown and plotly's ``plotly_afterplot`` of every
    figure, stamped at the next animation frame. (Until 2026-12-06 this polled every frame
    for a change in the JSON of all figures' data: that polling took 50-90 ms of main thread
    per frame on the pages with the most points, and plotly sets a figure's data before it
    redraws, so a poll could see the change before the new picture existed.)"""
    out = []
    handle = page.locator(".widget-slider .noUi-handle").first
    for i in range(moves):
        await handle.focus()
        await page.evaluate(REDRAW_HOOK_JS)
        await page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
        try:
            await page.wait_for_function("window.__pflowDrawn.length > 0", timeout=10_000)
        except Exception:  # a move that redrew nothing (slider at its end): not a latency
            continue
        seen = 0
        while True:  # until no redraw followed the last one for QUIET_MS
            await asyncio.sleep(QUIET_MS / 1000)
            drawn = await page.evaluate("window.__pflowDrawn.length")
            if drawn == seen:
                break
            seen = drawn
        key, last = await page.evaluate("[window.__pflowKeys[0], Math.max(...window.__pflowDrawn)]")
        if key is not None:
            out.append(last - key)
    return out


async def visit(browser, url: str, latency: bool = False, context=None) -> Visit:  # noqa: ANN001
    """One visit of ``url`` in a fresh browser context (empty cache), or in ``context`` (a
    browser that has been here before: its HTTP cache holds plotly's bundle)."""
    name = url.rsplit("/", 1)[-1]
    v = Visit(name)
    own = context is None
    if own:
        context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    page = await context.new_page()
    responses = []

    def on_console(msg) -> None:  # noqa: ANN001
        if msg.type == "error" and not any(s in msg.text for s in IGNORED_CONSOLE):
            v.console.append(msg.text[:200])

    def on_response(response) -> None:  # noqa: ANN001
        if response.request.resource_type == "script" or ".js" in response.url:
            responses.append(response)

    def on_ws(ws) -> None:  # noqa: ANN001
        def count(payload: str | bytes) -> None:
            v.ws_bytes += len(payload)

        ws.on("framereceived", count)

    page.on("console", on_console)
    page.on("pageerror", lambda e: v.console.append(f"uncaught: {e}"[:200]))
    page.on("response", on_response)
    page.on("websocket", on_ws)
    plotted = None

    def on_plot(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is None:
            v.plot_s = time.perf_counter() - start

    try:
        start = time.perf_counter()
        await page.goto(url, timeout=180_000)
        # the first plot and the slider are waited for side by side: since 2026-12-06 a
        # page's controls come before its figures, and a press may come before any plot
        plotted = asyncio.ensure_future(_wait_for(page, ".js-plotly-plot .main-svg", 180))
        plotted.add_done_callback(on_plot)
        if name != "index.ipynb":
            await _wait_for(page, HANDLE, 180)
            working = await _slider_works(page, DEAD_AFTER_S)
            if working is not None:
                v.interactive_s = working - start
                if latency:
                    v.latency_ms = await _latency_ms(page)
                    await asyncio.sleep(SETTLE_S)  # the page has drawn all and gone idle
                    v.settled_ms = await _latency_ms(page)
            else:
                v.diagnosis = await page.evaluate(DIAGNOSIS_JS)
        await plotted
        await page.wait_for_timeout(500)
        v.failure_shown = (
            await page.locator("#pflow-page-failure, .pflow-figure-failed").count() > 0
        )
    except Exception as err:  # a page that never drew: recorded, the walk goes on
        v.error = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        if plotted is not None and not plotted.done():
            plotted.cancel()
    for r in responses:
        try:
            v.js_bytes += len(await r.body())
            v.js_transferred += (await r.request.sizes())["responseBodySize"]
        except Exception:  # a response without a body (redirect, aborted)
            pass
    # run_before_unload: Voila's page shuts its kernel down on "beforeunload", which a
    # closed browser context never fires (70 leaked kernels filled 23 GB in a first walk)
    await page.close(run_before_unload=True)
    await asyncio.sleep(0.2)
    if own:
        await context.close()
    return v


def pages(repo: Path) -> list[str]:
    return ["index.ipynb"] + sorted(p.name for p in (repo / "notebooks").glob("[0-9][0-9]_*.ipynb"))


async def run(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    repo = Path(args.repo).resolve()
    names = [n for n in pages(repo) if not args.pages or n.split("_")[0] in args.pages.split(",")]
    parts = set(args.parts.split(","))
    results: dict = {"pages": names}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True
        )
        # plain: each visit runs its notebook in a new kernel (cached artifacts)
        results["plain"] = []
        server = (
            Serve(repo, preheat=False, extra=tuple(args.serve_arg)) if "plain" in parts else None
        )
        try:
            for name in names if server else []:
                for i in range(args.repeat):  # slider latency on the first visit only
                    url = f"{server.base}/voila/render/{name}"
                    v = await visit(browser, url, latency=i == 0)
                    print(f"plain     {_line(v)}", flush=True)
                    results["plain"].append(v)
        finally:
            if server:
                server.stop()
        # preheated: each visit finds a kernel that has run the notebook
        server = Serve(repo, preheat=True, extra=tuple(args.serve_arg))
        try:
            results["warm_s"] = server.wait_quiet()
            results["preheated"], results["cached"] = [], []
            for name in names if "preheated" in parts else []:
                for i in range(args.repeat):
                    server.wait_quiet()  # the used kernel's replacement has run its notebook
                    url = f"{server.base}/voila/render/{name}"
                    v = await visit(browser, url, latency=i == 0)
                    print(f"preheated {_line(v)}", flush=True)
                    results["preheated"].append(v)
            # the same pages for a browser that has opened one before (a student's 2nd page)
            returning = await browser.new_context(viewport={"width": 1280, "height": 1400})
            for name in names if "cached" in parts else []:
                server.wait_quiet()
                url = f"{server.base}/voila/render/{name}"
                v = await visit(browser, url, latency=True, context=returning)
                print(f"cached    {_line(v)}", flush=True)
                results["cached"].append(v)
            await returning.close()
            # stress walk beside two CPU burners, the pool refilling as pages use kernels
            walks = args.walks if "walk" in parts else 0
            burners = [  # none when the walk is left out
                subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(2 if walks else 0)
            ]
            walker = await browser.new_context(viewport={"width": 1280, "height": 1400})
            try:
                results["walk"] = []
                for w in range(walks):
                    for name in names:
                        url = f"{server.base}/voila/render/{name}"
                        v = await visit(browser, url, context=walker)
                        print(f"walk {w + 1:2d}   {_line(v)}", flush=True)
                        results["walk"].append(v)
            finally:
                await walker.close()
                for b in burners:
                    b.kill()
                    b.wait()
            # 8 sessions at once on one chapter page
            chapter = args.concurrent_page
            if "concurrent" in parts:
                server.wait_quiet()
                start = time.perf_counter()
                visits = await asyncio.gather(
                    *(visit(browser, f"{server.base}/voila/render/{chapter}") for _ in range(8))
                )
                results["concurrent"] = (chapter, visits, time.perf_counter() - start)
                for v in visits:
                    print(f"concurrent {_line(v)}", flush=True)
        finally:
            server.stop()
        await browser.close()
    return results


def _line(v: Visit) -> str:
    return (
        f"{v.page:<24} plot {v.plot_s:6.2f} s  slider {v.interactive_s:6.2f} s  "
        f"latency {statistics.median(v.latency_ms) if v.latency_ms else float('nan'):6.1f} ms  "
        f"JS {v.js_bytes / 1e6:5.2f} MB ({v.js_transferred / 1e6:5.2f} sent)  "
        f"ws {v.ws_bytes / 1e6:6.2f} MB  console {len(v.console)}  "
        f"{'FAILURE SHOWN ' if v.failure_shown else ''}{v.error}"
    )


def _q(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def report(args: argparse.Namespace, results: dict, load_before: str) -> str:
    served_with = f" with `{' '.join(args.serve_arg)}`" if args.serve_arg else ""
    lines = [
        f"# Dashboard pages ({args.label})",
        "",
        f"Written by `benchmarks/dashboard_pages.py --label {args.label}` serving "
        f"`{args.describe}`{served_with} at PFLOW_SCALE=cpu (cached artifacts), browser and "
        "server on the "
        "same machine. Targets (issue 11): <= 8 MB of JavaScript per page; <= 3 s "
        "preheated and <= 10 s plain to a working slider; slider -> figure <= 150 ms; the "
        "stress walk with 0 dead sliders and 0 console errors.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before / after: {load_before}; {load_average()}",
        "",
        "## Each page",
        "",
        "*plain*: no preheated kernels, each visit runs its notebook; *preheated*: the "
        "visitor finds a kernel that has run it; both in a fresh browser (empty cache). "
        "*cached*: preheated, in a browser that has opened the course before (its HTTP "
        "cache holds plotly's versioned bundle; the first row of that browser pays for "
        "it). JS MB: JavaScript decoded (and as transferred, gzip). Slider latency: key "
        "press on the first slider -> the last figure redraw it caused, painted "
        "(plotly_afterplot, next animation frame; the page's clock), median of 6 moves.",
        "",
        "| page | server | JS MB (transferred) | websocket MB | first plot s | working "
        "slider s | slider latency ms (median): at once / settled | console errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("plain", "preheated", "cached"):
        for v in results.get(mode, []):
            lat = " / ".join(
                f"{statistics.median(xs):.0f}" if xs else "-" for xs in (v.latency_ms, v.settled_ms)
            )
            slider = f"{v.interactive_s:.1f}" if v.interactive_s == v.interactive_s else "-"
            if v.dead and not v.error:
                slider = "DEAD"
            lines.append(
                f"| {v.page} | {mode} | {v.js_bytes / 1e6:.1f} ({v.js_transferred / 1e6:.1f}) "
                f"| {v.ws_bytes / 1e6:.2f} | {v.plot_s:.1f} | {slider} | {lat} "
                f"| {len(v.console)}{' ' + v.error if v.error else ''} |"
            )
    if args.repeat > 1:
        lines += [
            "",
            f"## Working slider over {args.repeat} visits of each page",
            "",
            "Seconds to a working slider, median (min - max) of the visits above; a dead "
            "visit counts as infinitely slow.",
            "",
            "| page | plain | preheated |",
            "|---|---:|---:|",
        ]
        for name in results["pages"]:
            if name == "index.ipynb":
                continue
            cells = []
            for mode in ("plain", "preheated"):
                xs = [
                    v.interactive_s if not v.dead else float("inf")
                    for v in results.get(mode, [])
                    if v.page == name
                ]
                cells.append(
                    f"{statistics.median(xs):.1f} ({min(xs):.1f} - {max(xs):.1f})" if xs else "-"
                )
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    walk = results.get("walk", [])
    dead = [v for v in walk if v.dead]
    noisy = [v for v in walk if v.console]
    shown = [v for v in walk if v.failure_shown]
    inter = [v.interactive_s for v in walk if v.page != "index.ipynb" and not v.dead]
    lines += [
        "",
        f"## Stress walk: two CPU burners, every page {args.walks} times (preheated server)",
        "",
        f"- visits: {len(walk)}; dead sliders: {len(dead)}; visits with console errors: "
        f"{len(noisy)}; visits showing a failure line: {len(shown)}; pages that never drew: "
        f"{sum(1 for v in walk if v.error)}",
        f"- time to a working slider under load: p50 {_q(inter, 0.5):.1f} s, p95 "
        f"{_q(inter, 0.95):.1f} s, max {_q(inter, 1.0):.1f} s",
    ]
    for v in (dead + noisy)[:8]:
        what = "; ".join(v.console[:2] + ([v.diagnosis] if v.diagnosis else []))
        lines.append(f"  - {v.page}: {'dead; ' if v.dead else ''}{what}")
    chapter, visits, wall = results.get("concurrent", (args.concurrent_page, [], float("nan")))
    inter = [v.interactive_s for v in visits if not v.dead]
    lines += [
        "",
        f"## 8 sessions at once on {chapter}",
        "",
        f"- interactive: {len(inter)} of 8; time to a working slider p50 {_q(inter, 0.5):.1f} s, "
        f"p95 {_q(inter, 0.95):.1f} s; all 8 done in {wall:.1f} s; console errors in "
        f"{sum(1 for v in visits if v.console)} of 8"
        if "concurrent" in results
        else "- not run (left out by --parts)",
        "",
        f"Preheated server quiet (every kernel had run its notebook) {results['warm_s']:.0f} s "
        "after it answered.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT), help="checkout to serve (default: this)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--describe", default="this checkout")
    parser.add_argument("--walks", type=int, default=20)
    parser.add_argument(
        "--parts",
        default=PARTS,
        help=f"comma-separated, of {PARTS} (a part left out is reported empty)",
    )
    parser.add_argument(
        "--pages",
        default="",
        help="comma-separated page numbers to visit (00,04; index.ipynb for the landing "
        "page); default: all",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="visits of each page, plain and preheated (a median row is added when > 1)",
    )
    parser.add_argument("--concurrent-page", default="01_painters.ipynb")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for `pflow-explore serve` (repeat it), e.g. --serve-arg=--pool-size=8",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    load_before = load_average()
    # SIGTERM (kill, a CI timeout) raises SystemExit like Ctrl-C raises KeyboardInterrupt, so
    # the `finally` blocks stop the server and the two CPU burners (left running otherwise)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = asyncio.run(run(args))
    out = ROOT / "benchmarks" / "results" / f"dashboard_pages_{args.label}.md"
    out.write_text(report(args, results, load_before))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
