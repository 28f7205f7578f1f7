"""Every notebook as a Voila dashboard in headless Chromium (playwright).

For each discovered notebook: the page renders its widgets with no traceback, error text,
console error or exception in its kernel; moving the first slider changes a plotly figure
(read from the DOM), at the first try: no reload, no retry; entering a bad value into the
first validated input (CSS class ``pflow-input``) shows a message (``pflow-message``) and
the page keeps working;
no request leaves 127.0.0.1; a screenshot is saved under test-artifacts/screenshots/
(git-ignored). Then the same beside two CPU-burning processes, and the two ways a figure
can fail to start: the served plotly bundle missing (the kernel sends it instead) or broken
(the figure and the top of the page say so in words). The ``server`` and ``browser``
fixtures are in conftest.py (shared with test_landing.py).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pflow_explore import course

pytestmark = pytest.mark.browser

NOTEBOOKS = course.notebooks()
SHOTS = course.repo_root() / "test-artifacts" / "screenshots"
# the chapter with the most figures on one page: the hardest to start on a busy CPU
BUSIEST = "01_painters.ipynb"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("slug", list(NOTEBOOKS))
def test_dashboard(
    slug,
    server,
    browser,
    watch_outside_requests,
    watch_console_errors,
    watch_kernel_errors,
    dashboard_page,
):
    path = NOTEBOOKS[slug]
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    outside = watch_outside_requests(page)
    console = watch_console_errors(page)
    kernel_errors = watch_kernel_errors(page)
    dashboard_page.open(page, f"{server}/voila/render/{path.name}")
    text = page.inner_text("body")
    for bad in ("Traceback", "Error:", "There was an error when executing cell"):
        assert bad not in text, f"{path.name}: page shows {bad!r}"
    assert page.locator(".js-plotly-plot .main-svg").count() > 0, "plotly drew nothing"
    assert page.locator(".pflow-figure-loading").count() == 0, "a figure is still loading"
    # share/jupyter/labextensions/pflow-explore loaded and made ipywidgets' renderer patient
    assert page.evaluate("() => window.__pflowPatientRenderers") >= 1, "pflow-explore extension"
    # ... and anywidget's 2 s model deadline became patient too (one per LiveFigure model)
    assert page.evaluate("() => window.__pflowStretchedDeadlines") >= 1, "anywidget deadline"
    moved = dashboard_page.slider_moves_a_figure(page)
    assert moved, f"moving the slider did not change any figure; console: {console}"
    # the extension typesets the math on screen at once and each other cell when the page
    # is idle: its queue drains, and the page holds typeset math
    assert page.evaluate("() => window.__pflowMathDeferred"), "math typesetting not deferred"
    page.wait_for_function("() => window.__pflowMathWaiting === 0", timeout=30_000)
    assert page.locator("mjx-container").count() > 0, "no math was typeset"

    inputs = page.locator(".pflow-input input")
    if inputs.count():
        # a late slider update answered after the bad value would clear its message
        dashboard_page.wait_settled(page)
        box = inputs.first
        box.fill("-1")
        box.press("Enter")
        message = page.locator(".pflow-message").filter(has_text=re.compile(r"\S")).first
        message.wait_for(state="visible", timeout=20_000)
        assert message.inner_text().strip(), "bad input produced an empty message"
        back = dashboard_page.slider_moves_a_figure(page, "ArrowLeft")
        assert back, "page stopped responding after bad input"
    dashboard_page.draw_every_figure(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{path.stem}.png"), full_page=True)
    failed = page.locator(dashboard_page.FAILED)
    assert failed.count() == 0, failed.first.inner_text()
    assert not console, f"{path.name}: console errors: {console[:5]}"
    assert not kernel_errors, f"{path.name}: the kernel raised: {kernel_errors[:5]}"
    assert not outside, f"requests left the machine: {outside[:5]}"
    page.close(run_before_unload=True)  # Voila then shuts the kernel down


@pytest.mark.timeout(300)
def test_dashboard_beside_cpu_burners(server, browser, watch_console_errors, dashboard_page):
    """The busiest page opened while two processes keep both cores busy (a teacher's laptop):
    every figure starts and follows its slider, at the first try."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        console = watch_console_errors(page)
        dashboard_page.open(page, f"{server}/voila/render/{BUSIEST}")
        page.wait_for_function(
            "() => !document.querySelector('.pflow-figure-loading')", timeout=60_000
        )
        moved = dashboard_page.slider_moves_a_figure(page)
        assert moved, f"moving the slider did not change any figure; console: {console}"
        failed = page.locator(dashboard_page.FAILED)
        assert failed.count() == 0, failed.first.inner_text()
        assert not console, f"console errors under load: {console[:5]}"
        page.close(run_before_unload=True)  # Voila then shuts the kernel down
    finally:
        for b in burners:
            b.kill()
            b.wait()


@pytest.mark.timeout(240)
def test_figures_start_without_the_served_bundle(server, browser, dashboard_page):
    """Where the server does not have plotly's bundle (e.g. a plain `jupyter lab`), the
    figures ask the kernel for it, and still follow their sliders."""
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.route("**/widgetbundle-*", lambda route: route.fulfill(status=404, body="not here"))
    dashboard_page.open(page, f"{server}/voila/render/00_start_here.ipynb")
    assert dashboard_page.slider_moves_a_figure(page), "no figure followed the slider"
    assert page.locator(dashboard_page.FAILED).count() == 0
    page.close(run_before_unload=True)  # Voila then shuts the kernel down


@pytest.mark.timeout(240)
def test_a_figure_that_cannot_start_says_so(server, browser):
    """A broken bundle: no silent dead figure, but a message in the figure and atop the page."""
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.route(
        "**/widgetbundle-*",
        lambda route: route.fulfill(body="export default 1;", content_type="text/javascript"),
    )
    page.goto(f"{server}/voila/render/00_start_here.ipynb", timeout=120_000)
    figure = page.locator(".pflow-figure-failed").first
    figure.wait_for(timeout=150_000)
    assert "could not start" in figure.inner_text() and "Reload" in figure.inner_text()
    top = page.locator("#pflow-page-failure")
    top.wait_for(timeout=10_000)
    assert "did not start" in top.inner_text() and "Reload the page" in top.inner_text()
    page.close(run_before_unload=True)  # Voila then shuts the kernel down


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_a_box_drawn_on_the_plane_moves_the_finetuning_region(server, browser, dashboard_page):
    """Chapter 07: dragging a box on the fine-tuner's plane (plotly's box select, reported
    by the figure to the kernel) moves the region, its shape redrawn in the browser."""
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    dashboard_page.open(page, f"{server}/voila/render/{NOTEBOOKS['adjoint'].name}")
    plot = page.locator(".js-plotly-plot", has_text="drag a box").first
    plot.scroll_into_view_if_needed()
    dashboard_page.wait_settled(page)  # every widget attached, the kernel idle
    shape = "el => el.data[3].x[0]"  # the region's outline
    before = plot.evaluate(shape)
    area = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.15, area["y"] + area["height"] * 0.6)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.8, steps=8)
    page.mouse.up()
    try:
        page.wait_for_function(
            f"([el, b]) => ({shape})(el) !== b", arg=[plot.element_handle(), before], timeout=30_000
        )
    except Exception:  # say what the page shows: the selection, the messages
        shown = plot.evaluate("el => JSON.stringify(el.layout.selections || [])")
        messages = page.locator(".pflow-message").all_text_contents()
        pytest.fail(f"the box stayed at x={before}; selections {shown}; messages {messages}")
    assert plot.evaluate(shape) < 0  # the left part of the plane
    page.close()
