"""JupyterHub for a class: time to a working dashboard per student, and memory per student.

Starts the hub as `pflow-explore hub` does (deploy/jupyterhub/jupyterhub_config.py) on
loopback ports, then N students arrive one after the other (servers stay up, as in a
class): each logs in with headless Chromium, waits for the landing page, opens a chapter's
dashboard and moves its first slider until a figure changes. Per student: seconds from
pressing "Sign in" to the landing page's figures, and to a working slider on the chapter;
after all have arrived, the memory (RSS) of each student's server with its kernels.

    .venv/bin/python benchmarks/hub_users.py [--students 10] [--chapter 01_painters.ipynb]
        [--scale cpu]  -> results/hub_users.md
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from machine import machine
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pflow_explore import cli, hub  # noqa: E402
from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM  # noqa: E402
from pflow_explore.voila_app import stop_server  # noqa: E402

PASSWORD = "benchmark-pass"
FIGURE_DATA_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
  el => JSON.stringify((el.data || []).map(t => [t.x, t.y, t.z])))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slider_works(page, timeout_s: float = 60) -> bool:  # noqa: ANN001
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.wait_for(timeout=timeout_s * 1000)
    before = page.evaluate(FIGURE_DATA_JS)
    deadline, key = time.time() + timeout_s, "ArrowRight"
    while time.time() < deadline:
        handle.focus()
        page.keyboard.press(key)
        key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
        end = time.time() + 1.0
        while time.time() < end:
            if page.evaluate(FIGURE_DATA_JS) != before:
                return True
            page.wait_for_timeout(25)
    return False


def student(browser, base: str, name: str, chapter: str) -> dict:  # noqa: ANN001
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    page.goto(base + "/hub/login", timeout=60_000)
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    start = time.perf_counter()
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{name}/voila/render/index.ipynb", timeout=300_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=300_000)
    landing = time.perf_counter() - start
    t0 = time.perf_counter()
    page.goto(f"{base}/user/{name}/voila/render/{chapter}", timeout=300_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=300_000)
    ok = slider_works(page)
    chapter_s = time.perf_counter() - t0
    dead = page.locator("#pflow-page-failure, .pflow-figure-failed").count()
    ctx.close()  # the student's server and kernels stay, as when a tab is closed
    return {"name": name, "landing": landing, "chapter": chapter_s, "ok": ok and not dead}


def memory_per_student(hub_proc: subprocess.Popen) -> dict[str, float]:
    """MB of RSS per student: their single-user server plus every kernel under it."""
    out = {}
    for p in psutil.Process(hub_proc.pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "jupyterhub.singleuser" not in cmd:
            continue
        try:
            name = p.environ().get("JUPYTERHUB_USER", str(p.pid))
        except psutil.Error:
            name = str(p.pid)
        procs = [p, *p.children(recursive=True)]
        out[name] = sum(q.memory_info().rss for q in procs if q.is_running()) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=10)
    ap.add_argument("--chapter", default="01_painters.ipynb")
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hub_users.md"))
    args = ap.parse_args()
    hub.install_proxy()
    cli.prepare_voila_template()
    state = Path(tempfile.mkdtemp(prefix="pflow-hub-"))
    ports = [free_port() for _ in range(3)]
    env = hub.hub_env(
        state, PASSWORD, port=ports[0], hub_port=ports[1], proxy_api_port=ports[2], scale=args.scale
    )
    load_before = os.getloadavg()
    log = (state / "hub.log").open("w")
    proc = subprocess.Popen(
        hub.hub_command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{ports[0]}"
    rows = []
    try:
        time.sleep(5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=list(CHROMIUM_FLAGS))
            for i in range(args.students):
                rows.append(student(browser, base, f"student{i + 1:02d}", args.chapter))
                print(rows[-1], flush=True)
            browser.close()
        time.sleep(3)
        memory = memory_per_student(proc)
    finally:
        stop_server(proc, timeout_s=30)
    load_after = os.getloadavg()
    mem = sorted(memory.values())
    lines = [
        "# JupyterHub for a class: time to a working dashboard and memory per student",
        "",
        f"Written by `benchmarks/hub_users.py --students {args.students} --chapter "
        f"{args.chapter} --scale {args.scale}`: the hub as `pflow-explore hub` starts it; "
        "students arrive one after the other and keep their servers (a class); each logs in "
        "with headless Chromium, waits for the landing page, opens the chapter's dashboard "
        "(Voila's server extension, no preheated kernel) and moves a slider until a figure "
        "changes.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1/5/15 min) before / after: "
        f"{' '.join(f'{x:.2f}' for x in load_before)} / "
        f"{' '.join(f'{x:.2f}' for x in load_after)}",
        "",
        "## Per student",
        "",
        "| student | sign-in to landing page (s) | chapter to working slider (s) | worked |",
        "|---|---:|---:|---|",
        *(
            f"| {r['name']} | {r['landing']:.1f} | {r['chapter']:.1f} | "
            f"{'yes' if r['ok'] else 'NO'} |"
            for r in rows
        ),
        "",
        "Memory per student after all arrived (their single-user server and the kernels it "
        f"still runs, RSS, shared pages counted in each): median "
        f"{mem[len(mem) // 2]:.0f} MB, min {mem[0]:.0f} MB, max {mem[-1]:.0f} MB "
        f"({len(mem)} servers)."
        if mem
        else "Memory: no student server found.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
