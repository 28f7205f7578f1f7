"""Voila as ``pflow-explore serve`` runs it, and how to stop it with all its kernels.

``python -m pflow_explore.voila_app ARGS`` is the ``voila`` command with one change: the
server compresses its responses (gzip), so a page's ~10 MB of JavaScript (plotly's bundle
alone is 5 MB) crosses the network as ~3 MB, and a classroom's Wi-Fi carries it once per
browser (the bundle is versioned and cached; benchmarks/results/dashboard_pages.md).
Voila builds its tornado application before its ``tornado_settings`` apply, too late for
compression; hence this subclass.
"""

from __future__ import annotations

import signal
import subprocess

from voila.app import Voila


class CourseVoila(Voila):
    """Voila whose HTTP responses are gzip-compressed when the browser accepts it."""

    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["compress_response"] = True
        return settings


def stop_server(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the Voila server ``proc`` and every process it started (its kernels).

    Voila shuts its kernels down on SIGINT (its own Ctrl-C path); whatever still runs after
    ``timeout_s`` (a kernel stuck in a computation, a server that hangs) is terminated, then
    killed. The process tree is read before the first signal, so kernels whose parent died
    are still found.
    """
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def main() -> None:
    # SIGINT is how stop_server asks Voila to shut its kernels down; a process started in
    # the background by a shell inherits SIGINT as ignored, and Python keeps it so
    signal.signal(signal.SIGINT, signal.default_int_handler)
    CourseVoila.launch_instance()


if __name__ == "__main__":
    main()
