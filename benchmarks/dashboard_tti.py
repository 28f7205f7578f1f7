"""Time to interactive of a Voila dashboard, plain vs preheated kernels, in headless Chromium.

Voila runs the whole notebook before the first paint, so a plain server makes every visitor
wait for kernel start + imports + the notebook; a preheated server (`pflow-explore serve`'s
default) keeps a kernel per notebook that has already run it. For each mode: start Voila as
`pflow-explore serve` does (PFLOW_SCALE=cpu) on a free port, open the chapter in a fresh
page, and measure from navigation to (a) the first plotly plot drawn, (b) the first
successful interaction: a slider moved and a figure's data changed in the DOM. Preheated
repetitions wait until the pool has been refilled, i.e. measure a visitor who finds a
warm kernel. Median over repetitions.

    .venv/bin/python benchmarks/dashboard_tti.py [--reps 5] [--notebook 00_start_here.ipynb]

Writes benchmarks/results/dashboard_tti.md. The browser runs on the same machine as the
server (on a 2-core machine it takes CPU from the kernels).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from machine import machine

from pflow_explore.cli import REFILL_DELAY_S
from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM, ENV_CHROMIUM
from pflow_explore.voila_app import stop_server

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "dashboard_tti.md"
CHROMIUM = os.environ.get(ENV_CHROMIUM, DEFAULT_CHROMIUM)
TARGETS_S = {"plain": 10.0, "preheated": 3.0}
# a cheap fingerprint of every plot's data (lengths and the first values of each trace):
# polled every few ms, it must not itself load the browser the way serializing whole
# figures would
# one figure `el`'s data as a string: each trace's x, y, z lengths and first 32 values
FIGURE_FINGERPRINT_JS = """(el.data || []).map(t => ['x', 'y', 'z'].map(k => {
    const a = t[k]; if (!a) return '';
    return a.length + ':' + Array.prototype.slice.call(a, 0, 32).join(',');
  }).join('|')).join(';')"""
FIGURE_DATA_JS = (
    "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(\n  el => "
    + FIGURE_FINGERPRINT_JS
    + ")"
)


def load_average() -> str:
    """The 1/5/15-minute load averages: other jobs on a shared machine skew the times."""
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log: Path

    def filled(self, notebook: str) -> int:
        """How many times Voila has reported the pool of ``notebook`` full."""
        pattern = re.compile(rf"Kernel pool of {re.escape(notebook)} is filled")
        return len(pattern.findall(self.log.read_text(errors="replace")))

    def wait_filled(self, notebook: str, times: int, timeout_s: float = 600) -> float:
        """Wait until the pool of ``notebook`` was filled ``times`` times; seconds waited."""
        start = time.perf_counter()
        while self.filled(notebook) < times:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited:\n{self.log.read_text()[-2000:]}")
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"pool of {notebook} not filled after {timeout_s} s")
            time.sleep(0.2)
        return time.perf_counter() - start

    def kernels(self) -> list:
        """The kernel processes Voila started (psutil.Process objects)."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if "ipykernel" in " ".join(_cmdline(c))]

    def wait_idle(
        self, quiet_s: float = 2.0, busy_pct: float = 15.0, timeout_s: float = 600
    ) -> float:
        """Wait until Voila and its kernels used < ``busy_pct`` % of one core for ``quiet_s``.

        Voila reports a pool "filled" once its kernels have *started*; they then run the
        notebook. Quiet means every preheated kernel has finished it.
        """
        import psutil

        start = time.perf_counter()
        quiet_since = None
        while time.perf_counter() - start < timeout_s:
            procs = [psutil.Process(self.proc.pid), *self.kernels()]
            try:
                before = [p.cpu_times() for p in procs]
                time.sleep(0.5)
                after = [p.cpu_times() for p in procs]
            except psutil.NoSuchProcess:
                continue
            pairs = zip(after, before, strict=True)
            used = sum(a.user + a.system - b.user - b.system for a, b in pairs)
            if 100 * used / 0.5 < busy_pct:
                quiet_since = quiet_since or time.perf_counter()
                if time.perf_counter() - quiet_since >= quiet_s:
                    return time.perf_counter() - start
            else:
                quiet_since = None
        raise TimeoutError(f"voila's kernels still busy after {timeout_s} s")


def _cmdline(proc) -> list[str]:  # noqa: ANN001 (psutil.Process)
    try:
        return proc.cmdline()
    except Exception:  # the process ended or is not ours to read
        return []


@contextmanager
def voila(
    scale: str,
    preheat: bool,
    pool_size: int = 1,
    log_dir: Path | None = None,
    refill_delay: float | None = None,
) -> Iterator[Server]:
    """Voila over notebooks/ exactly as `pflow-explore serve` starts it, on a free port."""
    from pflow_explore.cli import voila_command, voila_env

    delay = {} if refill_delay is None else {"refill_delay": refill_delay}  # None: serve's
    port = free_port()
    log = (log_dir or Path("/tmp")) / f"voila-{port}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            voila_command(port, preheat=preheat, pool_size=pool_size, **delay),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=voila_env(scale),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"voila did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield Server(base, proc, log)
    finally:
        stop_server(proc)  # Voila and every kernel it started


def voila_env_threads() -> str:
    from pflow_explore.cli import voila_env

    return voila_env("cpu").get("OMP_NUM_THREADS", "unset")


def figure_data(page) -> list[str]:  # noqa: ANN001 (playwright page, sync or async)
    return page.evaluate(FIGURE_DATA_JS)


def interact(page, timeout_s: float = 120) -> float:  # noqa: ANN001
    """Press ArrowRight on the first slider until a figure's data changes; the time it did.

    A press before the kernel's widgets are connected is lost, so presses repeat.
    """
    deadline = time.perf_counter() + timeout_s
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.wait_for(timeout=timeout_s * 1000)
    before = figure_data(page)
    while time.perf_counter() < deadline:
        handle.focus()
        page.keyboard.press("ArrowRight")
        step_end = time.perf_counter() + 1.0
        while time.perf_counter() < step_end:
            if figure_data(page) != before:
                return time.perf_counter()
            page.wait_for_timeout(25)
    raise TimeoutError("the figure never changed after moving the slider")


@dataclass
class Visit:
    plot_s: float
    interactive_s: float
    error: str = ""


def visit(browser, url: str) -> Visit:  # noqa: ANN001
    """Open ``url`` in a fresh page; seconds to the first drawn plot and first interaction."""
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    try:
        start = time.perf_counter()
        page.goto(url, timeout=180_000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=180_000)
        plot = time.perf_counter() - start
        done = interact(page) - start
        text = page.inner_text("body")
        bad = [b for b in ("Traceback", "There was an error when executing cell") if b in text]
        return Visit(plot, done, ", ".join(bad))
    finally:
        page.close()  # Voila shuts the page's kernel down


def measure(mode: str, notebook: str, reps: int, scale: str) -> tuple[list[Visit], float]:
    """``reps`` visits of ``notebook``; also the seconds until a preheated pool was first full."""
    from playwright.sync_api import sync_playwright

    preheat = mode == "preheated"
    visits = []
    with voila(scale, preheat) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True
        )
        warm_s = float("nan")
        if preheat:
            server.wait_filled(notebook, 1)
            warm_s = server.wait_idle()
        for i in range(reps):
            if preheat:
                # a used kernel is replaced after serve's refill delay: wait until the
                # replacement has run the notebook, so that each visit finds a warm kernel
                time.sleep(REFILL_DELAY_S + 0.5)
                server.wait_filled(notebook, i + 1)
            server.wait_idle()
            v = visit(browser, f"{server.base}/voila/render/{notebook}")
            visits.append(v)
            print(
                f"{mode:<9} rep {i + 1}: plot {v.plot_s:5.2f} s, interactive "
                f"{v.interactive_s:5.2f} s {v.error}",
                flush=True,
            )
        browser.close()
    return visits, warm_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--notebook", default="00_start_here.ipynb")
    parser.add_argument("--scale", default="cpu")
    args = parser.parse_args()

    load_before = load_average()
    rows = []
    for mode in ("plain", "preheated"):
        visits, warm_s = measure(mode, args.notebook, args.reps, args.scale)
        rows.append((mode, visits, warm_s))

    lines = [
        "# Dashboard time to interactive",
        "",
        "Written by `benchmarks/dashboard_tti.py`. Voila started as `pflow-explore serve` "
        f"does (template `pflow`, PFLOW_SCALE={args.scale}), one fresh headless Chromium page "
        f"per visit of `{args.notebook}`, browser and server on the same machine. *plot*: "
        "navigation to the first plotly plot drawn; *interactive*: navigation to the first "
        "slider move that changed a figure's data in the page. Preheated visits each find a "
        "warm kernel (the pool is refilled between visits).",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1/5/15 min) before / after the runs: {load_before}; "
        f"{load_average()} (a load above the core count means other jobs took CPU)",
        f"- kernels run with OMP_NUM_THREADS={voila_env_threads()} (`serve`'s default)",
        "",
        "## Results (seconds, median and range over visits)",
        "",
        "| server | visits | plot: median (min-max) | interactive: median (min-max) "
        "| target (interactive) | met? |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode, visits, _ in rows:
        plot = [v.plot_s for v in visits]
        inter = [v.interactive_s for v in visits]
        target = TARGETS_S[mode]
        met = "yes" if statistics.median(inter) <= target else "NO"
        lines.append(
            f"| {mode} | {len(visits)} | {statistics.median(plot):.2f} ({min(plot):.2f}-"
            f"{max(plot):.2f}) | {statistics.median(inter):.2f} ({min(inter):.2f}-"
            f"{max(inter):.2f}) | <= {target:.0f} | {met} |"
        )
    errors = [f"{mode} visit {i + 1}: {v.error}" for mode, vs, _ in rows for i, v in enumerate(vs)]
    errors = [e for e in errors if not e.endswith(": ")]
    warm = next(w for m, _, w in rows if m == "preheated")
    lines += [
        "",
        f"Preheated server: its kernels had run every notebook (CPU quiet) {warm:.1f} s after "
        "the server answered; all notebooks warm at once at start. Voila logs a pool as "
        "filled when its kernels have started, before they have run the notebook; a "
        "visitor who comes earlier waits for the rest of the run.",
        "Targets: <= 10 s to interactive on 2 cores with cached artifacts (plain), <= 3 s "
        "with a preheated kernel.",
        "",
        "Errors on the page: " + ("; ".join(errors) if errors else "none."),
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
