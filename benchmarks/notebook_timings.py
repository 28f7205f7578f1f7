"""Seconds to execute every chapter notebook headless with papermill, per scale, kernel start
included, against the budgets of the scale contract (README, "Scale contract"):

- tiny: the whole notebook <= 20 s on 2 CPU cores. tiny artifacts are never shipped, so a
  fresh clone trains them: the *first* run is from scratch, the *second* finds the cache.
- cpu: <= 20 s with the artifacts a fresh clone has (the shipped ones under
  ``data/shipped/``: the *first* run), <= 20 s again from the cache (*second*), and
  <= 3 min from scratch (``--scratch``: a third run with ``data/shipped/<slug>`` removed too,
  so the notebook trains everything; ``benchmarks/chapter_report.py`` times the same from
  the module, phase by phase).

Every run gets its own copy of the repository's ``data/`` (``PFLOW_DATA``) without
``data/cache/``; a notebook's second run reuses the first run's copy. The load average
before and after each notebook is recorded: a time measured beside other work says so.

    .venv/bin/python benchmarks/notebook_timings.py [--scales tiny cpu] [--scratch] [--only 01]

``--only`` (notebook prefixes) writes ``notebook_timings_partial.md`` instead, so the full
table of record is only ever written by a run over every chapter.
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
# (first run, second run, from scratch) in seconds; None: not a budget of the contract
BUDGET_S = {"tiny": (20, 20, 20), "cpu": (20, 20, 180), "gpu": (600, 600, 600)}
FIRST = {"tiny": "first (trains: tiny is never shipped)", "cpu": "first (shipped artifacts)"}


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


def data_copy(tmp: Path, name: str, slug: str, shipped: bool) -> Path:
    """A copy of data/ without cache/ (and without shipped/<slug> unless ``shipped``)."""
    data = tmp / name
    skip = ["cache"] + ([] if shipped else [slug])
    shutil.copytree(ROOT / "data", data, ignore=shutil.ignore_patterns(*skip))
    return data


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["tiny", "cpu"])
    parser.add_argument("--scratch", action="store_true", help="also time cpu from scratch")
    parser.add_argument("--only", nargs="*", default=None, help="notebook prefixes (01 02 ...)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pflow_explore import course

    chapters = {s: p for s, p in course.notebooks().items() if s != "index"}
    if args.only:
        chapters = {s: p for s, p in chapters.items() if p.name[:2] in args.only}
    rows, began = [], time.time()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for scale in args.scales:
            for slug, nb in chapters.items():
                before = load()
                data = data_copy(tmp, f"data-{scale}-{slug}", slug, shipped=True)
                first = run_once(nb, scale, data, tmp)
                second = run_once(nb, scale, data, tmp)
                scratch = None
                if args.scratch and scale != "tiny":
                    bare = data_copy(tmp, f"bare-{scale}-{slug}", slug, shipped=False)
                    scratch = run_once(nb, scale, bare, tmp)
                rows.append((nb.name, scale, first, second, scratch, before, load()))
                extra = f"  scratch {scratch:6.1f} s" if scratch is not None else ""
                times = f"first {first:6.1f} s  second {second:6.1f} s{extra}"
                print(f"{nb.name:<28} {scale:<5} {times}")

    lines = [
        "# Notebook execution times",
        "",
        "Written by `benchmarks/notebook_timings.py` (what each column means: its docstring):",
        "papermill, parameters injected, a fresh kernel per run, its start included.",
        f"*first*: a fresh clone's data folder ({FIRST['cpu']} at cpu; tiny trains everything);",
        "*second*: the same notebook again, from the cache the first run left;",
        "*scratch*: cpu with the chapter's shipped artifacts removed (trains everything).",
        "",
        "## Machine",
        "",
        *machine(),
        f"- run time: {time.time() - began:.0f} s",
        "",
        "## Times",
        "",
        "| notebook | scale | first (s) | second (s) | scratch (s) | budget first / second / "
        "scratch (s) | within? | load average before -> after (1, 5, 15 min) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for name, scale, first, second, scratch, before, after in rows:
        b1, b2, b3 = BUDGET_S[scale]
        ok = first <= b1 and second <= b2 and (scratch is None or scratch <= b3)
        s_text = "-" if scratch is None else f"{scratch:.1f}"
        lines.append(
            f"| {name} | {scale} | {first:.1f} | {second:.1f} | {s_text} | {b1} / {b2} / {b3} | "
            f"{'yes' if ok else 'NO'} | {before} -> {after} |"
        )
    out = OUT.with_name("notebook_timings_partial.md") if args.only else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
