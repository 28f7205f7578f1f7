"""Write plotly figures to disk: self-contained HTML, and PNG through headless Chromium.

HTML embeds plotly.js, so a figure opens offline, with no CDN; the figure itself is written
by :func:`pflow_explore.viz.html.figure_html`, as on the static course site.
PNG does not use plotly's kaleido (1.x downloads Chrome at first use; 0.2 does not work
with plotly >= 7): it opens that same HTML file in the system Chromium through playwright
and screenshots the plot element. Every request that leaves the file is refused, so a
PNG is drawn from what the HTML file holds and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

ENV_CHROMIUM = "PFLOW_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# plotly's own default size for a figure that does not set one
DEFAULT_WIDTH, DEFAULT_HEIGHT = 900, 600
PLOT_SELECTOR = ".js-plotly-plot .main-svg"
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
_TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


class PngUnavailable(RuntimeError):
    """PNGs cannot be drawn here (no Chromium, or no playwright); the message says which."""


def file_stem(name: str) -> str:
    """A figure name made safe for a file name: runs of other characters become ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not stem:
        raise ValueError(f"figure name {name!r} has no character usable in a file name")
    return stem


def chromium_executable() -> Path:
    """The Chromium to draw with: env ``PFLOW_CHROMIUM``, else ``/usr/bin/chromium``.

    Raises PngUnavailable when that file does not exist or playwright is not installed.
    """
    path = Path(os.environ.get(ENV_CHROMIUM) or DEFAULT_CHROMIUM)
    if not path.exists():
        found = shutil.which(str(path))
        if found is None:
            raise PngUnavailable(f"Chromium not found at {path} (install it or set {ENV_CHROMIUM})")
        path = Path(found)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        raise PngUnavailable(f"playwright is not installed ({err})") from err
    return path


def write_html(fig: go.Figure, path: Path) -> Path:
    """Write ``fig`` as one self-contained HTML page (plotly.js inside, no MathJax, no CDN),
    drawn by :func:`viz.html.figure_html`, the static course site's code path."""
    from pflow_explore.viz.html import figure_html, standalone_page

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(standalone_page(figure_html(fig), title=path.stem), encoding="utf-8")
    return path


def figure_size(fig: go.Figure) -> tuple[int, int]:
    """The (width, height) in CSS pixels the figure asks for, plotly's defaults otherwise."""
    width = fig.layout.width or DEFAULT_WIDTH
    height = fig.layout.height or DEFAULT_HEIGHT
    return int(width), int(height)


def write_pngs(
    pages: Sequence[tuple[Path, Path, tuple[int, int]]],
    chromium: Path | None = None,
    timeout_s: float = 30.0,
) -> list[Path]:
    """Screenshot each ``(html, png, (width, height))`` page's plot into ``png``.

    One browser serves every page. The viewport is the figure's size, so the plot element
    fills it; ``timeout_s`` bounds the wait for plotly to draw each page. Raises
    PngUnavailable, in one line, when Chromium cannot start or a page does not draw.

    Playwright's sync API refuses to run in a thread with a running asyncio loop (a
    Jupyter kernel, or a test session already driving a browser), so the drawing runs in
    a worker thread of its own.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_write_pngs, pages, chromium, timeout_s).result()


def _write_pngs(
    pages: Sequence[tuple[Path, Path, tuple[int, int]]],
    chromium: Path | None,
    timeout_s: float,
) -> list[Path]:
    from playwright.sync_api import Error, Route, sync_playwright

    exe = chromium or chromium_executable()

    def local_only(route: Route) -> None:
        if route.request.url.startswith(_LOCAL_SCHEMES):
            route.continue_()
        else:
            route.abort()

    written = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(exe), args=list(CHROMIUM_FLAGS), headless=True
            )
            try:
                for html, png, (width, height) in pages:
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.route("**/*", local_only)
                    page.goto(html.resolve().as_uri())
                    page.wait_for_selector(PLOT_SELECTOR, timeout=timeout_s * 1000)
                    # main-svg exists before plotly has finished laying out: wait two frames
                    page.evaluate(_TWO_FRAMES)
                    png.parent.mkdir(parents=True, exist_ok=True)
                    page.locator(".js-plotly-plot").first.screenshot(path=str(png))
                    page.close()
                    written.append(png)
            finally:
                browser.close()
    except Error as err:  # launch failures and timeouts: one line, not a playwright traceback
        first = (str(err).strip().splitlines() or [""])[0]
        raise PngUnavailable(f"Chromium at {exe} could not draw the figures ({first})") from err
    return written


def export_figures(
    figures: Mapping[str, go.Figure], out_dir: Path, png: bool = True
) -> tuple[list[Path], list[Path]]:
    """Write every figure as ``<out_dir>/<name>.html`` and, if ``png``, ``<name>.png``.

    HTML is written first, so a failure to draw PNGs (PngUnavailable) leaves the HTML in
    place. Returns (html paths, png paths).
    """
    htmls, pages = [], []
    for name, fig in figures.items():
        stem = file_stem(name)
        html = write_html(fig, out_dir / f"{stem}.html")
        htmls.append(html)
        pages.append((html, out_dir / f"{stem}.png", figure_size(fig)))
    if not png or not pages:
        return htmls, []
    return htmls, write_pngs(pages, chromium_executable())
