"""Seconds to execute every notebook headless with papermill, per scale, kernel start included.

Budgets (DESIGN.md, "Scale contract"): tiny <= 20 s on 2 CPU cores; cpu <= 3 min from
scratch and <= 20 s with cached artifacts. Each notebook runs twice per scale: first with
an empty artifact cache (a fresh PFLOW_DATA folder holding only the shipped classifier
and artifacts), then again with the cache that first run left.

    .venv/bin/python benchmarks/notebook_timings.py [--scales tiny cpu]   # writes results/
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "notebook_timings.md"
BUDGET_S = {"tiny": (20, 20), "cpu": (180, 20), "gpu": (600, 600)}


def run_once(notebook: Path, scale: str, data: Path, out_dir: Path) -> float:
    import papermill

    os.environ["PFLOW_DATA"] = str(data)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(notebook),
        str(out_dir / notebook.name),
        parameters={"SCALE": scale},
        kernel_name="python3",
        cwd=str(notebook.parent),
        progress_bar=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["tiny", "cpu"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pflow_explore import course

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            for slug, nb in course.notebooks().items():
                data = Path(tmp) / f"data-{scale}-{slug}"
                shutil.copytree(ROOT / "data", data, ignore=shutil.ignore_patterns("cache"))
                cold = run_once(nb, scale, data, Path(tmp))
                warm = run_once(nb, scale, data, Path(tmp))
                rows.append((nb.name, scale, cold, warm))
                print(f"{nb.name:<32} {scale:<5} cold {cold:6.1f} s  cached {warm:6.1f} s")

    lines = [
        "# Notebook execution times",
        "",
        "Written by `benchmarks/notebook_timings.py`: papermill, parameters injected, a fresh",
        "kernel per run (its start included). *cold*: empty artifact cache; *cached*: the",
        "same notebook again with the artifacts the cold run stored.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "## Times",
        "",
        "| notebook | scale | cold (s) | cached (s) | budget cold / cached (s) | within? |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, scale, cold, warm in rows:
        b_cold, b_warm = BUDGET_S[scale]
        ok = "yes" if cold <= b_cold and warm <= b_warm else "NO"
        lines.append(f"| {name} | {scale} | {cold:.1f} | {warm:.1f} | {b_cold} / {b_warm} | {ok} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
