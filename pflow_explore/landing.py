"""The dashboards' landing page (notebooks/index.ipynb): one card per chapter, in order.

Each card gives the chapter's number, title, paper, one-line idea and status: *ready*
when its notebook ``notebooks/NN_slug.ipynb`` exists, else *planned*. A ready card links
to the chapter's dashboard and shows the chapter module's ``preview()`` figure; a preview
that raises becomes a one-line message in its card, never a broken page.

The page is plain ipywidgets, and its previews are static LiveFigures: it loads the same
JavaScript as a chapter's dashboard (one plotly bundle, which the browser then keeps for
every chapter it opens) and nothing from a CDN. It was a Panel layout through
``jupyter_bokeh`` until the dashboards issue: BokehJS, Panel's and a second plotly.js made
it 27 MB of JavaScript, more than any chapter.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go

from pflow_explore import chapters, course
from pflow_explore.widgets.live_figure import LiveFigure

FRONT_DOOR = course.Chapter(
    0,
    "start_here",
    "Start here",
    "the course itself",
    "What the course is and how to use it, with a live PF-ODE demo.",
)
PREVIEW_SIZE = (300, 200)  # px; a card is a little wider than its preview
CARD_WIDTH = 330


@dataclass(frozen=True)
class Entry:
    """One chapter on the landing page: its outline entry and its notebook, if any."""

    chapter: course.Chapter
    notebook: Path | None

    @property
    def ready(self) -> bool:
        return self.notebook is not None

    @property
    def href(self) -> str | None:
        """The dashboard's link, relative to /voila/render/index.ipynb (None if planned)."""
        return self.notebook.name if self.notebook is not None else None


def entries() -> list[Entry]:
    """The front door, then every chapter of ``course.OUTLINE``, in teaching order."""
    present = course.notebooks()
    return [Entry(ch, present.get(ch.slug)) for ch in (FRONT_DOOR, *course.OUTLINE)]


def preview(slug: str) -> tuple[go.Figure | None, str | None]:
    """The chapter module's ``preview()`` sized for a card, as ``(figure, None)``.

    ``(None, None)`` when the chapter has no module yet; ``(None, message)`` with a one-line
    message when importing the module or its ``preview()`` raised, so that one broken
    chapter cannot take the landing page down.
    """
    try:
        mod = chapters.module(slug)
        if mod is None:
            return None, None
        fig = go.Figure(mod.preview())
    except Exception as err:  # any failure of chapter code becomes the card's message
        first = (str(err).strip().splitlines() or [""])[0][:160]
        what = f"{type(err).__name__}: {first}" if first else type(err).__name__
        return None, f"preview unavailable ({what})"
    width, height = PREVIEW_SIZE
    fig.update_layout(width=width, height=height, autosize=False)
    return fig, None


def card_html(entry: Entry) -> str:
    """The text of a card: number, title, paper, idea, status and the dashboard link."""
    ch = entry.chapter
    status = (
        '<span class="pflow-status pflow-ready">ready</span>'
        if entry.ready
        else '<span class="pflow-status pflow-planned">planned</span>'
    )
    link = (
        f'<p><a class="pflow-open" href="{html.escape(entry.href)}">open the dashboard &rarr;</a>'
        "</p>"
        if entry.href
        else ""
    )
    return (
        f'<div class="pflow-card-text" data-slug="{ch.slug}">'
        f'<div class="pflow-number">{ch.number:02d} {status}</div>'
        f'<h3 class="pflow-title">{html.escape(ch.title)}</h3>'
        f'<p class="pflow-paper"><i>{html.escape(ch.paper)}</i></p>'
        f'<p class="pflow-idea">{html.escape(ch.idea)}</p>'
        f"{link}</div>"
    )


CARD_CSS = """
.pflow-card-text { font-family: var(--jp-ui-font-family, sans-serif); }
.pflow-card-text h3 { margin: 4px 0 2px 0; font-size: 1.05em; }
.pflow-card-text p { margin: 2px 0 6px 0; }
.pflow-number { color: #555; font-weight: 600; }
.pflow-paper { color: #555; font-size: 0.9em; }
.pflow-status { font-size: 0.8em; padding: 1px 7px; border-radius: 8px; margin-left: 6px; }
.pflow-ready { background: #d9f2dd; color: #1b5e20; }
.pflow-planned { background: #eee; color: #666; }
.pflow-open { font-weight: 600; }
.pflow-preview-message { color: #8a4b00; font-size: 0.85em; }
"""


def card(entry: Entry) -> widgets.VBox:
    """A card (``widgets.VBox``): the card's text and, for a ready chapter, its preview (a
    static LiveFigure) or the message saying why there is none."""
    parts: list[widgets.Widget] = [widgets.HTML(card_html(entry))]
    if entry.ready:
        fig, message = preview(entry.chapter.slug)
        if fig is not None:
            # a static plot: a preview invites a click on the link, not zooming
            figure = LiveFigure(fig)
            figure._config = {"staticPlot": True}  # plotly's config travels in this trait
            parts.append(figure)
        elif message is not None:
            parts.append(
                widgets.HTML(f'<p class="pflow-preview-message">{html.escape(message)}</p>')
            )
    box = widgets.VBox(
        parts,
        layout=widgets.Layout(
            width=f"{CARD_WIDTH}px",
            margin="6px",
            padding="6px 10px",
            border="1px solid #ddd",
        ),
    )
    box.add_class("pflow-card")
    box.add_class("pflow-ready-card" if entry.ready else "pflow-planned-card")
    return box


def landing_page(scale_name: str) -> widgets.VBox:
    """The whole page: a header saying the scale served, then the cards in a wrapping row."""
    n_ready = sum(e.ready for e in entries())
    header = widgets.HTML(
        f"<style>{CARD_CSS}</style>"
        "<h1>pflow-explore: probability flows, one paper at a time</h1>"
        f"<p>{n_ready} of {len(course.OUTLINE) + 1} notebooks are ready, served at scale "
        f"<b>{html.escape(scale_name)}</b>. Open a dashboard from its card: it is a live "
        "notebook, so moving a slider recomputes the picture. The back button returns here; "
        "planned chapters appear as they are written.</p>"
        '<p>New to the course? The <a href="syllabus.ipynb">syllabus</a> maps which chapter '
        'builds on which, with a suggested plan; <a href="notation.ipynb">the notation</a> '
        "gives every symbol its one meaning. In the "
        '<a href="playground.ipynb">playground</a> you draw a distribution and train a '
        "flow on it in seconds.</p>"
    )
    cards = widgets.Box(
        [card(e) for e in entries()],
        layout=widgets.Layout(display="flex", flex_flow="row wrap", align_items="flex-start"),
    )
    return widgets.VBox([header, cards], layout=widgets.Layout(width="100%"))
