"""Shared test set-up: an isolated data folder per test session, the gpu marker."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu); this machine has no GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Point PFLOW_DATA at an empty temporary folder for one test."""
    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))
    return tmp_path


def pytest_terminal_summary(terminalreporter):
    """Print seconds per executed notebook so slow chapters are visible in CI logs."""
    import sys

    # importlib mode names the module after its path; find it rather than import it again
    mod = next((m for n, m in sys.modules.items() if n.endswith("test_notebooks")), None)
    TIMINGS = getattr(mod, "TIMINGS", {})
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("notebook timings at SCALE=tiny (kernel start included)")
    for name, seconds in sorted(TIMINGS.items()):
        tr.write_line(f"{name:<40} {seconds:7.1f} s")
    tr.write_line(f"{'total':<40} {sum(TIMINGS.values()):7.1f} s")
