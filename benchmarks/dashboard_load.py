"""A classroom at once: 8 browser sessions open the same dashboard on one Voila server.

For each server configuration (preheated kernels, pool of 1 = `pflow-explore serve`'s
default; a pool as large as the class, its used kernels replaced after the default delay
or after 60 s; plain): start Voila as `serve` does
(PFLOW_SCALE=cpu), wait until it is idle, then open the chapter in 8 pages at the same
moment (one headless Chromium, a browser context per session) and measure, per session,
navigation to the first drawn plot and to the first successful interaction (a slider
moved, a figure's data changed); check that every page rendered with no error text.
Then, with the 8 sessions still open, the memory of every kernel process (RSS, and USS:
the memory only that process holds; RSS counts shared libraries in each kernel).

    .venv/bin/python benchmarks/dashboard_load.py [--sessions 8] [--configs pool1 plain ...]

Writes benchmarks/results/dashboard_load.md. Browser and server share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

from dashboard_tti import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    FIGURE_DATA_JS,
    ROOT,
    Server,
    load_average,
    voila,
    voila_env_threads,
)
from machine import machine

from pflow_explore.cli import REFILL_DELAY_S

OUT = ROOT / "benchmarks" / "results" / "dashboard_load.md"
CONFIGS = {
    "pool1": ("preheated, pool of 1 per notebook (default)", True, 1, REFILL_DELAY_S),
    "pool8": ("preheated, --pool-size 8", True, 8, REFILL_DELAY_S),
    "pool8-delay": ("preheated, --pool-size 8 --refill-delay 60", True, 8, 60.0),
    "plain": ("plain (--no-preheat)", False, 1, REFILL_DELAY_S),
}
MiB = 1024 * 1024


@dataclass
class Session:
    plot_s: float = float("nan")
    interactive_s: float = float("nan")
    error: str = ""


async def session(context, url: str, t0: float) -> Session:  # noqa: ANN001 (playwright)
    """One student: open ``url``, wait for the plot, move the slider until a figure changes."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)[:120]))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text[:120])
            if msg.type == "error" and "anywidget" in msg.text
            else None
        ),
    )
    out = Session()
    try:
        await page.goto(url, timeout=300_000)
        await page.wait_for_selector(".js-plotly-plot .main-svg", timeout=300_000)
        out.plot_s = time.perf_counter() - t0
        handle = page.locator(".widget-slider .noUi-handle").first
        await handle.wait_for(timeout=120_000)
        before = await page.evaluate(FIGURE_DATA_JS)
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline and out.interactive_s != out.interactive_s:
            await handle.focus()
            await page.keyboard.press("ArrowRight")
            step_end = time.perf_counter() + 1.0
            while time.perf_counter() < step_end:
                if await page.evaluate(FIGURE_DATA_JS) != before:
                    out.interactive_s = time.perf_counter() - t0
                    break
                await page.wait_for_timeout(50)
        text = await page.inner_text("body")
        bad = [b for b in ("Traceback", "There was an error when executing cell") if b in text]
        if out.interactive_s != out.interactive_s:
            bad.append("the slider never changed the figure")
        out.error = "; ".join(bad + [e for e in errors if "shared module" not in e])
    except Exception as err:  # a session that failed is a result, not a crash of the benchmark
        out.error = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return out


def cpu_seconds(server: Server) -> dict[str, float]:
    """CPU seconds used so far by the Voila server, its kernels, and this script's Chromium."""
    import os

    import psutil

    def total(procs: list) -> float:
        t = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                t += c.user + c.system + c.children_user + c.children_system
            except psutil.NoSuchProcess:
                continue
        return t

    me = psutil.Process(os.getpid()).children(recursive=True)
    chromium = [p for p in me if "chrom" in p.name() or "headless" in p.name()]
    return {
        "voila": total([psutil.Process(server.proc.pid)]),
        "kernels": total(server.kernels()),
        "browser": total(chromium),
    }


def kernel_memory(server: Server) -> list[tuple[float, float]]:
    """(RSS, USS) in MiB of every kernel process of the server."""
    rows = []
    for proc in server.kernels():
        try:
            info = proc.memory_full_info()
            rows.append((info.rss / MiB, info.uss / MiB))
        except Exception:  # the kernel ended meanwhile
            continue
    return rows


async def classroom(
    server: Server, notebook: str, n: int
) -> tuple[list[Session], list[tuple[float, float]], float, dict[str, float]]:
    """n sessions at once: their times, kernel memory while they are open, the server's
    own RSS, and CPU seconds used meanwhile by the kernels, the browser and Voila."""
    import psutil
    from playwright.async_api import async_playwright

    url = f"{server.base}/voila/render/{notebook}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True
        )
        contexts = [
            await browser.new_context(viewport={"width": 1280, "height": 1000}) for _ in range(n)
        ]
        cpu0 = cpu_seconds(server)
        t0 = time.perf_counter()
        sessions = await asyncio.gather(*(session(c, url, t0) for c in contexts))
        wall = time.perf_counter() - t0
        cpu1 = cpu_seconds(server)
        cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
        print(
            f"  CPU s during the {wall:.0f} s run: "
            + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()),
            flush=True,
        )
        await asyncio.sleep(2.0)  # let refills start, as they would in class
        memory = kernel_memory(server)
        server_rss = psutil.Process(server.proc.pid).memory_info().rss / MiB
        await browser.close()
    return list(sessions), memory, server_rss, cpu


def percentile(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--notebook", default="00_start_here.ipynb")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()

    load_before = load_average()
    results = []
    for name in args.configs:
        label, preheat, pool, delay = CONFIGS[name]
        with voila(args.scale, preheat, pool, refill_delay=delay) as server:
            start = time.perf_counter()
            if preheat:
                server.wait_filled(args.notebook, 1)
            server.wait_idle()
            ready_s = time.perf_counter() - start
            sessions, memory, server_rss, cpu = asyncio.run(
                classroom(server, args.notebook, args.sessions)
            )
        results.append((label, cpu, ready_s, sessions, memory, server_rss))
        for i, s in enumerate(sessions):
            print(f"  session {i + 1}: plot {s.plot_s:.1f} s, interactive {s.interactive_s:.1f} s")
        inter = [s.interactive_s for s in sessions]
        print(
            f"{label}: ready after {ready_s:.0f} s; interactive p50 {percentile(inter, 0.5):.1f} "
            f"s p95 {percentile(inter, 0.95):.1f} s; errors "
            f"{sum(bool(s.error) for s in sessions)}; kernels {len(memory)}",
            flush=True,
        )

    lines = [
        "# Dashboard under load: a class opening one chapter at once",
        "",
        "Written by `benchmarks/dashboard_load.py`. One Voila server started as "
        f"`pflow-explore serve` does (PFLOW_SCALE={args.scale}); {args.sessions} sessions (one "
        f"headless Chromium, one browser context each) open `{args.notebook}` at the same "
        "moment, after the server has gone idle. Times are from that moment: *plot* = first "
        "plotly plot drawn, *interactive* = first slider move that changed a figure's data. "
        "The browser runs on the same machine, so the 8 pages also compete for its CPU.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1/5/15 min) before / after the runs: {load_before}; "
        f"{load_average()} (a load above the core count means other jobs took CPU)",
        f"- kernels run with OMP_NUM_THREADS={voila_env_threads()} (`serve`'s default)",
        "",
        "## Times (seconds from the moment all sessions opened the page)",
        "",
        "| server | idle after start (s) | plot drawn | interactive | plot p50 / p95 "
        "| interactive p50 / p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    n = args.sessions
    for label, _, ready_s, sessions, _, _ in results:
        plot = [s.plot_s for s in sessions]
        inter = [s.interactive_s for s in sessions]
        lines.append(
            f"| {label} | {ready_s:.0f} | {sum(x == x for x in plot)}/{n} "
            f"| {sum(x == x for x in inter)}/{n} "
            f"| {percentile(plot, 0.5):.1f} / {percentile(plot, 0.95):.1f} "
            f"| {percentile(inter, 0.5):.1f} / {percentile(inter, 0.95):.1f} |"
        )
    lines += [
        "",
        "Percentiles are over the sessions that got there. *idle after start*: seconds from "
        "the server answering until every preheated kernel had run its notebook.",
        "",
        "## Memory and CPU",
        "",
        "| server | kernels alive | RSS per kernel, median (MiB) | USS per kernel, median "
        "(MiB) | all kernels RSS (MiB) | Voila RSS (MiB) | CPU s during the run: kernels "
        "/ browser / Voila | server CPU / 2 cores (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, cpu, _, _, memory, server_rss in results:
        rss = [m[0] for m in memory]
        uss = [m[1] for m in memory]
        lines.append(
            f"| {label} | {len(memory)} | {statistics.median(rss):.0f} "
            f"| {statistics.median(uss):.0f} | {sum(rss):.0f} | {server_rss:.0f} "
            f"| {cpu['kernels']:.0f} / {cpu['browser']:.0f} / {cpu['voila']:.0f} "
            f"| {(cpu['kernels'] + cpu['voila']) / 2:.0f} |"
        )
    errors = [
        f"{label} session {i + 1}: {s.error}"
        for label, _, _, sessions, _, _ in results
        for i, s in enumerate(sessions)
        if s.error
    ]
    lines += [
        "",
        "*kernels alive*: while the sessions were open: one per session, the preheated spares "
        "of every notebook (the landing page's included) and the replacements already "
        "started. USS is the memory a kernel holds alone; RSS also counts the shared "
        "libraries, once per kernel. *server CPU / 2 cores*: the kernels' and Voila's CPU "
        "seconds over the two cores, a floor for the server's part of the wait if the "
        "browsers ran on the students' machines, as they would in class; here they share "
        "the two cores with the server.",
        "",
        "Errors per session: " + ("; ".join(errors) if errors else "none."),
        "",
    ]
    if any("Failed to initialize model" in e for e in errors):
        lines += [
            "`[anywidget] Failed to initialize model`: anywidget (which draws plotly's "
            "FigureWidget) gives a widget 2 s to load and start its JavaScript, then gives "
            "up for good, and the figure no longer follows the slider. It happens to a "
            "browser starved of CPU, as 8 pages beside the kernels on 2 cores are.",
            "",
        ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
