"""`pflow-explore serve`: the Voila command line and environment it builds, and the real
command stopping Voila and all its kernels on one signal.

The running server's pages (preheated kernels, the landing page at `/`, offline pages) are
tested in a browser by test_dashboards.py and test_landing.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jinja2
import pytest

from pflow_explore import cli

TEMPLATE_DIR = cli.voila_template_root() / "voila" / "templates" / cli.TEMPLATE


def test_voila_command_defaults_preheat_on_localhost():
    cmd = cli.voila_command(8866)
    assert "--Voila.ip=127.0.0.1" in cmd and "--port=8866" in cmd
    assert "--template=pflow" in cmd and "--no-browser" in cmd
    assert "--preheat_kernel=True" in cmd and "--pool_size=1" in cmd
    # Unix sockets, no TCP port races between kernels starting at once
    assert ("--KernelManager.transport=ipc" in cmd) == (os.name == "posix")
    assert "--VoilaKernelManager.fill_delay=3" in cmd
    assert "--show_tracebacks=False" in cmd
    assert cmd[1:3] == ["-m", "pflow_explore.voila_app"], "Voila with gzip (voila_app.py)"
    allow = next(a for a in cmd if a.startswith("--VoilaConfiguration.extension_allowlist="))
    assert json.loads(allow.split("=", 1)[1]) == list(cli.EXTENSIONS)
    assert "jupyterlab-plotly" not in allow and "pyviz" not in allow


def test_voila_command_options():
    cmd = cli.voila_command(9000, open_browser=True, preheat=False, ip="0.0.0.0")
    assert not any("preheat" in a or "pool_size" in a for a in cmd)
    assert "--no-browser" not in cmd and "--Voila.ip=0.0.0.0" in cmd
    assert "--pool_size=5" in cli.voila_command(9000, pool_size=5)
    assert "--VoilaKernelManager.fill_delay=60" in cli.voila_command(9000, refill_delay=60)
    with pytest.raises(ValueError, match="pool_size"):
        cli.voila_command(9000, pool_size=0)
    with pytest.raises(ValueError, match="refill_delay"):
        cli.voila_command(9000, refill_delay=-1)


def test_voila_env_scale_threads_and_template_path(monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", "/elsewhere")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = cli.voila_env("gpu")
    assert env["PFLOW_SCALE"] == "gpu"
    assert env["JUPYTER_PATH"].split(os.pathsep) == [str(cli.voila_template_root()), "/elsewhere"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert cli.voila_env(None, threads=None)["OMP_NUM_THREADS"] == "7"
    assert cli.voila_env(None, threads=3)["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="threads"):
        cli.voila_env("tiny", threads=0)


def _serve(monkeypatch, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Run `pflow-explore serve ARGV` with Voila replaced by a recorder."""
    seen = {}

    class FakeVoila:
        def __init__(self, cmd: list[str], env: dict[str, str], **kwargs: object) -> None:
            seen["cmd"], seen["env"] = cmd, env
            assert kwargs.get("start_new_session"), "Ctrl-C must reach serve, which stops Voila"

        def wait(self, timeout: float | None = None) -> int:
            return 0

        def terminate(self) -> None:
            pass

    monkeypatch.setattr(cli.subprocess, "Popen", FakeVoila)
    monkeypatch.setattr("signal.signal", lambda *args: None)
    assert cli.main(["serve", *argv]) == 0
    return seen["cmd"], seen["env"]


def test_serve_scale_is_only_environment(monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cmd_gpu, env_gpu = _serve(monkeypatch, ["--port", "8123", "--scale", "gpu"])
    cmd_tiny, env_tiny = _serve(monkeypatch, ["--port", "8123", "--scale", "tiny"])
    assert cmd_gpu == cmd_tiny, "the scale must reach the kernels by env only"
    assert (env_gpu["PFLOW_SCALE"], env_tiny["PFLOW_SCALE"]) == ("gpu", "tiny")
    assert env_gpu["OMP_NUM_THREADS"] == "1"
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/voila/render/index.ipynb" in out


def test_serve_flags(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    cmd, env = _serve(monkeypatch, ["--no-preheat", "--ip", "0.0.0.0"])
    assert "--preheat_kernel=True" not in cmd and "--Voila.ip=0.0.0.0" in cmd
    assert env["OMP_NUM_THREADS"] == "4", "an exported thread count is kept"
    assert "WARNING" in capsys.readouterr().out
    cmd, env = _serve(monkeypatch, ["--pool-size", "3", "--threads", "2", "--refill-delay", "30"])
    assert "--pool_size=3" in cmd and env["OMP_NUM_THREADS"] == "2"
    assert "--VoilaKernelManager.fill_delay=30" in cmd
    for bad in (["--pool-size", "0"], ["--refill-delay", "-2"], ["--threads", "0"]):
        assert cli.main(["serve", *bad]) == 2


def test_front_page_redirects_to_landing_notebook():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)))
    page = env.get_template("tree-lab.html").render(base_url="/course/", notebook_path="")
    assert 'content="0; url=/course/voila/render/index.ipynb"' in page
    assert 'window.location.replace("/course/voila/render/index.ipynb")' in page
    classic = env.get_template("tree.html").render(base_url="/", notebook_path="")
    assert "url=/voila/render/index.ipynb" in classic
    assert (cli.voila_template_root().parent.parent / "notebooks" / "index.ipynb").exists()


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_voila_and_every_kernel(signum, tmp_path, free_port):
    """The real command: once its preheated kernels run, one signal to `serve` alone (not to
    its process group) leaves no Voila and no kernel behind."""
    import psutil

    port = free_port()
    env = dict(os.environ, PFLOW_SCALE="tiny", PFLOW_DATA=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "pflow_explore.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        kernels: list = []
        while time.time() < deadline and len(kernels) < 2:
            time.sleep(1)
            kernels = [p for p in _descendants(serve.pid) if "ipykernel" in " ".join(p.cmdline())]
        assert len(kernels) >= 2, "the preheated kernels did not start"
        tree = _descendants(serve.pid)
        serve.send_signal(signum)
        assert serve.wait(60) == 0
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"left running: {[' '.join(p.cmdline())[:80] for p in alive]}"
    finally:
        if serve.poll() is None:
            serve.kill()


def test_a_preheated_kernel_that_failed_is_passed_over():
    """voila_app.skip_failed_kernels: the pool's next kernel instead of a page that stays at
    "Running ..." (the failed one is shut down); after MAX_FAILED_KERNELS, what there is."""
    import asyncio
    import logging

    from pflow_explore import voila_app

    async def scenario(outcomes: list[bool]) -> tuple[str, list[str]]:
        async def render(ok: bool) -> None:
            if not ok:
                raise RuntimeError("Kernel didn't respond in 60 seconds")

        tasks = [asyncio.ensure_future(render(ok)) for ok in outcomes]
        await asyncio.gather(*tasks, return_exceptions=True)
        taken = iter(range(len(tasks)))

        class Pool:  # what voila_kernel_manager_factory returns with preheating on
            log = logging.getLogger("test")
            stopped: list[str] = []

            async def get_rendered_notebook(self, name: str) -> tuple:
                i = next(taken)
                return tasks[i], [f"cell {i}"], f"kernel-{i}"

            async def shutdown_kernel(self, kernel_id: str) -> None:
                self.stopped.append(kernel_id)

        pool = voila_app.skip_failed_kernels(lambda: Pool)()()
        task, _, kernel_id = await pool.get_rendered_notebook("06_ctmsr.ipynb")
        return kernel_id, pool.stopped

    assert asyncio.run(scenario([True])) == ("kernel-0", [])
    assert asyncio.run(scenario([False, False, True])) == ("kernel-2", ["kernel-0", "kernel-1"])
    n = voila_app.MAX_FAILED_KERNELS
    kernel, stopped = asyncio.run(scenario([False] * (n + 1)))
    assert kernel == f"kernel-{n - 1}" and len(stopped) == n

    class Plain:  # no preheating: the class is left as it is
        pass

    assert voila_app.skip_failed_kernels(lambda: Plain)() is Plain
