"""Peak memory and time of gradients through the probability flow vs the number of steps:
naive backprop against the adjoint (by hand, and torchdiffeq's odeint_adjoint); and the
accuracy of those gradients on Gaussian data, where they are known in closed form (card 07).

1. Memory and time (``adjoint.GradientJob`` / ``adjoint.gradient_memory``): an eps-model
   MLP(2, hidden 256, depth 3) (untrained: memory and time do not depend on the weights), VP
   linear path, 1024 points from rho_T = 80 to 0 on ``adjoint.rho_grid``, loss mean(x_e^2),
   gradients with respect to x_T and every weight; Euler steps in rho (DDIM) for all three
   routes (torchdiffeq: its "euler" on the same grid). Each (route, steps) runs in a fresh
   child process forked from a server that has only imported torch
   (``memory.peak_memory``): peak RSS (VmHWM after resetting it through
   /proc/self/clear_refs) above the RSS just before the gradient call, after a warm-up call
   on 2 points that loads what torch loads on first use. Every configuration runs
   ``--repeats`` times, rounds interleaved; medians reported, with the spread of the peak.
   Slopes: least-squares lines of peak MiB and CPU ms against the number of steps.
   The calibration row: a 100 MiB tensor measured the same way.
2. Accuracy: N(mu, Sigma) in d = 3 (``GaussianFlow.random(3, 0)``), its exact eps on the VP
   path (``theory.adjoint.GaussianEps``) with a mean shift c, 32 points from rho_T = 40,
   L = |x_e - target|^2 / 2; relative errors (2-norm) of dL/dx_T, dL/dc, dL/dmu and
   dL/dlambda against ``theory.adjoint.exact_gradients``, for each route and method vs steps,
   and the adaptive (dopri5) routes vs tolerance.

    nice -n 19 .venv/bin/python benchmarks/adjoint_memory.py            # writes the results
    nice -n 19 .venv/bin/python benchmarks/adjoint_memory.py --quick    # prints only
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import torch
from machine import machine

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.memory import allocation, peak_memory
from pflow_explore.theory.adjoint import GaussianEps, exact_flow_map, exact_gradients
from pflow_explore.theory.gaussian_flow import GaussianFlow

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "adjoint_memory_cpu.md"
ROUTES = (("naive", "euler"), ("adjoint", "euler"), ("torchdiffeq", "euler"))
F64 = torch.float64


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x: (b, a)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b /= sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


def memory_section(steps: list[int], repeats: int, batch: int) -> list[str]:
    runs: dict[tuple[str, int], list] = {}
    for _ in range(repeats):
        for route, method in ROUTES:
            for n in steps:
                job = ad.GradientJob(route, n, method, batch=batch, hidden=256, depth=3)
                m = ad.gradient_memory(job)
                runs.setdefault((route, n), []).append(m)
                print(f"{route:12s} {n:4d} {m.peak_mb:8.1f} MiB {m.cpu_seconds:7.3f} s CPU")
    calib = peak_memory(functools.partial(allocation, mb=100.0))
    lines = [
        "## 1. Peak memory and time vs steps",
        "",
        f"MLP(2, 256, 3) eps-model, {batch} points, Euler steps in rho from 80 to 0, "
        f"gradients to x_T and all weights; {repeats} runs each (medians; peak range in "
        f"brackets). Probe: {calib.probe}. Calibration: a 100 MiB tensor reads "
        f"{calib.peak_mb:.1f} MiB.",
        "",
        "| route | steps | NFE | peak MiB | CPU s | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    fits = []
    for route, method in ROUTES:
        xs, peaks, cpus, walls = [], [], [], []
        for n in steps:
            ms = runs[route, n]
            peak = statistics.median(m.peak_mb for m in ms)
            lo, hi = min(m.peak_mb for m in ms), max(m.peak_mb for m in ms)
            cpu = statistics.median(m.cpu_seconds for m in ms)
            wall = statistics.median(m.seconds for m in ms)
            nfe = int(ms[0].result["nfe"])
            xs.append(n)
            peaks.append(peak)
            cpus.append(cpu)
            walls.append(wall)
            lines.append(
                f"| {route} ({method}) | {n} | {nfe} | {peak:.1f} [{lo:.1f}, {hi:.1f}] "
                f"| {cpu:.3f} | {wall:.3f} |"
            )
        mb, mb0 = slope(xs, peaks)
        ms_, ms0 = slope(xs, [1000 * c for c in cpus])
        fits.append((route, method, mb, mb0, ms_, ms0))
    lines += [
        "",
        "Least-squares fits over the steps above:",
        "",
        "| route | MiB per step | MiB at 0 steps | CPU ms per step | CPU ms at 0 steps |",
        "|---|---:|---:|---:|---:|",
    ]
    for route, method, mb, mb0, ms_, ms0 in fits:
        lines.append(f"| {route} ({method}) | {mb:.3f} | {mb0:.1f} | {ms_:.2f} | {ms0:.1f} |")
    top = steps[-1]

    def med(route: str, key: str) -> float:
        return statistics.median(getattr(m, key) for m in runs[route, top])

    naive, hand = med("naive", "peak_mb"), med("adjoint", "peak_mb")
    lines += [
        "",
        f"At {top} steps naive backprop peaks {naive:.0f} MiB above the model and batch, the "
        f"hand adjoint {hand:.0f} MiB ({naive / hand:.0f}x less) and torchdiffeq's "
        f"{med('torchdiffeq', 'peak_mb'):.0f} MiB; CPU time relative to naive: adjoint "
        f"{med('adjoint', 'cpu_seconds') / med('naive', 'cpu_seconds'):.2f}x, torchdiffeq "
        f"{med('torchdiffeq', 'cpu_seconds') / med('naive', 'cpu_seconds'):.2f}x.",
    ]
    return lines


def gaussian_case():
    gauss = GaussianFlow.random(3, 0)
    gen = torch.Generator().manual_seed(0)
    path = paths.VPLinear()
    c = 0.5 * torch.randn(3, generator=gen, dtype=F64)
    eps = GaussianEps.from_flow(gauss, path)
    flow = ad.RhoFlow(eps, path, c)
    rho_T = 40.0
    alpha_T = float(flow.alpha(rho_T))
    x_T = alpha_T * rho_T * torch.randn(32, 3, generator=gen, dtype=F64)
    target = torch.randn(32, 3, generator=gen, dtype=F64)

    def loss(x):
        return 0.5 * ((x - target) ** 2).sum()

    x_e = exact_flow_map(eps, x_T, rho_T, alpha_T, condition=c)
    exact = exact_gradients(eps, x_T, (x_e - target).detach(), rho_T, alpha_T, condition=c)
    return flow, x_T, rho_T, loss, exact


def _errors(g: ad.Gradients, exact) -> list[float]:
    def rel(a, b):
        return float((a - b).norm() / b.norm())

    return [
        rel(g.x_T, exact.x_T),
        rel(g.condition, exact.mean),
        rel(g.params[0], exact.mean),
        rel(g.params[1], exact.eigenvalues),
    ]


def accuracy_section(steps: list[int]) -> list[str]:
    flow, x_T, rho_T, loss, exact = gaussian_case()
    lines = [
        "## 2. Gradient accuracy on Gaussian data (closed form known)",
        "",
        "N(mu, Sigma), d = 3, VP path, 32 points from rho_T = 40 to 0, "
        "L = |x_e - target|^2 / 2. Relative 2-norm errors against the closed form "
        "(theory.adjoint.exact_gradients); c is a shift of the mean, so dL/dc = dL/dmu. "
        f"The last column: the adjoint's backward re-solve of y_T = x_T / alpha_T "
        f"(max |y_T| = {float((x_T / flow.alpha(rho_T)).abs().max()):.1f}).",
        "",
        "| route (method) | steps | NFE | dL/dx_T | dL/dc | dL/dmu | dL/dlambda "
        "| max abs y_T re-solve error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    configs = [
        ("naive", "euler"),
        ("naive", "heun"),
        ("adjoint", "euler"),
        ("adjoint", "heun"),
        ("adjoint", "dpm2"),
        ("adjoint", "rk4"),
        ("torchdiffeq", "euler"),
        ("torchdiffeq", "rk4"),
    ]
    for route, method in configs:
        for n in steps:
            g = ad.gradients(route, flow, x_T, ad.rho_grid(n, rho_T), loss, method)
            errs = " | ".join(f"{e:.2e}" for e in _errors(g, exact))
            rec = f"{g.reconstruction:.2e}" if g.reconstruction is not None else ""
            lines.append(f"| {route} ({method}) | {n} | {g.nfe} | {errs} | {rec} |")
    lines += [
        "",
        "Adaptive (dopri5, rtol = atol = tol; the adjoint re-solves y backwards):",
        "",
        "| route | tol | NFE | dL/dx_T | dL/dc | dL/dmu | dL/dlambda "
        "| max abs y_T re-solve error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for route in ("adjoint", "torchdiffeq"):
        for tol in (1e-3, 1e-5, 1e-7, 1e-9):
            g = ad.gradients(
                route, flow, x_T, ad.rho_grid(2, rho_T), loss, "dopri5", rtol=tol, atol=tol
            )
            errs = " | ".join(f"{e:.2e}" for e in _errors(g, exact))
            rec = f"{g.reconstruction:.2e}" if g.reconstruction is not None else ""
            lines.append(f"| {route} | {tol:g} | {g.nfe} | {errs} | {rec} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes; print only")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load, start = os.getloadavg(), time.perf_counter()
    steps = [10, 20] if args.quick else [10, 20, 50, 100, 200]
    memory = memory_section(steps, 1 if args.quick else args.repeats, 1024)
    accuracy = accuracy_section([10, 40] if args.quick else [10, 20, 50, 100, 200])
    end = os.getloadavg()
    lines = [
        "# Gradients through the probability flow: memory, time and accuracy vs steps",
        "",
        "Written by `benchmarks/adjoint_memory.py` (run from the repository root); what is "
        "measured and how: see the script's docstring.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1, 5, 15 min) at the start: {load[0]:.1f}, {load[1]:.1f}, "
        f"{load[2]:.1f}; at the end: {end[0]:.1f}, {end[1]:.1f}, {end[2]:.1f}",
        f"- run time: {time.perf_counter() - start:.0f} s; each measurement in a child "
        "process with 1 torch thread",
        "",
        "The machine is shared with other jobs: wall times are upper bounds, compare CPU times; "
        "peak memory does not depend on the load.",
        "",
        *memory,
        "",
        *accuracy,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
