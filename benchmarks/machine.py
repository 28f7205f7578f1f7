"""A description of the machine a benchmark ran on, for the results/*.md files."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np


def machine() -> list[str]:
    import ipywidgets
    import plotly
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"- CPU: {model}; {os.cpu_count()} logical cores, {usable} usable by this process",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- torch {torch.__version__}, numpy {np.__version__}, plotly {plotly.__version__}, "
        f"ipywidgets {ipywidgets.__version__}",
        f"- torch threads: {torch.get_num_threads()}",
    ]
