"""Peak memory and wall time of one computation, measured in a fresh child process.

    m = peak_memory(run, setup)      # run(setup()) in a spawned child; m.peak_mb, m.seconds

What is measured, and why it can be trusted:

- CPU: the peak resident set size (RSS) of the child while ``run`` works, minus its RSS
  just before. On Linux the kernel's high-water mark VmHWM is reset to the current RSS by
  writing "5" to /proc/self/clear_refs, so the peak is the work's own and not the import's
  or ``setup``'s (``probe = "VmHWM"``). Where that file cannot be written, ru_maxrss
  (getrusage) is read before and after instead (``probe = "ru_maxrss"``): a high-water mark
  since the process started, so a work whose peak stays below the setup's shows 0.
  RSS counts every page the process holds, whoever allocated it: torch's CPU allocator
  (which calls malloc / posix_memalign directly, so Python's ``tracemalloc``, which hooks
  only Python's own allocator, does not see a torch tensor at all), BLAS workspaces and
  the interpreter. :func:`allocation` is the calibration: a tensor of N MB reads N MB
  (tests/test_memory.py).
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  memory allocated before (``probe = "cuda.max_memory_allocated"``): the tensors torch
  held, without the caching allocator's reserve.

Why a child process: a high-water mark only moves up, and a process that has run other
things holds freed memory in its allocator's caches, which a later computation reuses
without touching the RSS. A fresh process per measurement has neither. It is forked from a
``forkserver`` that has only imported torch (no tensor work, no threads started: a clean
interpreter without the ~2 s import per measurement; ``spawn`` where there is no forkserver),
so ``run`` and ``setup`` must be picklable: module-level functions, ``functools.partial``
of them, or methods of picklable objects (a notebook's own functions are not). The child
runs torch on ``threads`` threads.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import re
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
MB = 2**20


@dataclass
class PeakMemory:
    """peak_mb: peak memory of ``run`` above ``baseline_mb``, the memory held just before it
    (RSS on CPU, torch's allocated bytes on CUDA), in MiB; seconds: wall time of ``run``;
    cpu_seconds: the child's CPU time during ``run`` (fairer than wall time on a shared
    machine); probe: which counter was read; result: what ``run`` returned."""

    peak_mb: float
    baseline_mb: float
    seconds: float
    device: str
    probe: str
    result: Any = None
    cpu_seconds: float = 0.0


def _status_kb(field: str) -> float | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return float(match.group(1)) if match else None


def _reset_cpu_peak() -> tuple[str, float]:
    """Reset the high-water mark if the kernel allows it: (probe name, baseline in MiB)."""
    try:
        CLEAR_REFS.write_text("5")
        rss = _status_kb("VmRSS")
        if rss is not None and _status_kb("VmHWM") == rss:
            return "VmHWM", rss / 1024
    except OSError:
        pass
    return "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _cpu_peak(probe: str) -> float:
    if probe == "VmHWM":
        return (_status_kb("VmHWM") or 0.0) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(
    conn: Any, run: Callable[[Any], Any], setup: Callable[[], Any] | None, device: str, threads: int
) -> None:
    """The child's side: build, reset the peak, time ``run``, read the peak, send a dict."""
    try:
        torch.set_num_threads(threads)
        state = setup() if setup is not None else None
        gc.collect()
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            probe, baseline = "cuda.max_memory_allocated", torch.cuda.memory_allocated() / MB
        else:
            probe, baseline = _reset_cpu_peak()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run(state)
        if cuda:
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        peak = torch.cuda.max_memory_allocated() / MB if cuda else _cpu_peak(probe)
        out = dict(peak=peak, baseline=baseline, seconds=seconds, cpu=cpu, probe=probe)
        conn.send(dict(out, result=result))
    except BaseException:  # the parent re-raises it with the child's traceback
        conn.send(dict(error=traceback.format_exc()))
    finally:
        conn.close()


def _context() -> Any:
    """The forkserver context with torch preloaded (once per process), else spawn."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch"])  # takes effect when the server first starts
    return ctx


def peak_memory(
    run: Callable[[Any], Any],
    setup: Callable[[], Any] | None = None,
    device: str = "cpu",
    threads: int = 1,
    timeout: float = 300.0,
) -> PeakMemory:
    """Run ``run(setup())`` in a fresh child process and measure ``run`` alone (module doc).

    setup: builds the inputs (model, batch) before the measurement starts (None: run(None));
    run: the computation measured, its return value comes back as ``result`` (picklable);
    device: "cpu" or "cuda[:k]" (which counter is read; setup puts its tensors there);
    threads: torch threads in the child; timeout: seconds before the child is killed.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}")
    ctx = _context()
    here, there = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_measure, args=(there, run, setup, device, threads), daemon=True)
    child.start()
    there.close()
    try:
        if not here.poll(timeout):
            raise TimeoutError(f"the measured computation took more than {timeout} s")
        out = here.recv()
    except EOFError:
        raise RuntimeError("the measuring child process died without an answer") from None
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    if "error" in out:
        raise RuntimeError(f"the measured computation failed in the child:\n{out['error']}")
    return PeakMemory(
        peak_mb=max(out["peak"] - out["baseline"], 0.0),
        baseline_mb=out["baseline"],
        seconds=out["seconds"],
        device=device,
        probe=out["probe"],
        result=out["result"],
        cpu_seconds=out["cpu"],
    )


def allocation(state: Any = None, mb: float = 100.0) -> float:
    """A known allocation for calibrating :func:`peak_memory`: a float32 tensor of ``mb`` MiB,
    written (so its pages are resident) and summed; returns the sum. ``state`` is ignored
    (the ``run`` signature)."""
    x = torch.ones(int(mb * MB) // 4)
    return float(x.sum())
