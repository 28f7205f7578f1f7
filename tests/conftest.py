"""Shared test set-up: an isolated data folder per test session, the gpu marker, and the
Voila server and headless browser of the dashboard tests (test_dashboards, test_landing)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from pflow_explore.figures_export import CHROMIUM_FLAGS, DEFAULT_CHROMIUM, ENV_CHROMIUM

CHROMIUM = os.environ.get(ENV_CHROMIUM, DEFAULT_CHROMIUM)
SERVER_LOG: list[Path | None] = [None]  # the session server's Voila log, once it runs


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


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    """A fresh clone's data folder for one test: ``shipped_only(chapter)`` copies the
    repository's data/shipped/<chapter> into an empty temporary folder that PFLOW_DATA
    points at (no cache: what a dashboard finds before anything was built)."""
    import shutil

    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))

    def copy(chapter: str) -> Path:
        shipped = Path(__file__).resolve().parents[1] / "data" / "shipped" / chapter
        return Path(shutil.copytree(shipped, tmp_path / "shipped" / chapter))

    return copy


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """A function: () -> a TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port


def _wait_until_quiet(proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Wait until Voila and its preheated kernels (each running its notebook at start) use
    little CPU, so that the pages under test do not compete with them on 2 cores."""
    import psutil

    parent = psutil.Process(proc.pid)
    deadline, quiet = time.time() + timeout_s, 0
    while time.time() < deadline and quiet < 2:
        tree = [parent, *parent.children(recursive=True)]
        for p in tree:
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(1.0)
        busy = 0.0
        for p in tree:
            try:
                busy += p.cpu_percent(None)
            except psutil.Error:
                pass
        quiet = quiet + 1 if busy < 15 else 0


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Voila over notebooks/ at PFLOW_SCALE=tiny, as `pflow-explore serve` starts it
    (preheated kernels included), on a free port; yields its base URL."""
    from pflow_explore.cli import voila_command, voila_env
    from pflow_explore.voila_app import stop_server

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `make test` installs Debian's chromium")
    port = _free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    SERVER_LOG[0] = log  # DashboardPage.open quotes it when a page never draws
    env = voila_env("tiny")
    with log.open("w") as fh:
        # exactly as `pflow-explore serve` starts it (refill delay, pool, threads)
        proc = subprocess.Popen(
            voila_command(port, open_browser=False), stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"voila exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        stop_server(proc)
        pytest.fail(f"voila did not start: {log.read_text()[-2000:]}")
    _wait_until_quiet(proc)
    yield base
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (playwright), offline flags; one for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True)
        yield b
        b.close()


LOCAL_HOSTS = {"127.0.0.1", "localhost", ""}


@pytest.fixture
def watch_outside_requests():
    """A function: page -> the list, filled as the page loads, of requests leaving 127.0.0.1."""
    return _watch_outside_requests


def _watch_outside_requests(page) -> list[str]:
    """The list, filled as the page loads, of requests to any host but this machine."""
    from urllib.parse import urlparse

    outside: list[str] = []

    def record(request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            outside.append(request.url)

    page.on("request", record)
    return outside


@pytest.fixture
def watch_console_errors():
    """A function: page -> the list, filled as the page runs, of its console errors and
    uncaught exceptions (warnings are not errors: Voila's JupyterLab 4.2 core makes the
    extensions built for 4.6 warn about shared-module versions on every page)."""

    def watch(page) -> list[str]:
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        return errors

    return watch


@pytest.fixture
def watch_kernel_errors():
    """A function: page -> the list, filled as the page runs, of the exceptions its kernel
    reports ("ename: evalue" of iopub ``error`` messages on the page's websockets). Voila
    hides tracebacks from the page, so a widget callback that raises is seen only here."""

    def watch(page) -> list[str]:
        errors: list[str] = []

        def frame(payload) -> None:
            text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
            if re.search(r'"msg_type":\s*"error"', text):
                found = re.search(r'"ename":\s*"([^"]*)",\s*"evalue":\s*"([^"]{0,200})', text)
                errors.append(": ".join(found.groups()) if found else text[:200])

        page.on("websocket", lambda ws: ws.on("framereceived", frame))
        return errors

    return watch


@pytest.fixture
def one_thread():
    """Torch on one thread during the test (:func:`pflow_explore.scale.torch_threads`): the
    tests' tensors are small, and on a busy 2-core box every parallel op waits ~20 ms for its
    second thread (measured), often 100x the op itself."""
    from pflow_explore import scale

    with scale.torch_threads(1):
        yield


# ---- a dashboard page in the browser: one way for every browser test ----------------------
FIGURE_DATA_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
  el => JSON.stringify((el.data || []).map(t => [t.x, t.y, t.z])))"""
FAILED = "#pflow-page-failure, .pflow-figure-failed"  # what a page shows when a widget failed
# a Voila page scrolls in its #rendered_cells panel, not in the window
SCROLL_THROUGH_JS = """async () => {
  const panel = document.getElementById('rendered_cells') || document.scrollingElement;
  const step = Math.max(200, panel.clientHeight / 2);
  for (let y = 0, n = 0; y < panel.scrollHeight && n < 500; y += step, n++) {
    panel.scrollTo(0, y);
    await new Promise(r => setTimeout(r, 100));
  }
  panel.scrollTo(0, 0);
  return [panel.id, panel.clientHeight, panel.scrollHeight];
}"""
_DRAWN = "el.querySelector('.main-svg') || el.querySelector('.pflow-figure-failed')"
ALL_DRAWN_JS = f"() => Array.from(document.querySelectorAll('.pflow-figure')).every(el => {_DRAWN})"
DRAWN_COUNTS_JS = (
    f"() => {{ const all = Array.from(document.querySelectorAll('.pflow-figure'));"
    f" return [all.filter(el => {_DRAWN}).length, all.length]; }}"
)


class DashboardPage:
    """What the browser tests do on a Voila dashboard: open it, read its figures' data, move
    its first slider, wait for a figure to change, see whether a failure is shown."""

    FAILED = FAILED

    @staticmethod
    def open(page, url: str, timeout_s: float = 150) -> None:
        """Load a dashboard and wait for its first figure and slider; a page that never draws
        fails with what it shows, its console and the end of the server's log."""
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text[:300]}"))
        page.goto(url, timeout=120_000)
        try:
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=timeout_s * 1000)
        except Exception as err:
            shown = page.evaluate("() => document.body ? document.body.innerText : ''")
            counts = page.evaluate(
                "() => [document.querySelectorAll('.js-plotly-plot').length, "
                "Array.from(document.querySelectorAll('.js-plotly-plot .main-svg')).filter("
                "e => e.getBoundingClientRect().width * e.getBoundingClientRect().height > 0"
                ").length, document.querySelectorAll('.widget-slider').length, "
                "document.querySelectorAll('.jp-OutputArea-output').length]"
            )
            lines = SERVER_LOG[0].read_text().splitlines() if SERVER_LOG[0] else []
            noise = "running over TCP without encryption"  # every kernel's start says it
            log = "\n".join(x for x in lines if noise not in x)[-3000:] or "(no server log)"
            pytest.fail(
                f"{url}: no figure drawn after {timeout_s:.0f} s ({type(err).__name__}); "
                f"plotly plots / of them drawn with a size / sliders / outputs: {counts}\n"
                f"page text (start): {shown[:800]!r}\nconsole: {console[-15:]}\n"
                f"server log (end):\n{log}"
            )
        page.wait_for_selector(".widget-slider .noUi-handle", timeout=60_000)
        page.wait_for_timeout(1000)  # let the remaining widgets attach

    @staticmethod
    def figure_data(page) -> list[str]:
        return page.evaluate(FIGURE_DATA_JS)

    @staticmethod
    def move_first_slider(page, key: str = "ArrowRight") -> None:
        """Three key presses on the first slider (a slider with few options may hit its end,
        so a second move goes back with ``key="ArrowLeft"``)."""
        page.locator(".widget-slider .noUi-handle").first.focus()
        for _ in range(3):
            page.keyboard.press(key)

    @classmethod
    def wait_changed(cls, page, before: list[str], timeout_s: float = 20) -> list[str]:
        """The figures' data once it differs from ``before`` (or after ``timeout_s``)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            now = cls.figure_data(page)
            if now != before:
                return now
            page.wait_for_timeout(200)
        return cls.figure_data(page)

    @classmethod
    def wait_settled(cls, page, quiet_s: float = 2.0, timeout_s: float = 60) -> None:
        """Wait until the figures' data has not changed for ``quiet_s`` seconds (at most
        ``timeout_s``): the kernel has answered every slider update the browser sent,
        including a throttled last one that may leave after the first figure change."""
        deadline, last, since = time.time() + timeout_s, cls.figure_data(page), time.time()
        while time.time() < deadline and time.time() - since < quiet_s:
            page.wait_for_timeout(250)
            now = cls.figure_data(page)
            if now != last:
                last, since = now, time.time()

    @classmethod
    def slider_moves_a_figure(cls, page, key: str = "ArrowRight", timeout_s: float = 20) -> bool:
        before = cls.figure_data(page)
        cls.move_first_slider(page, key)
        return cls.wait_changed(page, before, timeout_s) != before

    @staticmethod
    def draw_every_figure(page, timeout_s: float = 60) -> None:
        """Scroll through the page, half a screen at a time, and wait until every live
        figure is drawn or shows why not: a figure displayed on its own draws once it is on
        screen or the page has been left alone (live_figure.js), so one that never does
        fails here."""
        scrolled = page.evaluate(SCROLL_THROUGH_JS)  # [panel id, its height, its content's]
        try:
            page.wait_for_function(ALL_DRAWN_JS, timeout=timeout_s * 1000)
        except Exception:
            counts = page.evaluate(DRAWN_COUNTS_JS)
            pytest.fail(
                f"figures drawn / on the page after scrolling through it: {counts}; "
                f"scrolled (panel, height, content height): {scrolled}"
            )

    @staticmethod
    def failure_shown(page) -> bool:
        return page.locator(FAILED).count() > 0


@pytest.fixture
def dashboard_page():
    """:class:`DashboardPage`: open a dashboard, move its first slider, read its figures."""
    return DashboardPage


@pytest.fixture(scope="module")
def tiny_results(request, tmp_path_factory):
    """(settings, results) of the test file's chapter module ``C`` at scale tiny, prepared
    then run once per test file in its own PFLOW_DATA (prepare trains, run loads)."""
    chapter = request.module.C
    mp = pytest.MonkeyPatch()
    mp.setenv("PFLOW_DATA", str(tmp_path_factory.mktemp(chapter.CHAPTER)))
    try:
        s = chapter.settings("tiny")
        chapter.prepare(s)
        yield s, chapter.run(s)
    finally:
        mp.undo()


# ---- the static site's pages, executed once per session --------------------------------------
class SitePages:
    """The course site's pages (:func:`pflow_explore.site.execute_page`: the student release
    with the static view on) at scale tiny, each executed once per session and saved in
    ``root`` as the site build wants them: the student release test checks them as
    executed, the site test builds the site from them."""

    def __init__(self, root: Path) -> None:
        self.root, self._raw = root, {}

    def executed(self, stem: str):
        """Page ``stem`` as papermill left it (grade cells' errors included)."""
        if stem not in self._raw:
            from pflow_explore import site

            nb = site.execute_page(stem, self.root, "tiny")
            site.save_page(stem, nb, self.root)
            self._raw[stem] = nb
        return self._raw[stem]


@pytest.fixture(scope="session")
def site_pages(tmp_path_factory) -> SitePages:
    return SitePages(tmp_path_factory.mktemp("site-pages"))
