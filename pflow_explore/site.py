"""The course as a static website (``make site``): every chapter readable with no install
and no kernel, its derivations, figures and claims table as computed at the scale named.

:func:`build` does it in three steps, all offline:

1. :func:`execute`: the student release of each page (the syllabus, the notation, every
   chapter in order; answers stubbed, hidden tests removed, as ``make student`` writes
   them) is executed by papermill at ``scale`` with the static view on
   (:mod:`pflow_explore.widgets.static_view`: each explorer becomes static plotly figures,
   a step-through one gets frames, a slider and Play). Exercise cells keep their code and
   lose their "not written yet" output; a chapter page gets a line of links on top: its
   live dashboard, the notebook for JupyterLab (a copy on the site) and the paper.
2. :func:`write_sources`: a Sphinx project around the executed notebooks (myst-nb renders
   them without running anything; the book theme), with plotly.js and MathJax copied into
   the site, so no page asks anything of the network.
3. ``sphinx-build``, then links between notebooks (``x.ipynb``) point at the built pages.

MathJax comes from the npm registry once (``mathjax@3``, cached under the data folder,
see :func:`mathjax_dir`), like Chromium for the browser tests.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from pflow_explore import cache, course, student_release, syllabus
from pflow_explore.scale import ENV_SCALE, environment

PAGES = ("syllabus", "notation")  # course pages before the chapters, in this order
MATHJAX_URL = "https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz"
MATHJAX_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
MATHJAX_FILES = ("package/es5/tex-chtml.js", "package/es5/output/chtml/fonts/woff-v2/")
DASHBOARD = "http://127.0.0.1:8866/voila/render/{name}"
ENABLE = "from pflow_explore.widgets import static_view\n\nstatic_view.enable()"
REMOVE = "remove-cell"  # myst-nb leaves a cell with this tag off the page
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PAPERMILL_ERROR = "papermill-error-cell-tag"


@dataclass
class SiteReport:
    """What :func:`build` made: seconds per executed page, the build's seconds, the site's
    bytes and its pages."""

    out: Path
    execute_seconds: dict[str, float] = field(default_factory=dict)
    sphinx_seconds: float = 0.0
    size_bytes: int = 0
    pages: list[str] = field(default_factory=list)


def page_notebooks() -> dict[str, Path]:
    """The notebooks the site shows, name (stem) -> path: the course pages, then the
    chapters (the landing page and the playground need a kernel and stay off the site)."""
    nb_dir = course.notebooks_dir()
    found = {
        name: nb_dir / f"{name}.ipynb" for name in PAGES if (nb_dir / f"{name}.ipynb").exists()
    }
    found.update({p.stem: p for p in course.notebooks().values()})
    return found


def _links_cell(stem: str) -> nbformat.NotebookNode:
    slug = stem.split("_", 1)[1]
    refs = syllabus.PLANS.get(syllabus._number(slug))
    paper = refs.references[0].url if refs and refs.references else None
    parts = [
        f'<a href="{DASHBOARD.format(name=stem + ".ipynb")}">live dashboard</a> '
        "(after <code>make serve</code> in a clone)",
        f'<a href="_notebooks/{stem}.ipynb" download>the notebook for JupyterLab</a>',
    ]
    if paper:
        parts.append(f'<a href="{html.escape(paper)}">the paper</a>')
    text = '<p class="pflow-site-links">' + " · ".join(parts) + "</p>"
    return nbformat.v4.new_markdown_cell(text)


def page_version(path: Path) -> nbformat.NotebookNode:
    """The notebook a page is built from: the student release of ``path``, a first cell
    (removed from the page) that turns the static view on, and for a chapter a line of
    links under its title."""
    nb = student_release.student_version(nbformat.read(path, as_version=4))
    enable = nbformat.v4.new_code_cell(ENABLE)
    enable.metadata["tags"] = [REMOVE]
    nb.cells.insert(0, enable)
    if path.stem[:2].isdigit():
        title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), 0)
        nb.cells.insert(title + 1, _links_cell(path.stem))
    return nb


def _tidy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Executed page: exercise cells (nbgrader solution or grade cells) keep their code,
    not their "not written yet" output; papermill's injected-parameters cell is hidden; no
    widget state or widget view is left (the static view drew every widget)."""
    nb.metadata.pop("widgets", None)  # widget state: a page would fetch its manager from a CDN
    # papermill's red "An Exception was encountered" cell: the grade cells' errors are expected
    nb.cells = [c for c in nb.cells if PAPERMILL_ERROR not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET_VIEW, None)
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
            cell.outputs = []
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.metadata["tags"] = [*cell.metadata["tags"], REMOVE]
    return nb


def execute_page(stem: str, out: Path, scale: str = "cpu") -> nbformat.NotebookNode:
    """Execute page ``stem``'s :func:`page_version` at ``scale`` (papermill, a fresh kernel,
    the notebooks folder as working directory); returns the notebook as executed, the
    grade cells' "not written yet" errors included. A failure anywhere else raises
    RuntimeError naming the cell."""
    import papermill

    path = page_notebooks()[stem]
    out.mkdir(parents=True, exist_ok=True)
    staged, done = out / f".{stem}.in.ipynb", out / f".{stem}.out.ipynb"
    nbformat.write(page_version(path), staged)
    try:  # pages without a SCALE parameter read it from the environment
        with environment(**{ENV_SCALE: scale}):
            papermill.execute_notebook(
                str(staged),
                str(done),
                parameters={"SCALE": scale} if stem[:2].isdigit() else {},
                kernel_name="python3",
                cwd=str(path.parent),
                progress_bar=False,
            )
    except papermill.PapermillExecutionError as err:
        if not _only_exercise_errors(nbformat.read(done, as_version=4)):
            failed = f"cell [{err.exec_count}] raised {err.ename}: {err.evalue}"
            raise RuntimeError(f"{stem}: {failed}") from None
    finally:
        staged.unlink(missing_ok=True)
    executed = nbformat.read(done, as_version=4)
    done.unlink()
    return executed


def save_page(stem: str, executed: nbformat.NotebookNode, out: Path) -> Path:
    """Write the executed page, tidied (:func:`_tidy`), as ``out/<stem>.ipynb`` and the
    student notebook a reader downloads as ``out/_notebooks/<stem>.ipynb``."""
    (out / "_notebooks").mkdir(parents=True, exist_ok=True)
    student = student_release.student_version(nbformat.read(page_notebooks()[stem], as_version=4))
    nbformat.write(student, out / "_notebooks" / f"{stem}.ipynb")
    nbformat.write(_tidy(nbformat.from_dict(executed)), out / f"{stem}.ipynb")
    return out / f"{stem}.ipynb"


def execute(out: Path, scale: str = "cpu", only: list[str] | None = None) -> dict[str, float]:
    """Execute and save every page (:func:`execute_page`, :func:`save_page`) into ``out``;
    ``only``: the page names (stems) to do. Returns the seconds per page."""
    seconds = {}
    for stem in page_notebooks():
        if only is not None and stem not in only:
            continue
        start = time.perf_counter()
        save_page(stem, execute_page(stem, out, scale), out)
        seconds[stem] = time.perf_counter() - start
    return seconds


def _only_exercise_errors(nb: nbformat.NotebookNode) -> bool:
    """True when every error output sits in a grade cell (a stub the reader has not written)."""
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors and not cell.metadata.get("nbgrader", {}).get("grade"):
            return False
    return True


# ---- the Sphinx project -------------------------------------------------------------------
CONF = """# Written by pflow_explore.site: the course's static site (myst-nb renders the executed
# notebooks as they are; nothing is executed here, nothing is loaded from the network).
project = "pflow-explore"
author = "the pflow-explore authors"
extensions = ["myst_nb"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
exclude_patterns = ["_notebooks", ".*"]
html_theme = "sphinx_book_theme"
html_title = "pflow-explore: probability flows, a course"
html_static_path = ["_static"]
html_js_files = ["plotly.min.js"]  # one copy for every figure of every page
mathjax_path = "mathjax/tex-chtml.js"
html_theme_options = {"show_toc_level": 2}
html_context = {"default_mode": "light"}  # pydata-sphinx-theme logs an error without one
html_favicon = "_static/favicon.svg"  # the browser asks for one on every first visit
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
"""


FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<path d="M1 13 C5 13 6 3 15 3" stroke="#1f77b4" stroke-width="2" fill="none"/></svg>'
)


def mathjax_archive() -> Path:
    """MathJax 3's npm tarball, downloaded once into ``<data>/site/`` and checked against
    its SHA-256."""
    import hashlib
    import urllib.request

    path = cache.data_dir() / "site" / MATHJAX_URL.rsplit("/", 1)[1]
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == MATHJAX_SHA256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(MATHJAX_URL, timeout=120) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != MATHJAX_SHA256:
        raise RuntimeError(f"{MATHJAX_URL}: the download does not match its SHA-256")
    path.write_bytes(data)
    return path


def install_mathjax(static: Path) -> Path:
    """MathJax's tex-chtml.js and its fonts under ``static/mathjax`` (the layout the script
    expects: its fonts at output/chtml/fonts/woff-v2 beside it)."""
    target = static / "mathjax"
    with tarfile.open(mathjax_archive()) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(MATHJAX_FILES):
                rel = member.name.removeprefix("package/es5/")
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
    return target


def plotly_js() -> Path:
    """The plotly.js bundle that plotly.py ships (the version its figures are written for)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def index_markdown(stems: list[str]) -> str:
    """The front page: what the course is, the course map, the table of contents."""
    pages = [s for s in stems if not s[:2].isdigit()]
    chapters = [s for s in stems if s[:2].isdigit()]
    lines = [
        "# pflow-explore: probability flows, a course",
        "",
        "Twelve papers on probability flows, each a chapter: the closed forms derived and",
        "checked against numerics, models trained at small scale, and every claim of the paper",
        "measured and reported as it came out. This site shows every chapter as executed, with",
        "its figures and its claims table; step-through figures have a slider and a Play button.",
        "To move the other sliders, run the chapter's live dashboard or its notebook (each",
        "chapter page links both).",
        "",
        "```{raw} html",
        syllabus.course_map_html(),
        "```",
        "",
    ]
    for caption, names in (("The course", pages), ("Chapters", chapters)):
        if names:
            lines += ["```{toctree}", ":maxdepth: 1", f":caption: {caption}", "", *names, "```", ""]
    return "\n".join(lines)


def write_sources(executed: Path, src: Path) -> list[str]:
    """The Sphinx project in ``src``: conf.py, index.md, the executed notebooks of
    ``executed`` (and their downloadable copies), plotly.js and MathJax; returns the page
    names in order."""
    stems = [s for s in page_notebooks() if (executed / f"{s}.ipynb").exists()]
    if not stems:
        raise ValueError(f"no executed page in {executed}")
    if src.exists():
        shutil.rmtree(src)
    static = src / "_static"
    static.mkdir(parents=True)
    shutil.copy(plotly_js(), static / "plotly.min.js")
    (static / "favicon.svg").write_text(FAVICON)
    install_mathjax(static)
    for stem in stems:
        shutil.copy(executed / f"{stem}.ipynb", src / f"{stem}.ipynb")
    shutil.copytree(executed / "_notebooks", src / "_notebooks")
    (src / "conf.py").write_text(CONF)
    (src / "index.md").write_text(index_markdown(stems))
    return stems


NOTEBOOK_LINK = re.compile(r'href="([A-Za-z0-9_]+)\.ipynb(#[^"]*)?"')


def relink(html_dir: Path, stems: list[str]) -> int:
    """Links to a built notebook (``x.ipynb``, written by the chapters for JupyterLab and
    Voila) point at its page ``x.html``; returns how many were changed."""
    built, changed = set(stems), 0
    for page in html_dir.glob("*.html"):
        text = page.read_text()

        def swap(m: re.Match) -> str:
            nonlocal changed
            if m.group(1) not in built:
                return m.group(0)
            changed += 1
            return f'href="{m.group(1)}.html{m.group(2) or ""}"'

        new = NOTEBOOK_LINK.sub(swap, text)
        if new != text:
            page.write_text(new)
    return changed


def sphinx_build(src: Path, html_dir: Path) -> float:
    """Build the project in ``src`` into ``html_dir`` (replaced) and relink it; seconds."""
    start = time.perf_counter()
    if html_dir.exists():
        shutil.rmtree(html_dir)
    doctrees = src / ".doctrees"  # Sphinx's pickles: beside the sources, not in the site
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-q",
        "-d",
        str(doctrees),
        str(src),
        str(html_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sphinx-build failed:\n{done.stderr[-3000:]}")
    shutil.copytree(src / "_notebooks", html_dir / "_notebooks")
    relink(html_dir, [p.stem for p in src.glob("*.ipynb")])
    return time.perf_counter() - start


def build(out: Path, scale: str = "cpu", only: list[str] | None = None) -> SiteReport:
    """Execute, write the Sphinx project, build: ``out/executed`` (the executed pages),
    ``out/src`` (the project), ``out/html`` (the site: open ``out/html/index.html``)."""
    report = SiteReport(out)
    report.execute_seconds = execute(out / "executed", scale, only)
    stems = write_sources(out / "executed", out / "src")
    html_dir = out / "html"
    report.sphinx_seconds = sphinx_build(out / "src", html_dir)
    report.size_bytes = sum(p.stat().st_size for p in html_dir.rglob("*") if p.is_file())
    report.pages = ["index", *stems]
    return report
