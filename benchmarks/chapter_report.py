"""One chapter's claims and timings at one scale -> benchmarks/results/<slug>_<scale>.md.

Each run is a fresh interpreter (cold imports, nothing in memory) that calls the chapter's
``prepare``, ``run``, ``claims`` and ``figures`` on ``settings(scale)``, timing each phase
in wall-clock and CPU seconds, with ``PFLOW_DATA`` pointing at a temporary copy of the
repository's ``data/`` folder:

- *shipped*: the copy without ``data/cache/``, i.e. what a fresh clone has: the chapter
  finds the artifacts committed under ``data/shipped/<slug>/`` (written by
  ``pflow-explore prepare <slug> --scale cpu --ship``) and trains nothing it finds there;
- *scratch* (unless ``--no-scratch``): the copy without ``data/shipped/<slug>/`` either, so
  the chapter trains everything first (budget at scale cpu: 3 min).

The report holds the machine, the load average around each run, the timings, the claims
table as ``pflow-explore verify`` computes it (every field, nothing cut), the rows on which
the retrained run differs from the shipped one, and the command that wrote it.

    .venv/bin/python benchmarks/chapter_report.py SLUG [--scale cpu] [--no-scratch] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = "CHAPTER_REPORT_JSON "  # the child's result line; chapters may print to stdout too
PHASES = ("import", "prepare", "run", "claims", "figures")
# environment variables that change what a run does or how fast it is: kept in the command
RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PFLOW_DATA", "PFLOW_SCALE", "PFLOW_SHIP")
RUNS = {
    "scratch": "from scratch (trains)",
    "shipped": "from the shipped artifacts (a fresh clone)",
}


# -- pure parts (tests/test_benchmarks.py) --------------------------------------------------
def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "unknown" off Linux."""
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def copy_data(src: Path, dst: Path, drop_shipped: str | None = None) -> Path:
    """Copy the data folder ``src`` to ``dst`` without its ``cache/`` (artifacts built on
    this machine) and, when ``drop_shipped`` names a chapter, without ``shipped/<that>/``."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).resolve()
        if here == src.resolve():
            return {"cache"} & set(names)
        if drop_shipped and here == (src / "shipped").resolve():
            return {drop_shipped} & set(names)
        return set()

    shutil.copytree(src, dst, ignore=ignore)
    return dst


def artifact_files(cache: Path) -> dict[str, float]:
    """``{relative path: mtime}`` of every artifact payload (``*.pt``) under ``cache``."""
    if not cache.is_dir():
        return {}
    return {str(p.relative_to(cache)): p.stat().st_mtime for p in sorted(cache.rglob("*.pt"))}


def written(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Payloads new or rewritten between two :func:`artifact_files` snapshots."""
    return sorted(k for k, t in after.items() if before.get(k) != t)


def command_line(argv: list[str], env: dict[str, str]) -> str:
    """The command as typed from the repository root: recorded environment variables,
    the interpreter (relative to the root when inside it), the script and its arguments."""
    exe, script = Path(sys.executable).absolute(), Path(argv[0]).resolve()
    exe_text = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)
    script_text = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else argv[0]
    prefix = [f"{k}={shlex.quote(env[k])}" for k in RECORDED_ENV if k in env]
    return " ".join([*prefix, exe_text, script_text, *map(shlex.quote, argv[1:])])


def md(text: object) -> str:
    """A markdown table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_table(claims: list[dict]) -> list[str]:
    """Every field of every claim (``claims.to_json``), as a markdown table."""
    lines = [
        "| claim | paper | measured | criterion | holds | note |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        cells = (
            c["name"],
            c["paper"],
            c["measured_text"],
            c["criterion"],
            "yes" if c["holds"] else "**NO**",
            c.get("note", ""),
        )
        lines.append("| " + " | ".join(md(x) for x in cells) + " |")
    return lines


def _verdict(claim: dict) -> str:
    return "holds" if claim["holds"] else "NO"


def differences(reference: list[dict], other: list[dict]) -> list[str]:
    """Rows whose measured value or verdict differ between two runs' claims, by name."""
    ref = {c["name"]: c for c in reference}
    out = []
    for c in other:
        r = ref.get(c["name"])
        if r is None:
            out.append(f"- {c['name']}: only in this run, measured {c['measured_text']}")
        elif (r["measured_text"], r["holds"]) != (c["measured_text"], c["holds"]):
            out.append(
                f"- {c['name']}: {c['measured_text']} ({_verdict(c)}) vs shipped "
                f"{r['measured_text']} ({_verdict(r)})"
            )
    names = {c["name"] for c in other}
    out += [f"- {n}: missing from this run" for n in ref if n not in names]
    return out


def timing_table(runs: dict[str, dict]) -> list[str]:
    """Wall / CPU seconds of each phase, one row per run."""
    head = " | ".join(PHASES)
    lines = [
        f"| run | {head} | total | load before / after (1, 5, 15 min) |",
        "|---|" + "---:|" * (len(PHASES) + 1) + "---|",
    ]
    for key, m in runs.items():
        cells = [f"{m['wall'][p]:.1f} / {m['cpu'][p]:.1f}" for p in PHASES]
        total = f"{sum(m['wall'].values()):.1f} / {sum(m['cpu'].values()):.1f}"
        loads = f"{m['load_before']}; {m['load_after']}"
        lines.append(f"| {RUNS[key]} | " + " | ".join(cells) + f" | {total} | {loads} |")
    return lines


def render(
    slug: str,
    title: str,
    scale: str,
    runs: dict[str, dict],
    machine_lines: list[str],
    command: str,
) -> str:
    """The report: machine, timings, claims of the shipped run, what the scratch run
    changed, and the claims that do not hold."""
    shipped = runs["shipped"]
    claims = shipped["claims"]
    held = sum(c["holds"] for c in claims)
    lines = [
        f"# Chapter {title} at scale {scale}: claims and timings",
        "",
        f"Written by `{command}` (from the repository root; `benchmarks/chapter_report.py`).",
        f"Each run is a fresh interpreter calling `{slug}.prepare`, `run`, `claims` and "
        "`figures` on `settings(scale)` with `PFLOW_DATA` set to a temporary copy of `data/`: "
        f"*{RUNS['shipped']}* without `data/cache/`; *{RUNS['scratch']}* without "
        f"`data/shipped/{slug}/` either. The notebook adds kernel start and widgets on top "
        "(`notebook_timings.md`).",
        "",
        "## Machine",
        "",
        *machine_lines,
        "- the load average is given per run below: a load above the number of cores means "
        "other jobs shared the CPU, which inflates wall times; CPU times (user + system of "
        "the process, all threads) are the fairer measure then",
        "",
        "## Timings (seconds, wall / CPU)",
        "",
        *timing_table(runs),
        "",
    ]
    for key, m in runs.items():
        if m.get("steps"):
            steps = ", ".join(f"{k} {v:.1f}" for k, v in m["steps"].items())
            lines.append(f"- Steps of `run`, {RUNS[key]} (wall seconds): {steps}.")
    for key, m in runs.items():
        n = len(m["written"])
        what = f"{n} artifact(s) built and cached" if n else "no artifact built"
        lines.append(f"- {RUNS[key].capitalize()}: {what}.")
    if shipped["written"]:
        names = ", ".join(shipped["written"][:6]) + (" ..." if len(shipped["written"]) > 6 else "")
        lines.append(
            f"- **The shipped run built {len(shipped['written'])} artifact(s)** ({names}): "
            f"`data/shipped/{slug}/` lacks them at these settings; ship them with "
            f"`pflow-explore prepare {slug} --scale {scale} --ship`, so dashboards and "
            "notebooks of a fresh clone do not train."
        )
    lines += [
        "",
        f"## Claims ({RUNS['shipped']}): {held}/{len(claims)} hold",
        "",
        f"The rows `pflow-explore verify {slug} --scale {scale}` prints, every field in full.",
        "",
        *claims_table(claims),
        "",
    ]
    if "scratch" in runs:
        scratch = runs["scratch"]["claims"]
        diff = differences(claims, scratch)
        s_held = sum(c["holds"] for c in scratch)
        lines += [
            f"## {RUNS['scratch'].capitalize()}: {s_held}/{len(scratch)} hold",
            "",
            "Retrained weights can differ from the shipped ones (other machine, other "
            "thread count), hence the measured values. "
            + ("Rows that differ:" if diff else "Every row is identical to the shipped run."),
            "",
            *diff,
            "",
        ]
    failing = [c for c in claims if not c["holds"]]
    lines += ["## What does not hold at this scale", ""]
    lines += [
        f"- {c['name']}: measured {c['measured_text']} ({c['criterion']})"
        + (f"; {c['note']}" if c.get("note") else "")
        for c in failing
    ] or ["- (nothing)"]
    return "\n".join(lines) + "\n"


# -- the child: one fresh interpreter -------------------------------------------------------
def child(slug: str, scale: str) -> None:
    """Run the chapter once in this interpreter; print one MARKER line of JSON."""
    wall, cpu = {}, {}
    clock = [time.perf_counter(), time.process_time()]

    def tick(phase: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        wall[phase], cpu[phase] = now[0] - clock[0], now[1] - clock[1]
        clock[:] = now

    sys.path.insert(0, str(ROOT))
    from pflow_explore import cache, chapters
    from pflow_explore.claims import to_json

    mod = chapters.module(slug)
    if mod is None:
        raise SystemExit(f"error: no chapter module pflow_explore/chapters/{slug}.py")
    tick("import")
    before = artifact_files(cache.cache_dir())
    s = mod.settings(scale)
    mod.prepare(s)
    tick("prepare")
    r = mod.run(s)
    tick("run")
    found = mod.claims(r)
    tick("claims")
    mod.figures(r)
    tick("figures")
    out = {
        "wall": wall,
        "cpu": cpu,
        "steps": dict(getattr(r, "seconds", {}) or {}),
        "written": written(before, artifact_files(cache.cache_dir())),
        "claims": json.loads(to_json(found)),
    }
    print(MARKER + json.dumps(out))


def measure(slug: str, scale: str, data: Path) -> dict:
    """One fresh interpreter on the data folder ``data``; its JSON plus the load around it."""
    env = dict(os.environ, PFLOW_DATA=str(data), PFLOW_SCALE=scale)
    cmd = [sys.executable, __file__, slug, "--child", "--scale", scale]
    load_before = load_average()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode:
        raise RuntimeError(f"{slug} at {scale}: the run failed:\n{out.stderr[-3000:]}")
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith(MARKER))
    return {
        **json.loads(line[len(MARKER) :]),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slug", help="the chapter, e.g. painters (pflow-explore list)")
    parser.add_argument("--scale", default="cpu", choices=("tiny", "cpu", "gpu"))
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch run")
    parser.add_argument("--out", help="the report's path (default results/<slug>_<scale>.md)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv[1:])
    if args.child:
        child(args.slug, args.scale)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine

    runs = {}
    with tempfile.TemporaryDirectory(prefix="chapter-report-") as tmp:
        if not args.no_scratch:
            data = copy_data(ROOT / "data", Path(tmp) / "scratch", drop_shipped=args.slug)
            runs["scratch"] = measure(args.slug, args.scale, data)
        data = copy_data(ROOT / "data", Path(tmp) / "shipped")
        runs["shipped"] = measure(args.slug, args.scale, data)
    if runs["shipped"]["written"]:
        print(f"warning: the shipped run trained: ship {args.slug} first", file=sys.stderr)
    sys.path.insert(0, str(ROOT))
    from pflow_explore import course

    notebook = course.notebooks().get(args.slug)
    title = notebook.stem.replace("_", " ", 1) if notebook else args.slug
    command = command_line(argv, dict(os.environ))
    text = render(args.slug, title, args.scale, runs, machine(), command)
    out = Path(args.out) if args.out else RESULTS / f"{args.slug}_{args.scale}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
