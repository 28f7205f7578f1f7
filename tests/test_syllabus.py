"""The course's front matter, syllabus and notation (pflow_explore.syllabus, .notation) and
the two pages that render them (notebooks/syllabus.ipynb, notebooks/notation.ipynb)."""

from __future__ import annotations

import dataclasses

import nbformat
import pytest
from nbclient import NotebookClient

from pflow_explore import course, landing, notation, syllabus


def test_plans_match_the_outline_and_the_weekly_plan():
    assert syllabus.check() == []


def test_check_finds_a_prerequisite_that_comes_later(monkeypatch):
    plans = dict(syllabus.PLANS)
    plans[2] = dataclasses.replace(plans[2], requires=(0, 3))
    monkeypatch.setattr(syllabus, "PLANS", plans)
    assert any("builds on a later chapter 03" in p for p in syllabus.check())


def test_check_finds_a_chapter_missing_from_the_weeks(monkeypatch):
    weeks = tuple(w for w in syllabus.WEEKS if 12 not in w[1])
    monkeypatch.setattr(syllabus, "WEEKS", weeks)
    assert "chapter 12 is in no week of the plan" in syllabus.check()


@pytest.mark.parametrize("slug", list(course.notebooks()))
def test_front_matter_of_every_existing_chapter(slug):
    page = syllabus.front_matter(slug)
    assert "Builds on:" in page and "Study time:" in page and "Afterwards you can:" in page
    if slug != "start_here":
        assert "https://arxiv.org/abs/" in page, "a chapter cites its paper with a link"
    number = 0 if slug == "start_here" else course.chapter(slug).number
    by_number = {
        0 if s == "start_here" else course.chapter(s).number: p
        for s, p in course.notebooks().items()
    }
    for r in syllabus.PLANS[number].requires:  # prerequisites that exist are links
        if r in by_number:
            assert f'href="{by_number[r].name}"' in page


def test_front_matter_of_an_unknown_chapter():
    with pytest.raises(KeyError, match="no chapter 'nope'"):
        syllabus.front_matter("nope")


def test_notation_names_resolve_and_symbols_are_unique():
    assert notation.check() == []


def test_notation_check_finds_a_name_the_package_lacks(monkeypatch):
    wrong = (*notation.SYMBOLS, notation.Symbol("q", "nothing", "pflow_explore.edm:no_such"))
    monkeypatch.setattr(notation, "SYMBOLS", wrong)
    assert any("no_such does not resolve" in p for p in notation.check())


def test_notation_flags_the_clashes_the_papers_make():
    # the letters the course review found with two meanings are each explained per chapter
    local = {(u.chapter, u.symbol) for u in notation.LOCAL}
    for chapter, symbol in [(12, "D"), (3, "\\alpha"), (2, "b(x, t)"), (3, "S"), (12, "S")]:
        assert (chapter, symbol) in local


def test_landing_links_the_syllabus_and_the_notation():
    header = landing.landing_page("tiny").children[0].value
    assert 'href="syllabus.ipynb"' in header and 'href="notation.ipynb"' in header


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["syllabus.ipynb", "notation.ipynb"])
def test_course_pages_execute(name):
    nb = nbformat.read(course.notebooks_dir() / name, as_version=4)
    NotebookClient(nb, timeout=60, kernel_name="python3").execute(cwd=str(course.notebooks_dir()))
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    html_out = "".join(
        o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", [])
    )
    assert "<table" in html_out


def test_docs_papers_notation_section_is_the_generated_one():
    page = (course.repo_root() / "docs" / "papers.md").read_text()
    start = page.index("## Notation\n")
    section = page[start : page.index("\n---\n", start)]
    assert notation.markdown().strip() in section, "regenerate: notation.markdown()"


@pytest.mark.parametrize("slug", list(course.notebooks()))
def test_every_chapter_opens_with_its_front_matter(slug):
    nb = nbformat.read(course.notebooks()[slug], as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    # right after the parameters cell: papers, prerequisites, outcomes, study time
    assert f'syllabus.front_matter("{slug}")' in code[1], code[1][:200]
