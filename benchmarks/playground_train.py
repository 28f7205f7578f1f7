"""The playground: from pressing Train to samples on screen, per method and number of points.

For 200, 1000 and 2000 drawn points (the eight-Gaussians preset) and every method at the
playground's default settings (scale cpu): seconds to train, seconds to sample the
trajectories the explorer shows, and the energy distance of 1000 samples to the points
beside the two-sample floor (two halves of the points). Then the kernel's responsiveness
while a training runs in the playground's background thread: the time a widget callback
on the main thread (what a slider move triggers) waits, sampled every 0.2 s.

    .venv/bin/python benchmarks/playground_train.py  -> results/playground_train.md
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import torch
from machine import machine

from pflow_explore import playground as pg

ROOT = Path(__file__).resolve().parents[1]
SIZES = (200, 1000, 2000)


def main() -> None:
    torch.set_num_threads(1)  # as the dashboards' kernels run (serve --threads 1)
    rows, load_before = [], os.getloadavg()
    for n in SIZES:
        points = pg.preset_points("eight_gaussians", n, seed=1)
        for method in pg.METHODS:
            start = time.perf_counter()
            trained = pg.train(points, method)
            t_train = time.perf_counter() - start
            start = time.perf_counter()
            trained.trajectories()
            t_sample = time.perf_counter() - start
            distance, floor = trained.quality()
            rows.append((n, method, t_train, t_sample, distance, floor))
            print(rows[-1], flush=True)
    # responsiveness: a main-thread callback's delay while the background thread trains
    points = pg.preset_points("eight_gaussians", 1000, seed=1)
    job = threading.Thread(target=pg.train, args=(points, "rectified flow"), daemon=True)
    delays = []
    job.start()
    while job.is_alive():
        start = time.perf_counter()
        sum(i * i for i in range(2000))  # a small Python callback (a slider handler)
        delays.append((time.perf_counter() - start) * 1000)
        time.sleep(0.2)
    idle = []
    for _ in range(20):
        start = time.perf_counter()
        sum(i * i for i in range(2000))
        idle.append((time.perf_counter() - start) * 1000)
    lines = [
        "# Playground: from Train to samples",
        "",
        "Written by `benchmarks/playground_train.py` (default `PlaygroundSettings`: 1500 Adam "
        "steps per stage, batch 256, MLP 128 x 3, 40 sampler steps; one torch thread, as the "
        "dashboards' kernels run). Energy distance of 1000 samples to the drawn points beside "
        "the floor between two halves of the points.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}",
        "",
        "| points | method | train (s) | sample (s) | energy distance | floor | target 10 s |",
        "|---:|---|---:|---:|---:|---:|---|",
        *(
            f"| {n} | {m} | {a:.1f} | {b:.2f} | {d:.4f} | {f:.4f} | "
            f"{'met' if a + b <= 10 else 'NOT met'} |"
            for n, m, a, b, d, f in rows
        ),
        "",
        "Responsiveness while the rectified flow trains in the background thread (1000 points): "
        f"a small main-thread callback took {statistics.median(delays):.2f} ms at the median and "
        f"{max(delays):.2f} ms at worst over {len(delays)} samples (idle: "
        f"{statistics.median(idle):.2f} ms). The slider of the page's explorer is served by "
        "that main thread; its latency in the browser, idle and during training, is in "
        "playground_browser.md (benchmarks/playground_browser.py).",
    ]
    (ROOT / "benchmarks" / "results" / "playground_train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
