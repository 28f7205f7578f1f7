"""memory.py: the child-process peak-memory probe reads a known allocation correctly, and the
tool it replaces (tracemalloc) does not see torch's allocator at all."""

from __future__ import annotations

import functools
import tracemalloc

import pytest
import torch

from pflow_explore.memory import allocation, peak_memory


def test_peak_memory_reads_a_known_allocation():
    """With the kernels warmed in setup (a 1 MiB allocation and sum), the probe reads the
    120 MiB tensor alone. Without a warm-up the first torch ops of the child add their own
    pages: 127 MiB in one checkout, 151 MiB in a fresh clone's venv on the same machine
    (so GradientJob.setup warms up its route before measuring)."""
    warm = functools.partial(allocation, None, 1.0)
    m = peak_memory(functools.partial(allocation, mb=120.0), setup=warm)
    assert m.probe in ("VmHWM", "ru_maxrss")
    assert 115.0 < m.peak_mb < 135.0, m  # 120 MiB tensor + a few MiB of interpreter
    assert m.result == pytest.approx(120 * 2**20 / 4)
    assert m.seconds > 0 and m.baseline_mb > 0


def test_tracemalloc_does_not_see_torch_tensors():
    """Why the probe is RSS: tracemalloc hooks Python's allocator, torch's CPU tensors bypass it."""
    tracemalloc.start()
    try:
        x = torch.ones(25 * 2**20 // 4 * 4)  # 100 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.numel() * 4 == 100 * 2**20
    assert peak < 2**20  # < 1 MiB seen of 100 MiB


def test_peak_memory_errors():
    with pytest.raises(ValueError, match="threads"):
        peak_memory(allocation, threads=0)
    with pytest.raises(ValueError, match="device"):
        peak_memory(allocation, device="tpu")
    with pytest.raises(RuntimeError, match="failed in the child"):
        peak_memory(functools.partial(allocation, mb=-1.0))
