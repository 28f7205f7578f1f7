"""Time and size of the static course site (`make site`), built as a fresh clone builds it.

The build runs in its own copy of the repository's ``data/`` without ``data/cache/``
(``PFLOW_DATA``), so every chapter starts from the shipped cpu artifacts and nothing it
trained before helps; MathJax's tarball is copied in when this machine has it (its
download is not part of the build's time). Writes benchmarks/results/site_build.md: the
seconds per page, Sphinx's seconds, the whole build against the issue's target (<= 10 min on
2 cores) and the site's size, largest pages first.

    .venv/bin/python benchmarks/site_build.py [--scale cpu]
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
OUT = ROOT / "benchmarks" / "results" / "site_build.md"
TARGET_S = 600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(ROOT / "data", data, ignore=shutil.ignore_patterns("cache"))
        mathjax = ROOT / "data" / "site"
        if mathjax.exists():
            shutil.copytree(mathjax, data / "site", dirs_exist_ok=True)
        os.environ["PFLOW_DATA"] = str(data)
        from pflow_explore import site

        load_before = os.getloadavg()
        start = time.perf_counter()
        report = site.build(Path(tmp) / "site", args.scale)
        total = time.perf_counter() - start
        load_after = os.getloadavg()
        html = Path(tmp) / "site" / "html"
        sizes = sorted(
            ((p.stat().st_size, p.relative_to(html)) for p in html.rglob("*") if p.is_file()),
            reverse=True,
        )
    lines = [
        "# The static course site: build time and size",
        "",
        f"Written by `benchmarks/site_build.py --scale {args.scale}`: `pflow_explore.site.build`"
        " in a copy of `data/` without `data/cache/` (a fresh clone: the shipped cpu "
        "artifacts only), every page executed by papermill in a fresh kernel, then Sphinx.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average before / after: {' / '.join(f'{v:.2f}' for v in load_before)}; "
        f"{' / '.join(f'{v:.2f}' for v in load_after)}",
        "",
        "## Time",
        "",
        "| page | executed in (s) |",
        "|---|---:|",
        *(f"| {stem} | {s:.1f} |" for stem, s in report.execute_seconds.items()),
        f"| Sphinx (write and build) | {report.sphinx_seconds:.1f} |",
        f"| **whole build** | **{total:.1f}** |",
        "",
        f"Target (issue 15): <= {TARGET_S} s on 2 cores: "
        f"{'met' if total <= TARGET_S else 'NOT met'} ({total:.0f} s).",
        "",
        "## Size",
        "",
        f"The site: {report.size_bytes / 1e6:.1f} MB in {len(sizes)} files, "
        f"{len(report.pages)} pages. Largest files:",
        "",
        "| file | MB |",
        "|---|---:|",
        *(f"| {name} | {size / 1e6:.2f} |" for size, name in sizes[:12]),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT} ({total:.0f} s, {report.size_bytes / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
