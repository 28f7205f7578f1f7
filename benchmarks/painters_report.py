"""Chapter 01 painters: the same as ``benchmarks/chapter_report.py painters [...]``.

    .venv/bin/python benchmarks/painters_report.py [--no-scratch] [--scale cpu]

Kept for old links; writes results/painters_<scale>.md, which names chapter_report.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chapter_report import main

if __name__ == "__main__":
    main([str(Path(__file__).with_name("chapter_report.py")), "painters", *sys.argv[1:]])
