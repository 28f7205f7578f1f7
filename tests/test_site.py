"""The static course site (pflow_explore.site, `make site`): what a page is built from, the
Sphinx project around the executed pages, and the site in Chromium: every page without a
console error or a request leaving the machine, each chapter page with its figures and its
claims table, and a frame slider that moves a step-through figure."""

from __future__ import annotations

import functools
import http.server
import threading

import nbformat
import pytest

from pflow_explore import course, site


def test_page_version_is_the_student_release_with_the_static_view_and_links():
    nb = site.page_version(course.notebooks()["painters"])
    first = nb.cells[0]
    assert "static_view.enable()" in first.source and site.REMOVE in first.metadata.tags
    text = "\n".join(c.source for c in nb.cells)
    assert "### BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
    links = next(c.source for c in nb.cells if "pflow-site-links" in c.source)
    assert "voila/render/01_painters.ipynb" in links and "_notebooks/01_painters.ipynb" in links
    assert "arxiv.org" in links  # the paper
    syllabus = site.page_version(site.page_notebooks()["syllabus"])
    assert not any("pflow-site-links" in c.source for c in syllabus.cells)


def test_tidy_keeps_exercise_code_and_drops_its_error():
    nb = nbformat.v4.new_notebook()
    grade = nbformat.v4.new_code_cell("ex.A.grade(f)")
    grade.metadata["nbgrader"] = {"grade": True}
    grade.outputs = [nbformat.v4.new_output("error", ename="E", evalue="not written yet")]
    plain = nbformat.v4.new_code_cell("print(1)")
    plain.outputs = [nbformat.v4.new_output("stream", text="1")]
    banner = nbformat.v4.new_markdown_cell("An Exception was encountered")
    banner.metadata["tags"] = [site.PAPERMILL_ERROR]
    nb.cells = [banner, grade, plain]
    assert site._only_exercise_errors(nb)  # a grade cell's error is the reader's to fix
    nb.metadata["widgets"] = {"state": {}}
    out = site._tidy(nbformat.from_dict(nb))
    assert len(out.cells) == 2 and "widgets" not in out.metadata
    assert out.cells[0].outputs == [] and out.cells[0].source == "ex.A.grade(f)"
    assert out.cells[1].outputs[0].text == "1"
    plain.outputs = [nbformat.v4.new_output("error", ename="E", evalue="boom")]
    assert not site._only_exercise_errors(nb)


def test_relink_points_notebook_links_at_pages(tmp_path):
    (tmp_path / "a.html").write_text(
        '<a href="notation.ipynb">n</a> <a href="01_painters.ipynb#s2">p</a> '
        '<a href="other.ipynb">o</a> <a href="_notebooks/notation.ipynb">dl</a>'
    )
    assert site.relink(tmp_path, ["notation", "01_painters"]) == 2
    text = (tmp_path / "a.html").read_text()
    assert 'href="notation.html"' in text and 'href="01_painters.html#s2"' in text
    assert 'href="other.ipynb"' in text and 'href="_notebooks/notation.ipynb"' in text


def test_index_lists_the_course_pages_then_the_chapters():
    text = site.index_markdown(["syllabus", "notation", "00_start_here", "01_painters"])
    course_part, chapters = text.split(":caption: Chapters")
    assert "syllabus\nnotation" in course_part and "00_start_here\n01_painters" in chapters


def test_a_corrupt_mathjax_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mathjax-3.2.2.tgz").write_bytes(b"not mathjax")

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"tampered"

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: Response())
    with pytest.raises(RuntimeError, match="SHA-256"):
        site.mathjax_archive()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _figures_in(nb) -> int:
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            count += str(out.get("data", {}).get("text/html", "")).count("Plotly.newPlot")
    return count


@pytest.mark.browser
@pytest.mark.timeout(1800)
def test_site_in_the_browser(
    site_pages, tmp_path, browser, free_port, watch_console_errors, watch_outside_requests
):
    stems = list(site.page_notebooks())
    for stem in stems:
        site_pages.executed(stem)
    site.write_sources(site_pages.root, tmp_path / "src")
    site.sphinx_build(tmp_path / "src", tmp_path / "html")
    handler = functools.partial(QuietHandler, directory=tmp_path / "html")
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        for stem in ["index", *stems]:
            page = context.new_page()
            errors, outside = watch_console_errors(page), watch_outside_requests(page)
            page.goto(f"{base}/{stem}.html", wait_until="load", timeout=120_000)
            if stem[:2].isdigit():
                executed = nbformat.read(site_pages.root / f"{stem}.ipynb", as_version=4)
                expected = _figures_in(executed)
                assert expected >= 1, stem
                page.wait_for_function(
                    f"document.querySelectorAll('.js-plotly-plot').length >= {expected}",
                    timeout=60_000,
                )
                assert page.locator("table.pflow-claims").count() >= 1, stem
                assert page.locator("a[href*='voila/render']").count() >= 1, stem
            page.wait_for_timeout(300)  # late errors (MathJax, plotly) have a moment to show
            assert not errors, f"{stem}: {errors[:3]}"
            assert not outside, f"{stem}: requests leaving the machine: {outside[:3]}"
            page.close()
        _frame_slider_moves_the_picture(context.new_page(), f"{base}/00_start_here.html")
    finally:
        context.close()
        server.shutdown()


def _frame_slider_moves_the_picture(page, url: str) -> None:
    """Click near the end of the first frame slider's rail: the slider's active step and
    the data of its figure change, with no kernel anywhere."""
    page.goto(url, wait_until="load", timeout=120_000)
    page.wait_for_selector(".js-plotly-plot .slider-rail-touch-rect", timeout=60_000)
    plot = page.locator(".js-plotly-plot", has=page.locator(".slider-rail-touch-rect")).first
    plot.scroll_into_view_if_needed()
    state = "gd => [gd._fullLayout.sliders[0].active, JSON.stringify(gd.data.map(t => t.x))]"
    before = plot.evaluate(state)
    rail = plot.locator(".slider-rail-touch-rect").first.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] * 0.9, rail["y"] + rail["height"] / 2)
    page.wait_for_function(
        "([gd, a]) => gd._fullLayout.sliders[0].active !== a",
        arg=[plot.element_handle(), before[0]],
        timeout=10_000,
    )
    page.wait_for_timeout(500)  # the frame is drawn
    after = plot.evaluate(state)
    assert after[0] > before[0] and after[1] != before[1]
