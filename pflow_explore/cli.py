"""The ``pflow-explore`` command (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import course
from .scale import SCALES, check_scale


def _cmd_list(args: argparse.Namespace) -> int:
    present = course.notebooks()
    print(f"{'#':>2}  {'slug':<15} {'status':<9} idea")
    print(
        f"{0:>2}  {'start_here':<15} {'ready' if 'start_here' in present else 'missing':<9} "
        "the front door: what the course is, how to use it, a live PF-ODE demo"
    )
    for ch in course.OUTLINE:
        status = "ready" if ch.slug in present else "planned"
        print(f"{ch.number:>2}  {ch.slug:<15} {status:<9} {ch.idea}")
    return 0


TEMPLATE = "pflow"


def voila_template_root() -> Path:
    """The repository's ``share/jupyter`` folder holding the ``pflow`` Voila template."""
    return course.repo_root() / "share" / "jupyter"


def prepare_voila_template() -> None:
    """Put Font Awesome (bundled with Panel) where the pflow template serves it from.

    Voila's lab template loads it from a CDN; the course must work offline.
    """
    static = voila_template_root() / "voila" / "templates" / TEMPLATE / "static" / "fontawesome"
    if (static / "css" / "all.min.css").exists():
        return
    import panel

    bundled = Path(panel.__file__).parent / "dist" / "bundled" / "font-awesome"
    (static / "css").mkdir(parents=True, exist_ok=True)
    for name in ("all.min.css", "v4-shims.min.css"):
        shutil.copy2(bundled / "css" / name, static / "css" / name)
    shutil.copytree(bundled / "webfonts", static / "webfonts", dirs_exist_ok=True)


def voila_env(scale: str | None = None) -> dict[str, str]:
    """The environment for Voila: the template folder on JUPYTER_PATH, and the scale."""
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(voila_template_root()), env.get("JUPYTER_PATH", "")) if p
    )
    if scale:
        env["PFLOW_SCALE"] = scale
    return env


def voila_command(port: int, open_browser: bool = False) -> list[str]:
    """The Voila invocation: bound to 127.0.0.1, serving notebooks/ with the pflow template."""
    voila = shutil.which("voila", path=os.path.dirname(sys.executable)) or shutil.which("voila")
    if voila is None:
        raise SystemExit("voila is not installed in this environment; run `make serve`")
    prepare_voila_template()
    cmd = [voila, str(course.notebooks_dir()), f"--port={port}", "--Voila.ip=127.0.0.1"]
    cmd.append(f"--template={TEMPLATE}")
    # tracebacks stay in the server log: a dashboard shows messages, never stack traces
    cmd.append("--show_tracebacks=False")
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def _cmd_serve(args: argparse.Namespace) -> int:
    env = voila_env(args.scale)
    cmd = voila_command(args.port, args.open)
    print(
        f"serving {course.notebooks_dir()} on http://127.0.0.1:{args.port}/ "
        f"(scale {env.get('PFLOW_SCALE', 'cpu')}); Ctrl-C stops"
    )
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def _scale(value: str) -> str:
    try:
        return check_scale(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pflow-explore", description="A notebook-first course and lab on probability flows."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the chapters and whether each exists yet")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("serve", help="serve the chapters as Voila dashboards on 127.0.0.1")
    p.add_argument("--port", type=int, default=8866, help="port (default 8866)")
    p.add_argument("--scale", type=_scale, default=None, help=f"one of {', '.join(SCALES)}")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
