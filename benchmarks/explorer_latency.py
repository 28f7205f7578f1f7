"""Python-side latency of TrajectoryExplorer: the first FigureWidget, construction, step_to.

Measures, on this machine:
- cold start, each in a fresh interpreter: importing plotly + ipywidgets + the explorer,
  the first (empty) ``go.FigureWidget``, and the first TrajectoryExplorer;
- warm construction of a TrajectoryExplorer for each size;
- ``step_to`` (what a slider move or a Play tick runs in the kernel) over a playback
  (steps 1..T in order) and a random scrub, median and 95th percentile;
- ``set_trajectories`` (swapping in new data after a parameter change).

Every number includes the widget state serialization (numpy -> binary buffers) but not the
websocket transfer or the browser's redraw: browser-side render time is measured by the
dashboard benchmark. Run from the repository root:

    .venv/bin/python benchmarks/explorer_latency.py            # writes results/*.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "trajectory_explorer.md"

COLD = r"""
import time, json
t0 = time.perf_counter()
import torch, ipywidgets, plotly.graph_objects as go
from pflow_explore.widgets import TrajectoryExplorer
t1 = time.perf_counter()
go.FigureWidget()
t2 = time.perf_counter()
x = torch.randn(101, 256, 2).cumsum(0) * 0.05
TrajectoryExplorer(x, torch.linspace(1, 0, 101))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_figurewidget": t2 - t1, "first_explorer": t3 - t2}))
"""


def cold_start(repeats: int) -> dict[str, float]:
    """Median over fresh interpreters of the import, first FigureWidget, first explorer (s)."""
    import json

    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", COLD], cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def random_trajectories(steps: int, n: int, seed: int):
    """Brownian-like paths (T+1, n, 2): data-like spread, every step different."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g)
    moves = 0.05 * torch.randn(steps, n, 2, generator=g)
    return torch.cat([x0[None], x0[None] + moves.cumsum(0)]), torch.linspace(1, 0, steps + 1)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def sent_bytes(fn, *args) -> int:
    """Bytes of binary buffers that ``fn(*args)`` hands to widget comms (untimed pass).

    Outside a kernel ipywidgets still serializes every state change and passes it to a
    ``comm.DummyComm``, which drops it; counting there measures the real payload.
    """
    import comm

    total = 0
    send = comm.DummyComm.send

    def counting(self, data=None, metadata=None, buffers=None):
        nonlocal total
        total += sum(memoryview(b).nbytes for b in buffers or [])
        return send(self, data=data, metadata=metadata, buffers=buffers)

    comm.DummyComm.send = counting
    try:
        fn(*args)
    finally:
        comm.DummyComm.send = send
    return total


def quantiles_ms(seconds: list[float]) -> tuple[float, float]:
    """(median, 95th percentile) in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 95))


def measure_size(n: int, steps: int, n_lines: int, seed: int) -> dict[str, float]:
    from pflow_explore.widgets import TrajectoryExplorer

    x, t = random_trajectories(steps, n, seed)
    t0 = time.perf_counter()
    explorer = TrajectoryExplorer(x, t, n_lines=n_lines)
    build = time.perf_counter() - t0

    playback = [timed(explorer.step_to, i) for i in range(1, steps + 1)]
    order = np.random.default_rng(seed).integers(0, steps + 1, size=steps)
    scrub = [timed(explorer.step_to, int(i)) for i in order]
    payload = np.mean([sent_bytes(explorer.step_to, i) for i in range(1, steps + 1)])

    swaps = []
    for k in range(10):
        new_x, new_t = random_trajectories(steps, n, seed + 1 + k)
        swaps.append(timed(explorer.set_trajectories, new_x, new_t))
    play_med, play_p95 = quantiles_ms(playback)
    scrub_med, scrub_p95 = quantiles_ms(scrub)
    swap_med, swap_p95 = quantiles_ms(swaps)
    return dict(
        n=n,
        m=min(n_lines, n),
        build_ms=build * 1e3,
        play_med=play_med,
        play_p95=play_p95,
        scrub_med=scrub_med,
        scrub_p95=scrub_p95,
        swap_med=swap_med,
        swap_p95=swap_p95,
        payload_kb=payload / 1024,
    )


def report(cold: dict[str, float], rows: list[dict[str, float]], steps: int, n_lines: int) -> str:
    interval_ms = 100  # TrajectoryExplorer's default Play interval
    worst = max(max(r["play_med"], r["scrub_med"]) for r in rows)
    lines = [
        "# TrajectoryExplorer: Python-side latency",
        "",
        "Written by `benchmarks/explorer_latency.py` (run it from the repository root to",
        "regenerate). Times are wall-clock in the Python process, including the widget state",
        "serialization (numpy arrays -> binary buffers) but **not** the websocket transfer nor",
        "the browser-side render time: those are measured separately by the dashboard benchmark.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "The machine is shared with other jobs, so treat p95 values as upper bounds.",
        "",
        "## Cold start (fresh interpreter, median of runs)",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| import torch, ipywidgets, plotly, pflow_explore.widgets | {cold['import']:.2f} |",
        f"| first `go.FigureWidget()` (empty) | {cold['first_figurewidget']:.2f} |",
        "| first TrajectoryExplorer (n = 256, T = 100) after that "
        f"| {cold['first_explorer']:.2f} |",
        "",
        f"## Per size (T = {steps} steps, `n_lines = {n_lines}` paths drawn)",
        "",
        "`step_to` playback: steps 1..T in order (a Play run); scrub: "
        f"{steps} random steps (slider drags). "
        "`set_trajectories`: 10 swaps to new data of the same size. "
        "Payload: binary buffers (float32 coordinates) handed to the browser per step, "
        "mean over a playback.",
        "",
        "| n | paths drawn | build (ms) | playback median / p95 (ms) | scrub median / p95 (ms) "
        "| set_trajectories median / p95 (ms) | payload per step (KiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['m']} | {r['build_ms']:.1f} | {r['play_med']:.2f} / "
            f"{r['play_p95']:.2f} | {r['scrub_med']:.2f} / {r['scrub_p95']:.2f} | "
            f"{r['swap_med']:.2f} / {r['swap_p95']:.2f} | {r['payload_kb']:.0f} |"
        )
    lines += [
        "",
        f"Reading: at Play's {interval_ms} ms interval the slowest median step here "
        f"({worst:.2f} ms) is {100 * worst / interval_ms:.1f} % of a tick; the browser's SVG",
        "redraw (not measured here) is what grows with n.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--n-lines", type=int, default=200)
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    cold = cold_start(args.cold_repeats)
    print(f"cold start: {cold}", flush=True)
    sys.path.insert(0, str(ROOT))
    import plotly.graph_objects as go

    go.FigureWidget()  # pay the one-time cost before timing warm construction
    rows = []
    for n in args.sizes:
        rows.append(measure_size(n, args.steps, args.n_lines, seed=n))
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(cold, rows, args.steps, args.n_lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
