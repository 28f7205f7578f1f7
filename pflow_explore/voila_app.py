"""Voila as ``pflow-explore serve`` runs it, and how to stop it with all its kernels.

``python -m pflow_explore.voila_app ARGS`` is the ``voila`` command with three changes:

- the server compresses its responses (gzip), so a page's ~10 MB of JavaScript (plotly's
  bundle alone is 5 MB) crosses the network as ~3 MB, and a classroom's Wi-Fi carries it
  once per browser (the bundle is versioned and cached). Voila builds its tornado
  application before its ``tornado_settings`` apply, too late for compression;
- a preheated kernel that failed to start is passed over (:func:`skip_failed_kernels`);
- a dashboard page sets tornado's ``_xsrf`` cookie. When a reader closes the page, Voila's
  page asks the server to shut its kernel down, sending that cookie's value; Voila 0.5
  never sets it, so the request is refused (403) and every visitor's kernel (~300 MB) stays
  until the server stops: a stress walk of 120 visits filled 23 GB here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import signal
import subprocess
from collections.abc import Callable

import voila.app
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

MAX_FAILED_KERNELS = 3  # preheated kernels skipped for one visitor before giving up


class PageHandler(TornadoVoilaHandler):
    """Voila's dashboard page, setting the ``_xsrf`` cookie its shutdown request needs."""

    async def prepare(self) -> None:
        result = super().prepare()
        if inspect.isawaitable(result):
            await result
        self.xsrf_token  # noqa: B018 (reading it sets the cookie when the browser has none)


class CourseVoila(Voila):
    """Voila with gzip-compressed responses and pages whose kernels end with the page."""

    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["compress_response"] = True
        return settings

    def init_handlers(self) -> list:
        return [
            (h[0], PageHandler, *h[2:]) if len(h) > 1 and h[1] is TornadoVoilaHandler else h
            for h in super().init_handlers()
        ]


def _failed(task: asyncio.Task) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def skip_failed_kernels(factory: Callable[..., type]) -> Callable[..., type]:
    """Voila's kernel manager factory, whose preheated pool passes over a kernel that failed.

    Voila hands a visitor the next preheated kernel with the page it rendered, even when
    that kernel died at start (its render task holds the error): the page stays at
    "Running ..." for good, a dead dashboard with nothing to say why (seen once in a fresh
    clone's make test: a kernel lost its TCP port; `serve` now uses Unix sockets). This
    wrapper shuts such a kernel down and takes the next one (Voila refills the pool as each
    is taken), at most ``MAX_FAILED_KERNELS`` times; the visitor waits for a fresh kernel
    instead."""

    @functools.wraps(factory)
    def make(*args: object, **kwargs: object) -> type:
        cls = factory(*args, **kwargs)
        if not hasattr(cls, "get_rendered_notebook"):  # no preheating: nothing to skip
            return cls

        class SkipFailedKernels(cls):
            async def get_rendered_notebook(self, notebook_name, *a, **kw):  # noqa: ANN001, ANN202
                for _ in range(MAX_FAILED_KERNELS):
                    task, rendered, kernel_id = await super().get_rendered_notebook(
                        notebook_name, *a, **kw
                    )
                    if not _failed(task):
                        break
                    error = "cancelled" if task.cancelled() else task.exception()
                    self.log.warning(
                        "preheated kernel %s of %s failed (%s): taking another",
                        kernel_id,
                        notebook_name,
                        error,
                    )
                    with contextlib.suppress(Exception):
                        await self.shutdown_kernel(kernel_id)
                return task, rendered, kernel_id

        return SkipFailedKernels

    return make


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
    # Voila.init_settings builds its kernel manager class with this module-level function
    voila.app.voila_kernel_manager_factory = skip_failed_kernels(
        voila.app.voila_kernel_manager_factory
    )
    CourseVoila.launch_instance()


if __name__ == "__main__":
    main()
