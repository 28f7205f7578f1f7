"""Chapter 01 painters at cpu scale: the claims table and timings -> results/painters_cpu.md.

Two fresh interpreters run ``painters.run(settings("cpu"))``:

- from the cache: the repository's data folder, with the shipped artifact
  (``pflow-explore prepare painters --scale cpu --ship``);
- from scratch: a temporary copy of the data folder without any painters artifact, so the
  denoiser is trained first (budget: 3 min for the whole notebook).

    .venv/bin/python benchmarks/painters_report.py [--no-scratch] [--scale cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]


def child(scale: str) -> None:
    """Run the chapter once in this interpreter and print one JSON line of measurements."""
    start, cpu_start = time.perf_counter(), time.process_time()
    sys.path.insert(0, str(ROOT))
    from pflow_explore.chapters import painters
    from pflow_explore.claims import to_json

    imported = time.perf_counter()
    r = painters.run(painters.settings(scale))
    ran = time.perf_counter()
    cs = painters.claims(r)
    painters.figures(r)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import": imported - start,
                "run": ran - imported,
                "claims_and_figures": done - ran,
                "total": done - start,
                "cpu_seconds": time.process_time() - cpu_start,
                "steps": r.seconds,
                "trained_seconds": r.trained_seconds,
                "from_cache": r.from_cache,
                "train_steps": len(r.fit.losses),
                "final_loss": sum(r.fit.losses[-200:]) / len(r.fit.losses[-200:]),
                "claims": json.loads(to_json(cs)),
            }
        )
    )


def measure(scale: str, data: Path | None) -> dict:
    env = dict(os.environ)
    if data is not None:
        env["PFLOW_DATA"] = str(data)
    cmd = [sys.executable, __file__, "--child", "--scale", scale]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode:
        raise RuntimeError(f"child run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def timing_rows(name: str, m: dict) -> list[str]:
    steps = ", ".join(f"{k} {v:.1f}" for k, v in m["steps"].items())
    return [
        f"| {name} | {m['import']:.1f} | {m['run']:.1f} | {m['claims_and_figures']:.1f} | "
        f"{m['total']:.1f} | {m['cpu_seconds']:.1f} | {m['trained_seconds']:.1f} | {steps} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch run")
    args = parser.parse_args()
    if args.child:
        child(args.scale)
        return
    sys.path.insert(0, str(ROOT))
    from pflow_explore.claims import Claim, to_text

    load_before = load_average()
    runs = {}
    if not args.no_scratch:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            shutil.copytree(
                ROOT / "data",
                data,
                ignore=shutil.ignore_patterns("painters", "cache"),
            )
            runs["from scratch (trains)"] = measure(args.scale, data)
    runs["from the shipped artifact"] = measure(args.scale, None)
    cached = runs["from the shipped artifact"]
    if not cached["from_cache"]:
        print("warning: the cached run trained: ship the artifact first", file=sys.stderr)
    claims = [
        Claim(**{k: v for k, v in c.items() if k != "measured_text"}) for c in cached["claims"]
    ]
    lines = [
        f"# Chapter 01 painters at scale {args.scale}: claims and timings",
        "",
        "Written by `benchmarks/painters_report.py` (run from the repository root). Each "
        "run is a fresh interpreter calling `painters.run(settings(scale))`, then "
        "`claims` and `figures`; the notebook adds kernel start and widgets on top.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before / after: {load_before} / {load_average()} "
        "(the machine is shared: other jobs slow every timing down)",
        "",
        "## Claims (from the shipped artifact)",
        "",
        "```",
        to_text(claims, title=f"painters at scale {args.scale}"),
        "```",
        "",
        *[f"- {c.name}: {c.note}" for c in claims if c.note],
        "",
        "## Timings (seconds)",
        "",
        "| run | import | run | claims + figures | total | CPU time | training | steps of run |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in runs.items():
        lines += timing_rows(name, m)
    lines += [
        "",
        "Wall-clock seconds except CPU time (user + system of the process, all threads): on "
        "a loaded machine wall time grows while CPU time stays near what 2 idle cores need "
        "(about CPU time / 2 in wall time).",
        "",
        f"Training: {cached['train_steps']} Adam steps, final loss (EDM-weighted, mean of the "
        f"last 200 steps) {cached['final_loss']:.4f}.",
    ]
    if "from scratch (trains)" in runs:
        scratch = runs["from scratch (trains)"]
        held = sum(c["holds"] for c in scratch["claims"])
        lines.append(
            f"From scratch: {held}/{len(scratch['claims'])} claims hold (retrained weights can "
            "differ from the shipped ones in the last digits)."
        )
    failing = [c for c in claims if not c.holds]
    lines += ["", "## What does not reproduce at this scale", ""]
    lines += [f"- {c.name}: measured {c.measured_text} ({c.criterion}); {c.note}" for c in failing]
    lines += ["- (nothing)"] if not failing else []
    out = ROOT / "benchmarks" / "results" / f"painters_{args.scale}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
