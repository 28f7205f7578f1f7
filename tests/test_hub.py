"""JupyterHub for a class (pflow_explore.hub, deploy/jupyterhub/): three students log in,
each gets a server of their own that opens on the dashboards, a chapter's slider moves its
figure; then the hub stops with every server (no process left). The pure parts (the
environment, the password rule, the Zero to JupyterHub values) are tested without a hub."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from pflow_explore import cli, course, hub

STUDENTS = ("ada", "emmy", "sofia")
PASSWORD = "closed-room-pass"


def test_hub_env_carries_ports_state_and_password(tmp_path):
    env = hub.hub_env(tmp_path, PASSWORD, port=9000, hub_port=9001, proxy_api_port=9002)
    assert env[hub.ENV_STATE] == str(tmp_path) and env[hub.ENV_PASSWORD] == PASSWORD
    assert (env["PFLOW_HUB_PORT"], env["PFLOW_HUB_API_PORT"]) == ("9000", "9001")
    assert env["PFLOW_HUB_HOMES"] == str(tmp_path / "homes")
    assert hub.hub_command()[-1] == str(hub.config_file()) and hub.config_file().exists()


def test_a_short_password_is_refused_with_its_rule(tmp_path):
    with pytest.raises(ValueError, match="at least 8 characters"):
        hub.hub_env(tmp_path, "short")
    assert len(hub.new_password()) >= hub.MIN_PASSWORD


def test_students_servers_render_with_the_course_template():
    env = hub.singleuser_env("tiny")
    assert env["JUPYTER_PATH"] == str(cli.voila_template_root()) and env["PFLOW_SCALE"] == "tiny"
    assert env["OMP_NUM_THREADS"] == "1"
    args = " ".join(hub.singleuser_args())
    assert "--VoilaConfiguration.template=pflow" in args and "pflow-explore" in args


def test_cli_hub_refuses_a_short_password(monkeypatch, capsys):
    monkeypatch.setenv(hub.ENV_PASSWORD, "short")
    assert cli.main(["hub", "--port", "1"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err


def test_zero_to_jupyterhub_values_parse_and_name_what_a_class_needs():
    values = yaml.safe_load((hub.config_file().parent / "z2jh-values.yaml").read_text())
    assert set(values) <= {"hub", "proxy", "singleuser", "cull", "scheduling", "prePuller"}
    single = values["singleuser"]
    assert single["defaultUrl"] == hub.DEFAULT_URL
    assert single["memory"]["limit"] and single["memory"]["guarantee"]
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] == hub.CULL_AFTER_S
    env = single["extraEnv"]
    assert env["PFLOW_DATA"] and env["OMP_NUM_THREADS"] == "1"


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"jupyterhub exited: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    pytest.fail(f"jupyterhub did not start: {log.read_text()[-3000:]}")


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_three_students_each_get_a_dashboard_server(tmp_path, browser, free_port, dashboard_page):
    from pflow_explore.voila_app import stop_server

    hub.install_proxy()
    cli.prepare_voila_template()
    ports = [free_port() for _ in range(3)]
    env = hub.hub_env(
        tmp_path, PASSWORD, port=ports[0], hub_port=ports[1], proxy_api_port=ports[2], scale="tiny"
    )
    log = tmp_path / "hub.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            hub.hub_command(), env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{ports[0]}"
    try:
        _wait_for(base + "/hub/login", proc, log)
        for name in STUDENTS:
            page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
            page.goto(base + "/hub/login", timeout=60_000)
            page.fill("input[name=username]", name)
            page.fill("input[name=password]", PASSWORD)
            page.click("input[type=submit], button[type=submit]")
            # the student's own server starts and opens on the landing page
            page.wait_for_url(f"**/user/{name}/voila/render/index.ipynb", timeout=150_000)
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=150_000)
            assert (tmp_path / "homes" / name / "notebooks" / "00_start_here.ipynb").exists()
            # the first student walks chapter 00's and 01's dashboards, the others 00's: the
            # hub's part is the same on every page, and tests/test_dashboards.py walks them all
            # (walking all thirteen here took 200 of this test's 300 s)
            pages = list(course.notebooks().values())
            for path in pages[:2] if name == STUDENTS[0] else pages[:1]:
                url = f"{base}/user/{name}/voila/render/{path.name}"
                dashboard_page.open(page, url)
                assert dashboard_page.slider_moves_a_figure(page, timeout_s=30), f"{name}: {url}"
                assert not dashboard_page.failure_shown(page), url
            # the course's front-end extension, loaded through the server extension too
            assert page.evaluate("() => window.__pflowPatientRenderers") >= 1
            if name == STUDENTS[0]:  # JupyterLab, for the exercises, on the student's copy
                page.goto(f"{base}/user/{name}/lab/tree/00_start_here.ipynb", timeout=90_000)
                page.wait_for_selector(".jp-Notebook", timeout=120_000)
            page.context.close()
        servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if _singleuser(p)]
        assert len(servers) == len(STUDENTS), "one server per student"
    finally:
        tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        stop_server(proc, timeout_s=30)
        _, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"left running after the hub stopped: {alive}"


def _singleuser(p: psutil.Process) -> bool:
    try:
        return "jupyterhub.singleuser" in " ".join(p.cmdline())
    except psutil.Error:
        return False
