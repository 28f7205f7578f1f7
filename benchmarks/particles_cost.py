"""Cost of one simulation step of the AOUP repulsion model vs N: dense (chunked) vs cell list.

Model: mips_model(N, phi = 0.5, radius = 0.5) (soft discs, beta = 7.5, range 2r + 8/beta, box
L = sqrt(N pi r^2 / phi)), R replicas, float32, uniform random positions (a gas; a clustered
state has larger cell occupancy M, so the cell list's cost there is also measured on a
compressed configuration: all particles in a square of half the box side, local phi ~ 2).

Per (N, method, R) the median over repeats of one call of particles.step, in milliseconds of
CPU time of this process (time.process_time, fairer than wall-clock on a shared machine) and
wall-clock. torch runs single-threaded (set below): on this shared 2-core machine two threads
were ~15x slower in wall-clock on small tensors (OpenMP contention with other jobs).

    .venv/bin/python benchmarks/particles_cost.py            # writes results/particles_cost.md
    .venv/bin/python benchmarks/particles_cost.py --quick    # fewer sizes, prints only
    .venv/bin/python benchmarks/particles_cost.py --mips     # only the MIPS section (~2 min)

``--mips`` checks whether MIPS forms at CPU scale with mips_model's defaults (the official
code's parameters) and writes the section "MIPS at CPU scale" of the same results file:
solid / gas fractions (particles.cluster_fraction / gas_fraction: >= 4 / <= 1 neighbours
within 2.4 r) along runs from a uniform start and from one close-packed droplet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from machine import machine

from pflow_explore.datasets import particles as P

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "particles_cost.md"
LOAD = os.getloadavg()


def time_step(model: P.AOUP, x: torch.Tensor, g: torch.Tensor, method: str, repeats: int):
    gen = torch.Generator().manual_seed(0)
    P.step(model, x, g, 0.01, gen, method)  # warm-up (allocator, caches)
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        P.step(model, x, g, 0.01, gen, method)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return 1e3 * statistics.median(cpu), 1e3 * statistics.median(wall)


def max_occupancy(model: P.AOUP, x: torch.Tensor) -> int:
    n_side = int(model.box // model.interaction_range)
    cell = torch.floor((P.wrap(x, model.box) + model.box / 2) / (model.box / n_side)).long()
    ids = cell[..., 0] * n_side + cell[..., 1]
    return int(max(torch.bincount(row, minlength=n_side**2).max() for row in ids))


MIPS_HEADER = "## MIPS at CPU scale"
# (label, N, phi, v0, gamma, radius, layout, dt, duration in time units)
MIPS_RUNS = [
    ("official parameters", 256, 0.5, 0.025, 1e-4, 1.0, "uniform", 0.4, 4e4),
    ("official parameters", 256, 0.5, 0.025, 1e-4, 1.0, "cluster", 0.1, 2e3),
    ("official parameters", 256, 0.3, 0.025, 1e-4, 1.0, "cluster", 0.1, 2e3),
    ("4x softer, 2.5x less persistent", 256, 0.5, 0.1, 5e-4, 1.0, "uniform", 0.25, 8e3),
    ("r = 0.5, 4x less persistent", 256, 0.5, 0.1, 1e-3, 0.5, "uniform", 0.1, 3e3),
    ("r = 2: beta r twice the official", 256, 0.5, 0.1, 2.5e-4, 2.0, "uniform", 0.25, 1.6e4),
]


def mips_section() -> list[str]:
    lines = [
        MIPS_HEADER,
        "",
        "Written by `benchmarks/particles_cost.py --mips`. One replica per run, seed 0, cell list,",
        "float32. *solid*: fraction with >= 4 neighbours within 2.4 r; *gas*: <= 1 neighbour",
        "(the official code's tests). A uniform fluid at phi = 0.5 reads about solid 0.3-0.45,",
        "gas 0.15-0.2; a phase-separated box would show both large (a dense cluster holding most",
        "particles and a dilute gas). Columns: the state at 8 equally spaced times.",
        f"- load average at the start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        "",
        "| run | N | phi | v0 | gamma | r | start | dt | T | solid / gas at T/8 ... T | CPU s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    separated = []
    for label, n, phi, v0, gamma, radius, layout, dt, duration in MIPS_RUNS:
        model = P.mips_model(n, phi, v0=v0, gamma=gamma, radius=radius)
        gen = torch.Generator().manual_seed(0)
        x, g = P.initial_state(model, 1, gen, layout=layout)
        n_steps = int(duration / dt)
        marks, last = [], (0.0, 0.0)
        c0 = time.process_time()
        for i in range(1, n_steps + 1):
            x, g = P.step(model, x, g, dt, gen, "cells")
            if i % (n_steps // 8) == 0 and len(marks) < 8:
                solid = float(P.cluster_fraction(model, x)[0])
                gas = float(P.gas_fraction(model, x)[0])
                marks.append(f"{solid:.2f}/{gas:.2f}")
                last = (solid, gas)
        cpu = time.process_time() - c0
        lines.append(
            f"| {label} | {n} | {phi} | {v0} | {gamma:g} | {radius} | {layout} | {dt} | "
            f"{duration:g} | {' '.join(marks)} | {cpu:.0f} |"
        )
        print(lines[-1], flush=True)
        separated.append(last[0] >= 0.5 and last[1] >= 0.3)
    lines += [
        "",
        f"Phase separated at the end (solid >= 0.5 and gas >= 0.3): {sum(separated)} of "
        f"{len(separated)} runs.",
    ]
    return lines


def write_mips_section() -> None:
    text = OUT.read_text() if OUT.exists() else ""
    head = text.split(MIPS_HEADER)[0].rstrip("\n")
    OUT.write_text(head + "\n\n" + "\n".join(mips_section()) + "\n")
    print(f"wrote {OUT}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mips", action="store_true", help="only the MIPS section")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.mips:
        write_mips_section()
        return
    sizes = [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    rows = []
    for n in sizes:
        for r in (1, 8):
            if n * r > 8192 * 2:
                continue
            model = P.mips_model(n, 0.5, radius=0.5)
            gen = torch.Generator().manual_seed(1)
            x, g = P.initial_state(model, r, gen)
            compressed = P.wrap(x * 0.5, model.box)
            repeats = max(3, min(30, int(2e5 // (n * r))))
            for method in ("dense", "cells"):
                if method == "dense" and n * n * r > 4096**2 * 2:
                    rows.append((n, r, method, "gas", None, None, None))
                    continue
                cpu, wall = time_step(model, x, g, method, repeats)
                occ = max_occupancy(model, x) if method == "cells" else None
                rows.append((n, r, method, "gas", cpu, wall, occ))
                print(rows[-1], flush=True)
                if method == "cells":
                    cpu, wall = time_step(model, compressed, g, method, repeats)
                    occ = max_occupancy(model, compressed)
                    rows.append((n, r, method, "compressed", cpu, wall, occ))
                    print(rows[-1], flush=True)
    if args.quick:
        return
    lines = [
        "# AOUP repulsion: cost of one simulation step vs N",
        "",
        "Written by `benchmarks/particles_cost.py` (run from the repository root). One call of",
        "`particles.step` on `mips_model(N, phi=0.5, radius=0.5)` (range 2r + 8/beta), float32,",
        "torch single-threaded; median over repeats. *gas*: uniform random positions;",
        "*compressed*: the same particles squeezed into a quarter of the box (local phi ~ 2,",
        "the worst case for the cell list's occupancy M). The dense path's cost does not depend",
        "on the configuration. CPU ms = time.process_time of this process (fairer on a shared",
        "machine); wall ms is inflated by other jobs.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1, 5, 15 min) at the start: {LOAD[0]:.1f}, {LOAD[1]:.1f}, {LOAD[2]:.1f}",
        "",
        "The machine is shared with other jobs (2 cores, ~8 concurrent sessions): wall-clock",
        "numbers are upper bounds; compare methods by CPU ms.",
        "",
        "## Results (ms per step)",
        "",
        "| N | replicas | method | positions | CPU ms | wall ms | max cell occupancy M |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for n, r, method, kind, cpu, wall, occ in rows:
        if cpu is None:
            lines.append(f"| {n} | {r} | {method} | {kind} | skipped (too slow) | | |")
            continue
        occ_s = "" if occ is None else str(occ)
        lines.append(f"| {n} | {r} | {method} | {kind} | {cpu:.2f} | {wall:.2f} | {occ_s} |")
    by = {(n, r, m, k): c for n, r, m, k, c, _, _ in rows if c is not None}
    cross = [
        n
        for n in sizes
        if (n, 1, "dense", "gas") in by and by[(n, 1, "cells", "gas")] < by[(n, 1, "dense", "gas")]
    ]
    lines += [
        "",
        "## Reading",
        "",
        "- dense: O(N^2) pairs per replica, chunked over i so memory stays ~4M pairs;",
        "- cells: O(N 9 M) per replica (M the largest cell occupancy), needs >= 3 cells a side;",
        f"- the cell list was cheaper (CPU, gas, R = 1) at N in {cross};",
        f'- `method="auto"` uses cells from N >= {P.CELL_LIST_MIN_N} (`CELL_LIST_MIN_N`, '
        "when the box allows).",
    ]
    old = OUT.read_text() if OUT.exists() else ""
    kept = MIPS_HEADER + old.split(MIPS_HEADER)[1] if MIPS_HEADER in old else ""
    OUT.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
