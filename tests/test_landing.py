"""The landing page: pflow_explore.landing, notebooks/index.ipynb, and `/` of the server.

Without a browser: the chapter list and its statuses against a faked set of notebooks, a
preview that raises becoming a one-line message, and index.ipynb executed with papermill.
With a browser (marker ``browser``, fixtures in conftest.py): `/` leads to the landing
page, every card renders (plain ipywidgets, previews as static LiveFigures) with no console
error, each ready chapter's link opens its dashboard, nothing is requested from outside
127.0.0.1; screenshot test-artifacts/screenshots/index.png.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urljoin

import nbformat
import plotly.graph_objects as go
import pytest

from pflow_explore import course, landing

ARTIFACTS = course.repo_root() / "test-artifacts"
SHOTS = ARTIFACTS / "screenshots"
INDEX = course.notebooks_dir() / "index.ipynb"


def _html_texts(obj: object) -> list[str]:
    """The value of every ``widgets.HTML`` inside an ipywidgets layout (depth first)."""
    import ipywidgets as widgets

    if isinstance(obj, widgets.HTML):
        return [str(obj.value)]
    return [t for child in getattr(obj, "children", ()) for t in _html_texts(child)]


def test_entries_front_door_then_outline_in_order(monkeypatch):
    fake = {"start_here": Path("00_start_here.ipynb"), "ctm": Path("04_ctm.ipynb")}
    monkeypatch.setattr(course, "notebooks", lambda: fake)
    got = landing.entries()
    assert [e.chapter.slug for e in got] == ["start_here"] + [c.slug for c in course.OUTLINE]
    assert [e.chapter.number for e in got] == list(range(len(course.OUTLINE) + 1))
    assert {e.chapter.slug for e in got if e.ready} == {"start_here", "ctm"}
    by_slug = {e.chapter.slug: e for e in got}
    assert by_slug["ctm"].href == "04_ctm.ipynb"
    assert by_slug["painters"].href is None


def test_card_text_and_link(monkeypatch):
    ready = landing.Entry(course.OUTLINE[3], Path("/x/04_ctm.ipynb"))
    planned = landing.Entry(course.OUTLINE[4], None)
    text = landing.card_html(ready)
    for part in ("04", course.OUTLINE[3].title, course.OUTLINE[3].paper, "ready"):
        assert part in text
    assert 'href="04_ctm.ipynb"' in text
    text = landing.card_html(planned)
    assert "planned" in text and "href" not in text
    assert course.OUTLINE[4].idea in text


def test_preview_that_raises_is_a_one_line_message(monkeypatch):
    def broken() -> go.Figure:
        raise ValueError("no cached model\nsecond line of detail")

    monkeypatch.setattr(landing.chapters, "module", lambda slug: SimpleNamespace(preview=broken))
    fig, message = landing.preview("ctm")
    assert fig is None
    assert "ValueError: no cached model" in message and "\n" not in message
    assert "second line" not in message

    col = landing.card(landing.Entry(course.OUTLINE[3], Path("04_ctm.ipynb")))
    texts = _html_texts(col)
    assert any("ValueError: no cached model" in t for t in texts), texts


def test_preview_missing_module_and_sizing(monkeypatch):
    monkeypatch.setattr(landing.chapters, "module", lambda slug: None)
    assert landing.preview("ctm") == (None, None)

    original = go.Figure(go.Scatter(x=[0, 1, 2], y=[2.0, -1.0, 0.5]), layout={"width": 900})
    monkeypatch.setattr(
        landing.chapters, "module", lambda slug: SimpleNamespace(preview=lambda: original)
    )
    fig, message = landing.preview("ctm")
    assert message is None
    assert (fig.layout.width, fig.layout.height) == landing.PREVIEW_SIZE
    assert list(fig.data[0].y) == [2.0, -1.0, 0.5]
    assert original.layout.width == 900, "the chapter's own figure must not be resized"


def test_index_is_not_a_chapter_and_is_committed_clean():
    assert "index" not in course.notebooks()
    nb = nbformat.read(INDEX, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"index.ipynb: cells {dirty} carry outputs; clear them"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source.startswith("SCALE = None")


@pytest.mark.timeout(120)
def test_index_executes_and_lists_every_chapter():
    import papermill

    out = ARTIFACTS / "notebooks" / "index.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(INDEX),
        str(out),
        parameters={"SCALE": "tiny"},
        kernel_name="python3",
        cwd=str(INDEX.parent),
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    errors = [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in enumerate(nb.cells)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
        or (o.get("name") == "stderr" and "Traceback" in o.get("text", ""))
    ]
    assert not errors
    # the cards live in the widgets' state, which papermill keeps in the metadata
    raw = json.dumps([c.get("outputs", []) for c in nb.cells]) + json.dumps(nb.metadata)
    text = html.unescape(raw)
    for ch in (landing.FRONT_DOOR, *course.OUTLINE):
        assert html.escape(ch.title) in text, f"{ch.title!r} missing from the landing page"
    assert "served at scale <b>tiny</b>" in text
    assert "preview unavailable" not in text, "a ready chapter's preview raised"
    assert "cdn." not in text, "something would load from a CDN"


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_landing_page_in_browser(
    server, browser, watch_outside_requests, watch_console_errors, dashboard_page
):
    entries = landing.entries()
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    outside = watch_outside_requests(page)
    page.goto(f"{server}/", timeout=120_000)
    page.wait_for_url("**/voila/render/index.ipynb", timeout=30_000)
    console = watch_console_errors(page)
    cards = page.locator(".pflow-card-text")
    cards.first.wait_for(timeout=120_000)
    assert cards.count() == len(entries)
    for e in entries:
        card = page.locator(f'.pflow-card-text[data-slug="{e.chapter.slug}"]')
        assert e.chapter.title in card.inner_text()
        assert ("ready" if e.ready else "planned") in card.inner_text()
    assert "served at scale tiny" in page.locator("h1 + p").first.inner_text(), (
        "the preheated landing kernel must see PFLOW_SCALE=tiny"
    )
    ready = [e for e in entries if e.ready]
    previews = page.locator(".pflow-card .js-plotly-plot .main-svg")
    if any(landing.chapters.module(e.chapter.slug) is not None for e in ready):
        previews.first.wait_for(timeout=30_000)
    text = page.locator(".pflow-card-text").all_inner_texts()
    assert not any("Traceback" in t for t in text)
    page.wait_for_timeout(1000)
    assert page.locator("#pflow-page-failure, .pflow-figure-failed").count() == 0
    assert not console, f"the landing page logged errors: {console[:5]}"
    dashboard_page.draw_every_figure(page)  # the previews below the first screen too
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "index.png"), full_page=True)

    for e in ready:
        assert page.locator(f'a.pflow-open[href="{e.href}"]').count() == 1, f"no link to {e.href}"
    # the first link is clicked; the others are opened by their resolved address, which
    # spares a landing-page reload (a fresh preheated kernel) per chapter
    landing_url = page.url
    for i, e in enumerate(ready):
        if i == 0:
            page.locator(f'a.pflow-open[href="{e.href}"]').click()
        else:
            page.goto(urljoin(landing_url, e.href), timeout=120_000)
        page.wait_for_url(f"**/voila/render/{e.href}", timeout=30_000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=150_000)
        body = page.inner_text("body")
        assert "Traceback" not in body and "There was an error" not in body, e.href
    assert not outside, f"requests left the machine: {outside[:5]}"
    page.close(run_before_unload=True)  # Voila then shuts the kernel down
