"""One module per chapter: ``chapters/<slug>.py`` beside ``notebooks/NN_<slug>.ipynb``.

The contract every chapter module meets (the notebook calls it, the command line and the
tests discover it; nothing lists chapters by hand):

- ``Settings``: a frozen dataclass of everything that sizes the chapter, including
  ``scale`` (the preset's name, which the claims report);
  ``SETTINGS = {"tiny": ..., "cpu": ..., "gpu": ...}``: the three presets.
- ``settings(scale=None) -> Settings``: the preset for the resolved scale.
- ``prepare(s: Settings) -> None``: build (train) and cache the artifacts the chapter
  needs, so that ``run`` and the dashboard only load them. A no-op where nothing is trained.
- ``run(s: Settings) -> Results``: compute everything the chapter shows.
- ``claims(r: Results) -> list[Claim]``: the checkable claims (``pflow_explore.claims``).
- ``figures(r: Results) -> dict[str, go.Figure]``: the chapter's figures by name.
- ``preview() -> go.Figure``: a small figure for the landing page, in well under a second.

``module(slug)`` imports the module of a chapter; ``modules()`` those of every notebook
that has one.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pflow_explore import course

REQUIRED = ("SETTINGS", "settings", "prepare", "run", "claims", "figures", "preview")


def module(slug: str) -> ModuleType | None:
    """The chapter module for ``slug``, or None when the chapter has none."""
    if importlib.util.find_spec(f"{__name__}.{slug}") is None:
        return None
    mod = importlib.import_module(f"{__name__}.{slug}")
    missing = [name for name in REQUIRED if not hasattr(mod, name)]
    if missing:
        raise AttributeError(f"chapter module {slug!r} lacks {', '.join(missing)}")
    return mod


def modules() -> dict[str, ModuleType]:
    """Chapter modules of every existing notebook that has one, in notebook order."""
    found = {}
    for slug in course.notebooks():
        mod = module(slug)
        if mod is not None:
            found[slug] = mod
    return found
