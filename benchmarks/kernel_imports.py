"""Seconds a chapter's kernel spends importing, before the notebook computes anything.

For every chapter notebook: the import statements of its code cells (top-level ``import`` and
``from`` lines, in order), run in a fresh Python (as a kernel would, without the kernel's
own start), median of ``--repeat`` runs; and, from one run under ``python -X importtime``,
the top-level imports that took longest (cumulative). Every page a plain server shows and
every preheated kernel pays this once.

    .venv/bin/python benchmarks/kernel_imports.py [--label after] [--repeat 3]

Writes benchmarks/results/kernel_imports_<label>.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]


def import_lines(notebook: Path) -> str:
    """The notebook's top-level import statements (single-line ones), in order."""
    cells = json.loads(notebook.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            if line.startswith(("import ", "from ")) and not line.rstrip().endswith("("):
                lines.append(line)
    return "\n".join(dict.fromkeys(lines))


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def slowest(code: str, n: int = 4) -> list[tuple[str, float]]:
    """The ``n`` modules imported directly by ``code`` with the largest cumulative import
    time, from ``-X importtime``."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2  # "  " per level below the first
        if depth == 0:
            rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    baseline = seconds("pass")
    rows = []
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = import_lines(notebook)
        times = [seconds(code) - baseline for _ in range(args.repeat)]
        top = ", ".join(f"{name} {s:.2f}" for name, s in slowest(code))
        rows.append(f"| {notebook.name} | {statistics.median(times):.2f} | {top} |")
        print(rows[-1], flush=True)
    rfc = importlib.util.find_spec("rfc3987_syntax") is not None
    text = "\n".join(
        [
            f"# Kernel imports ({args.label})",
            "",
            "Written by `benchmarks/kernel_imports.py`: each chapter notebook's import lines in "
            f"a fresh Python, median of {args.repeat} runs, less an empty interpreter's start "
            f"({baseline:.2f} s); the slowest top-level imports (cumulative seconds, one run "
            "under `-X importtime`).",
            "",
            "## Machine",
            "",
            *machine(),
            f"- rfc3987_syntax installed: {'yes' if rfc else 'no'}",
            "",
            "## Imports",
            "",
            "| notebook | import s | slowest (s, cumulative) |",
            "|---|---:|---|",
            *rows,
            "",
        ]
    )
    out = ROOT / "benchmarks" / "results" / f"kernel_imports_{args.label}.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
