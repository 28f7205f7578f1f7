"""The ``pflow-explore`` command, against a fake chapter.

``course.notebooks`` and ``chapters.module`` are replaced, so these tests do not depend on
what the real chapters compute or how long they take: chapter "fake" has a tiny notebook
and a module whose claims fail on request; chapter "nomod" has a notebook and no module.
One test checks the real ``start_here`` chapter at ``tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from pflow_explore import cache, chapters, cli, course
from pflow_explore.claims import Claim

CHROMIUM = Path(os.environ.get("PFLOW_CHROMIUM", "/usr/bin/chromium"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMANDS = ("list", "serve", "run", "figures", "verify", "prepare")


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("SCALE = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def _fake_module(state: dict) -> SimpleNamespace:
    """A chapter module meeting the contract; ``state["fail"]`` makes one claim fail."""
    import plotly.graph_objects as go

    def settings(scale=None):
        return {"scale": scale, "n": {"tiny": 3, "cpu": 5, "gpu": 7}[scale]}

    def prepare(s):
        cache.cached("fake", "weights", s, lambda: {"w": list(range(s["n"]))})

    def run(s):
        state["runs"].append(s["scale"])
        if state.get("raise"):
            raise RuntimeError("the chapter broke\nsecond line")
        return {"scale": s["scale"], "xs": list(range(s["n"]))}

    def claims(r):
        n, total = len(r["xs"]), sum(r["xs"])
        ok = Claim(
            "sum is right",
            "n(n-1)/2",
            float(total),
            "= n(n-1)/2",
            total == n * (n - 1) // 2,
            r["scale"],
        )
        other = Claim("second", "holds", 1.0, "< 2", not state["fail"], r["scale"])
        return [ok, other]

    def figures(r):
        return {
            "line": go.Figure(go.Scatter(x=r["xs"], y=[x * x for x in r["xs"]])),
            "heat map": go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]), layout={"width": 400}),
        }

    return SimpleNamespace(
        SETTINGS={s: settings(s) for s in ("tiny", "cpu", "gpu")},
        settings=settings,
        prepare=prepare,
        run=run,
        claims=claims,
        figures=figures,
        preview=lambda: go.Figure(),
    )


@pytest.fixture
def fake(tmp_path, monkeypatch, data_dir):
    """Chapters "fake" (notebook + module) and "nomod" (notebook only); data in tmp."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    books = {
        "fake": _notebook(nbs / "01_fake.ipynb", "print(f'scale is {SCALE}')"),
        "nomod": _notebook(nbs / "02_nomod.ipynb", "raise ValueError('boom in the notebook')"),
    }
    state = {"fail": False, "runs": []}
    mod = _fake_module(state)
    monkeypatch.setattr(course, "notebooks", lambda: dict(books))
    monkeypatch.setattr(chapters, "module", lambda slug: mod if slug == "fake" else None)
    monkeypatch.delenv("PFLOW_SCALE", raising=False)
    monkeypatch.delenv(cache.ENV_SHIP, raising=False)
    return SimpleNamespace(state=state, books=books, data=data_dir, tmp=tmp_path)


def test_help_end_to_end():
    exe = shutil.which("pflow-explore", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "pflow_explore.cli"]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", done.stdout, re.M), f"{name} lacks a help line"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pflow-explore {name}")
    assert len(out.splitlines()) >= 4  # a description, not only a usage line


@pytest.mark.parametrize(
    "name,every,switch",
    [
        ("run", False, None),
        ("figures", False, "--no-png"),
        ("verify", True, "--json"),
        ("prepare", True, "--ship"),
    ],
)
def test_chapter_commands_share_slug_scale_and_their_switch(name, every, switch):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[name]
    args = parser.parse_args(["--scale", "tiny"] if every else ["some_slug", "--scale", "tiny"])
    assert args.scale == "tiny" and args.slug == (None if every else "some_slug")
    assert args.func is getattr(cli, f"_cmd_{name}")
    assert ("Without SLUG, every chapter that has a module." in parser.description) == every
    if switch is not None:
        dest = switch.lstrip("-").replace("-", "_")
        assert getattr(args, dest) is False
        assert getattr(parser.parse_args([*([] if every else ["s"]), switch]), dest) is True
    if not every:
        with pytest.raises(SystemExit):
            parser.parse_args([])  # the slug is required


@pytest.mark.parametrize("command", ["verify", "prepare"])
def test_no_chapter_with_a_module_says_so_and_exits_0(fake, capsys, monkeypatch, command):
    monkeypatch.setattr(chapters, "module", lambda slug: None)
    assert cli.main([command, "--scale", "tiny"]) == 0
    err = capsys.readouterr().err
    assert f"no chapter has a module yet: nothing to {command}" in err
    assert fake.state["runs"] == []


def test_list_shows_every_chapter(fake, capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_slug = {line.split()[1]: line for line in lines[1:]}
    for slug in ["start_here", *(c.slug for c in course.OUTLINE), "fake", "nomod"]:
        assert slug in by_slug, f"{slug} missing from list"
    assert by_slug["painters"].split()[2] == "planned"
    assert by_slug["fake"].split()[2] == "ready"


def test_run_keeps_the_executed_copy_with_the_injected_scale(fake, capsys, monkeypatch):
    monkeypatch.setenv("PFLOW_SCALE", "cpu")  # --scale must win over the environment
    out_dir = fake.tmp / "runs"
    assert cli.main(["run", "fake", "--scale", "tiny", "--output", str(out_dir)]) == 0
    executed = out_dir / "01_fake-tiny.ipynb"
    assert str(executed) in capsys.readouterr().out
    nb = nbformat.read(executed, as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "scale is tiny" in printed
    assert os.environ["PFLOW_SCALE"] == "cpu"  # restored after the command


def test_run_of_a_raising_notebook_exits_1(fake, capsys):
    out_dir = fake.tmp / "runs"
    assert cli.main(["run", "nomod", "--scale", "tiny", "--output", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert "ValueError: boom in the notebook" in err
    executed = out_dir / "02_nomod-tiny.ipynb"
    assert str(executed) in err and executed.exists()


def test_verify_exit_status_follows_the_claims_and_list_shows_the_record(fake, capsys):
    assert cli.main(["verify", "fake", "--scale", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "sum is right" in out and "2/2 claims hold" in out
    record = json.loads((fake.data / "cache" / "fake" / "verify-tiny.json").read_text())
    assert (record["scale"], record["n_claims"], record["n_holding"]) == ("tiny", 2, 2)

    fake.state["fail"] = True
    assert cli.main(["verify", "fake", "--scale", "tiny"]) == 1
    assert "NO" in capsys.readouterr().out
    record = json.loads((fake.data / "cache" / "fake" / "verify-tiny.json").read_text())
    assert (record["n_claims"], record["n_holding"], record["failing"]) == (2, 1, ["second"])

    assert cli.main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " fake " in line)
    assert "tiny 1/2 FAIL" in row


def test_verify_json_and_every_chapter_with_a_module(fake, capsys):
    fake.state["fail"] = True
    assert cli.main(["verify", "--scale", "cpu", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert list(report["chapters"]) == ["fake"]  # "nomod" has no module: skipped
    assert report["scale"] == "cpu" and report["all_hold"] is False
    claims = report["chapters"]["fake"]["claims"]
    assert [c["holds"] for c in claims] == [True, False]
    assert claims[0]["measured"] == 10.0  # sum(range(5)): the cpu preset was used
    assert fake.state["runs"] == ["cpu"]


def test_verify_of_a_raising_chapter_is_one_line_and_exit_1(fake, capsys, monkeypatch):
    monkeypatch.delenv(cli.ENV_TRACEBACK, raising=False)
    fake.state["raise"] = True
    assert cli.main(["verify", "fake", "--scale", "tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: the chapter broke" in err[0]
    record = json.loads((fake.data / "cache" / "fake" / "verify-tiny.json").read_text())
    assert "the chapter broke" in record["error"]
    assert cli.main(["list"]) == 0
    assert "tiny ERROR" in capsys.readouterr().out


def _script_sources(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", html, re.I)


@pytest.mark.browser
def test_figures_writes_offline_html_and_png(fake, capsys):
    out = fake.tmp / "figs"
    png = CHROMIUM.exists()
    argv = ["figures", "fake", "--scale", "tiny", "--out", str(out)]
    assert cli.main(argv if png else [*argv, "--no-png"]) == 0
    for stem in ("line", "heat_map"):
        html = (out / f"{stem}.html").read_text()
        assert "Plotly.newPlot" in html
        assert not [s for s in _script_sources(html) if "://" in s or "cdn.plot.ly" in s]
        if png:
            data = (out / f"{stem}.png").read_bytes()
            assert data[:8] == PNG_SIGNATURE and len(data) > 2048
    if not png:
        pytest.skip(f"{CHROMIUM} missing: HTML checked, PNG not")


def test_figures_without_chromium_writes_html_and_exits_1(fake, capsys, monkeypatch):
    monkeypatch.setenv("PFLOW_CHROMIUM", str(fake.tmp / "no-such-chromium"))
    out = fake.tmp / "figs"
    assert cli.main(["figures", "fake", "--scale", "tiny", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PNGs skipped" in err[0] and "--no-png" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["heat_map.html", "line.html"]
    assert cli.main(["figures", "fake", "--scale", "tiny", "--out", str(out), "--no-png"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "nope"],
        ["verify", "nope"],
        ["figures", "nope"],
        ["prepare", "nope"],
        ["run", "painters"],  # planned, no notebook yet
    ],
)
def test_unknown_chapter_is_one_line_and_exit_2(fake, capsys, argv):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert f"'{argv[1]}'" in err[0] and "valid chapters: fake, nomod" in err[0]
    assert fake.state["runs"] == []


@pytest.mark.parametrize("command", ["run", "verify", "figures", "prepare"])
def test_unknown_scale_is_one_line_and_exit_2(fake, capsys, command):
    assert cli.main([command, "fake", "--scale", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown scale 'huge'; valid scales: tiny, cpu, gpu"]


def test_bad_scale_in_the_environment_is_reported_too(fake, capsys, monkeypatch):
    monkeypatch.setenv("PFLOW_SCALE", "hueg")
    assert cli.main(["verify"]) == 2
    assert "valid scales: tiny, cpu, gpu" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["verify", "figures", "prepare"])
def test_chapter_without_a_module_is_one_line_and_exit_2(fake, capsys, command):
    assert cli.main([command, "nomod", "--scale", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no module" in err[0] and "nomod" in err[0]


def test_prepare_stores_into_cache_or_with_ship_into_shipped(fake, capsys):
    assert cli.main(["prepare", "fake", "--scale", "tiny"]) == 0
    assert len(list((fake.data / "cache" / "fake").glob("weights-*.pt"))) == 1
    assert not (fake.data / "shipped").exists()

    assert cli.main(["prepare", "fake", "--scale", "cpu", "--ship"]) == 0
    shipped = list((fake.data / "shipped" / "fake").glob("weights-*.pt"))
    assert len(shipped) == 1
    assert len(list((fake.data / "cache" / "fake").glob("weights-*.pt"))) == 1  # only tiny's
    assert cache.ENV_SHIP not in os.environ  # the switch is scoped to the command

    capsys.readouterr()
    assert cli.main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " fake " in line)
    assert row.split()[3] == "2"  # two artifacts, cache and shipped together


def test_cache_ship_switch_follows_the_environment(data_dir, monkeypatch):
    builds = []

    def build():
        builds.append(1)
        return {"x": 1}

    monkeypatch.delenv(cache.ENV_SHIP, raising=False)
    assert cache.cached("ch", "a", {"k": 1}, build) == ({"x": 1}, False)
    assert (data_dir / "cache" / "ch").is_dir() and not (data_dir / "shipped").exists()

    monkeypatch.setenv(cache.ENV_SHIP, "1")
    # already in the cache: shipping copies it, it does not build again
    assert cache.cached("ch", "a", {"k": 1}, build) == ({"x": 1}, True)
    assert len(builds) == 1
    shipped = list((data_dir / "shipped" / "ch").iterdir())
    assert sorted(p.suffix for p in shipped) == [".json", ".pt"]
    shutil.rmtree(data_dir / "cache")
    assert cache.cached("ch", "a", {"k": 1}, build) == ({"x": 1}, True)  # loads the copy
    assert len(builds) == 1

    assert cache.cached("ch", "b", {"k": 2}, build)[1] is False
    assert len(list((data_dir / "shipped" / "ch").glob("b-*.pt"))) == 1
    assert cache.cached("ch", "c", {"k": 3}, build, ship=False)[1] is False  # explicit wins
    assert len(list((data_dir / "cache" / "ch").glob("c-*.pt"))) == 1


def test_verify_start_here_at_tiny(data_dir, capsys, monkeypatch):
    if chapters.module("start_here") is None:
        pytest.skip("pflow_explore/chapters/start_here.py does not exist yet")
    monkeypatch.delenv("PFLOW_SCALE", raising=False)
    assert cli.main(["verify", "start_here", "--scale", "tiny"]) == 0, capsys.readouterr().out
    record = json.loads((data_dir / "cache" / "start_here" / "verify-tiny.json").read_text())
    assert record["n_claims"] >= 1 and record["n_holding"] == record["n_claims"]
