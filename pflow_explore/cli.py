"""The ``pflow-explore`` command (DESIGN.md, "Command line").

Chapters are found by convention, never listed here: a notebook ``notebooks/NN_slug.ipynb``
(``course.notebooks()``) and, for ``verify``, ``figures`` and ``prepare``, its module
``pflow_explore/chapters/<slug>.py`` (``chapters.module(slug)``). A bad chapter or scale
name is one ``error:`` line and exit status 2; a failing notebook or claim is exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import cache, chapters, course
from .claims import Claim, all_hold, to_json, to_text
from .scale import ENV_SCALE, SCALES, ScaleError, check_scale, environment, resolve_scale
from .voila_app import stop_server

ENV_TRACEBACK = "PFLOW_TRACEBACK"  # set to 1 to see the traceback behind an error line


class UsageError(Exception):
    """A bad chapter or scale name, or a chapter without a module: exit status 2."""


# -- chapters and scales, found by convention


def chapter_notebook(slug: str) -> Path:
    """The notebook of chapter ``slug``; UsageError listing the valid slugs otherwise."""
    found = course.notebooks()
    if slug in found:
        return found[slug]
    valid = ", ".join(found) or "(no notebook yet)"
    if course.chapter(slug) is not None:
        raise UsageError(
            f"chapter {slug!r} is planned but has no notebook yet; valid chapters: {valid}"
        )
    raise UsageError(f"unknown chapter {slug!r}; valid chapters: {valid}")


def chapter_module(slug: str, command: str) -> ModuleType:
    """The module of chapter ``slug``; UsageError when the chapter or its module is missing."""
    chapter_notebook(slug)
    mod = chapters.module(slug)
    if mod is None:
        raise UsageError(
            f"chapter {slug!r} has a notebook but no module pflow_explore/chapters/{slug}.py, "
            f"so `{command}` cannot run it"
        )
    return mod


def chapter_modules(slug: str | None, command: str) -> dict[str, ModuleType]:
    """``{slug: module}`` for one chapter, or for every notebook that has a module.

    When no chapter has a module yet, it says so on stderr (nothing for ``command`` to do)
    and returns {}."""
    if slug is not None:
        return {slug: chapter_module(slug, command)}
    found = {}
    for name in course.notebooks():
        mod = chapters.module(name)
        if mod is not None:
            found[name] = mod
    if not found:
        print(f"no chapter has a module yet: nothing to {command}", file=sys.stderr)
    return found


def scale_name(value: str | None) -> str:
    """``--scale``, else env PFLOW_SCALE, else cpu; UsageError listing the valid scales."""
    try:
        return resolve_scale(value)
    except ScaleError as err:
        raise UsageError(str(err)) from err


def _error_line(what: str, err: BaseException) -> str:
    """``error: <what>: <Type>: <first line of the message>``; the traceback on request."""
    if os.environ.get(ENV_TRACEBACK):
        traceback.print_exception(err)
    first = (str(err).strip().splitlines() or [""])[0]
    hint = "" if os.environ.get(ENV_TRACEBACK) else f" (set {ENV_TRACEBACK}=1 for the traceback)"
    return f"error: {what}: {type(err).__name__}: {first}{hint}"


# -- cache state and verify records


def cache_state(slug: str) -> tuple[int, int]:
    """(number of artifacts, their bytes: payloads and records) under cache/ and shipped/."""
    count = size = 0
    for root in (cache.cache_dir(), cache.shipped_dir()):
        for payload in sorted((root / slug).glob("*.pt")):
            count += 1
            size += payload.stat().st_size
            record = payload.with_suffix(".json")
            if record.exists():
                size += record.stat().st_size
    return count, size


def human_size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.2 kB``, ``3.4 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def verify_record_path(slug: str, scale: str) -> Path:
    """Where ``verify`` keeps its last result: ``<data>/cache/<slug>/verify-<scale>.json``."""
    return cache.cache_dir() / slug / f"verify-{scale}.json"


def write_verify_record(
    slug: str, scale: str, claims: Sequence[Claim], seconds: float, error: str | None = None
) -> dict[str, Any]:
    """Record one ``verify``: date, scale, claims counted and failing, or the error."""
    record = {
        "chapter": slug,
        "scale": scale,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(seconds, 2),
        "n_claims": len(claims),
        "n_holding": sum(c.holds for c in claims),
        "failing": [c.name for c in claims if not c.holds],
        "error": error,
    }
    path = verify_record_path(slug, scale)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    except OSError as err:  # a read-only data folder must not hide the verdict
        print(f"warning: could not write {path} ({err})", file=sys.stderr)
    return record


def last_verify(slug: str) -> dict[str, Any] | None:
    """The most recent verify record of ``slug`` over all scales (None if never verified)."""
    records = []
    for path in (cache.cache_dir() / slug).glob("verify-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "date" in record:
            records.append(record)
    return max(records, key=lambda r: str(r["date"]), default=None)


def verify_summary(record: dict[str, Any] | None) -> str:
    """``tiny 5/5 hold 2025-01-01 12:00`` (claims holding / claims), or ``-`` if never run."""
    if record is None:
        return "-"
    date = str(record.get("date", ""))[:16]
    if record.get("error"):
        return f"{record.get('scale')} ERROR {date}"
    held, total = record.get("n_holding"), record.get("n_claims")
    return f"{record.get('scale')} {held}/{total} {'hold' if held == total else 'FAIL'} {date}"


# -- commands


def _cmd_list(args: argparse.Namespace) -> int:
    present = course.notebooks()
    rows = [(0, "start_here", "the front door: what the course is, how to use it, a live demo")]
    rows += [(ch.number, ch.slug, ch.idea) for ch in course.OUTLINE]
    known = {slug for _, slug, _ in rows}
    rows += [
        (int(path.name[:2]), slug, "(not in the outline)")
        for slug, path in present.items()
        if slug not in known
    ]
    print(f"{'#':>2}  {'slug':<15} {'status':<8} {'cache':<17} {'last verify':<30} idea")
    for number, slug, idea in rows:
        if slug in present:
            status = "ready"
        else:
            status = "missing" if slug == "start_here" else "planned"
        count, size = cache_state(slug)
        cached = f"{count} ({human_size(size)})" if count else "-"
        verified = verify_summary(last_verify(slug))
        print(f"{number:>2}  {slug:<15} {status:<8} {cached:<17} {verified:<30} {idea}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    src = chapter_notebook(args.slug)
    scale = scale_name(args.scale)
    out_dir = Path(args.output) if args.output else course.repo_root() / "runs"
    out = out_dir / f"{src.stem}-{scale}.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    import papermill
    from papermill.exceptions import PapermillExecutionError

    print(f"running {src.name} at scale {scale} ...", flush=True)
    start = time.perf_counter()
    try:
        with environment(**{ENV_SCALE: scale}):
            papermill.execute_notebook(
                str(src),
                str(out),
                parameters={"SCALE": scale},
                kernel_name="python3",
                cwd=str(src.parent),
                progress_bar=False,
            )
    except PapermillExecutionError as err:
        seconds = time.perf_counter() - start
        evalue = (str(err.evalue).strip().splitlines() or [""])[0]
        print(
            f"error: {src.name} raised in cell [{err.exec_count}] after {seconds:.1f} s: "
            f"{err.ename}: {evalue}",
            file=sys.stderr,
        )
        print(f"executed copy, with the traceback: {out}", file=sys.stderr)
        return 1
    except Exception as err:  # the kernel died or would not start
        print(_error_line(f"{src.name} did not run", err), file=sys.stderr)
        if out.exists():
            print(f"executed copy: {out}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"{src.name} ran at scale {scale} in {seconds:.1f} s; executed copy: {out}")
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from . import figures_export

    mod = chapter_module(args.slug, "figures")
    scale = scale_name(args.scale)
    out_dir = (
        Path(args.out) if args.out else course.repo_root() / "figures" / f"{args.slug}-{scale}"
    )
    start = time.perf_counter()
    try:
        with environment(**{ENV_SCALE: scale}):
            figs = mod.figures(mod.run(mod.settings(scale)))
    except Exception as err:
        print(_error_line(f"{args.slug} run or figures", err), file=sys.stderr)
        return 1
    try:
        htmls, pngs = figures_export.export_figures(figs, out_dir, png=not args.no_png)
    except figures_export.PngUnavailable as err:
        print(
            f"error: PNGs skipped: {err}; the HTML files are in {out_dir} "
            "(pass --no-png to write HTML only)",
            file=sys.stderr,
        )
        return 1
    seconds = time.perf_counter() - start
    for path in [*htmls, *pngs]:
        print(path)
    print(f"{args.slug}: {len(htmls)} figure(s) at scale {scale} in {seconds:.1f} s, in {out_dir}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    scale = scale_name(args.scale)
    mods = chapter_modules(args.slug, "verify")
    if not mods:
        return 0
    ok = True
    report: dict[str, Any] = {}
    for slug, mod in mods.items():
        start = time.perf_counter()
        try:
            with environment(**{ENV_SCALE: scale}):
                found = list(mod.claims(mod.run(mod.settings(scale))))
        except Exception as err:
            line = _error_line(f"{slug} run or claims", err)
            print(line, file=sys.stderr)
            write_verify_record(slug, scale, [], time.perf_counter() - start, error=line)
            report[slug] = {"error": line, "claims": []}
            ok = False
            continue
        seconds = time.perf_counter() - start
        record = write_verify_record(slug, scale, found, seconds)
        ok = ok and all_hold(found)
        if args.json:
            report[slug] = {
                "all_hold": all_hold(found),
                "seconds": record["seconds"],
                "claims": json.loads(to_json(found)),
            }
        else:
            title = (
                f"{slug} at scale {scale}: {record['n_holding']}/{record['n_claims']} claims "
                f"hold ({seconds:.1f} s)"
            )
            print(to_text(found, title=title), end="\n\n")
    if args.json:
        print(json.dumps({"scale": scale, "all_hold": ok, "chapters": report}, indent=1))
    return 0 if ok else 1


def _cmd_prepare(args: argparse.Namespace) -> int:
    scale = scale_name(args.scale)
    mods = chapter_modules(args.slug, "prepare")
    if not mods:
        return 0
    env = {ENV_SCALE: scale, **({cache.ENV_SHIP: "1"} if args.ship else {})}
    where = cache.shipped_dir() if args.ship else cache.cache_dir()
    for slug, mod in mods.items():
        start = time.perf_counter()
        try:
            with environment(**env):
                mod.prepare(mod.settings(scale))
        except Exception as err:
            print(_error_line(f"{slug} prepare", err), file=sys.stderr)
            return 1
        count, size = cache_state(slug)
        print(
            f"{slug}: prepared at scale {scale} in {time.perf_counter() - start:.1f} s into "
            f"{where}; {count} artifact(s), {human_size(size)} in cache and shipped"
        )
    return 0


TEMPLATE = "pflow"
LOCALHOST = "127.0.0.1"
# The JupyterLab extensions Voila loads on a page: its widgets manager, ipywidgets' own
# (it provides @jupyter-widgets/base and the controls) and anywidget (LiveFigure is one).
# The others cost megabytes per page (jupyterlab-plotly is a second plotly.js) or fail in
# Voila with a console error (@pyviz/jupyterlab_pyviz).
EXTENSIONS = (
    "@voila-dashboards/widgets-manager8",
    "@jupyter-widgets/jupyterlab-manager",
    "anywidget",
    "pflow-explore",  # share/jupyter/labextensions/pflow-explore: patient widget renderers
)
REFILL_DELAY_S = 3.0  # benchmarks/dashboard_tti.py: a 1 s refill slows the visitor


def voila_template_root() -> Path:
    """The repository's ``share/jupyter`` folder holding the ``pflow`` Voila template."""
    return course.repo_root() / "share" / "jupyter"


def prepare_voila_template() -> None:
    """Put what the pflow template serves into its static folder: Font Awesome (bundled with
    Panel; Voila's lab template loads it from a CDN, and the course must work offline) and
    plotly's widget bundle, which every LiveFigure on a page loads once from there."""
    from pflow_explore.widgets.live_figure import install_bundle

    static = voila_template_root() / "voila" / "templates" / TEMPLATE / "static"
    install_bundle(static)
    fonts = static / "fontawesome"
    if (fonts / "css" / "all.min.css").exists():
        return
    import panel

    bundled = Path(panel.__file__).parent / "dist" / "bundled" / "font-awesome"
    (fonts / "css").mkdir(parents=True, exist_ok=True)
    for name in ("all.min.css", "v4-shims.min.css"):
        shutil.copy2(bundled / "css" / name, fonts / "css" / name)
    shutil.copytree(bundled / "webfonts", fonts / "webfonts", dirs_exist_ok=True)


def voila_env(scale: str | None = None, threads: int | None = 1) -> dict[str, str]:
    """The environment for Voila and its kernels: the template folder on JUPYTER_PATH, the
    scale, and ``threads`` CPU threads per kernel (None: leave OMP_NUM_THREADS as it is).

    One thread by default: a server runs many kernels at once (preheated spares, one per
    visitor); with torch's default of one OpenMP thread per core they spin against each
    other. Measured here: 8 visitors at once cost the kernels ~2.5x the CPU time with 2
    threads each than with 1 (benchmarks/results/dashboard_load.md).
    """
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(voila_template_root()), env.get("JUPYTER_PATH", "")) if p
    )
    if scale:
        env["PFLOW_SCALE"] = scale
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def voila_command(
    port: int,
    open_browser: bool = False,
    preheat: bool = True,
    pool_size: int = 1,
    ip: str = LOCALHOST,
    refill_delay: float = REFILL_DELAY_S,
) -> list[str]:
    """The Voila invocation: serving notebooks/ with the pflow template, on ``ip`` (127.0.0.1).

    ``preheat``: keep ``pool_size`` kernels per notebook that have already executed it, so
    a visitor gets a rendered page at once instead of waiting for the whole notebook to run
    (Voila's ``preheat_kernel``). Costs one idle kernel's memory per notebook and pool slot,
    and CPU at start while they warm. A used kernel is replaced ``refill_delay`` seconds
    later (Voila's ``fill_delay``, 1 s by default there): 3 s lets the visitor's page load
    before the replacement runs the notebook beside it (about 0.4 s sooner interactive on 2
    cores). For a class arriving at once, a pool as large as the class and a delay longer
    than the rush keep the replacements from competing with the visitors for the CPU.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    if refill_delay < 0:
        raise ValueError(f"refill_delay must be >= 0 seconds, got {refill_delay}")
    try:
        import voila  # noqa: F401
    except ImportError:
        raise SystemExit("voila is not installed in this environment; run `make serve`") from None
    prepare_voila_template()
    # Voila with compressed responses (voila_app.py); the arguments are voila's own
    cmd = [sys.executable, "-m", "pflow_explore.voila_app", str(course.notebooks_dir())]
    cmd += [f"--port={port}", f"--Voila.ip={ip}"]
    cmd.append(f"--template={TEMPLATE}")
    cmd.append(f"--VoilaConfiguration.extension_allowlist={json.dumps(list(EXTENSIONS))}")
    # tracebacks stay in the server log: a dashboard shows messages, never stack traces
    cmd.append("--show_tracebacks=False")
    if os.name == "posix":
        # kernels talk to the server over Unix sockets named after the kernel, not TCP ports:
        # a port jupyter_client picked as free can be taken before the kernel binds it (the
        # OS hands the same range out to outgoing connections), and with a dozen kernels
        # starting at once one died of "Address already in use"; Voila then served its
        # preheated page, which never started ("Running ..."; a fresh clone's make test).
        cmd.append("--KernelManager.transport=ipc")
    if preheat:
        # a preheated kernel inherits Voila's environment, PFLOW_SCALE included
        cmd += ["--preheat_kernel=True", f"--pool_size={pool_size}"]
        cmd.append(f"--VoilaKernelManager.fill_delay={refill_delay:g}")
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def landing_url(port: int, host: str = LOCALHOST) -> str:
    """Where the landing page (notebooks/index.ipynb) is served; ``/`` redirects there."""
    return f"http://{host}:{port}/voila/render/index.ipynb"


def _cmd_serve(args: argparse.Namespace) -> int:
    # an explicit --threads wins; else a thread count the user exported is kept; else 1
    threads = args.threads or (None if "OMP_NUM_THREADS" in os.environ else 1)
    env = voila_env(args.scale, threads=threads)
    cmd = voila_command(
        args.port,
        args.open,
        preheat=not args.no_preheat,
        pool_size=args.pool_size,
        ip=args.ip,
        refill_delay=args.refill_delay,
    )
    n = len(list(course.notebooks_dir().glob("*.ipynb")))
    warm = (
        f"preheating {args.pool_size} kernel(s) for each of {n} notebooks (--no-preheat: off)"
        if not args.no_preheat
        else "no preheated kernels: each page runs its notebook on load"
    )
    print(
        f"serving {course.notebooks_dir()} at scale {env.get('PFLOW_SCALE', 'cpu')}, "
        f"{env.get('OMP_NUM_THREADS', 'all')} CPU thread(s) per kernel; {warm}\n"
        f"landing page: {landing_url(args.port)}  (http://127.0.0.1:{args.port}/ leads there)"
    )
    if args.ip != LOCALHOST:
        print(
            f"WARNING: listening on {args.ip}: anyone who can reach this machine can open the "
            "dashboards (no login). Use only on a trusted network; see README, "
            '"Dashboards for a class".'
        )
    print("Ctrl-C stops")
    # Voila runs in a session of its own, so that a Ctrl-C reaches this process only, which
    # then stops Voila and every kernel it started (voila_app.stop_server), also on SIGTERM
    return _run_until_stopped(cmd, env, "Voila and its kernels", timeout_s=15)


def _run_until_stopped(cmd: list[str], env: dict[str, str], what: str, timeout_s: float) -> int:
    """Run a server ``cmd`` in a session of its own (so that a Ctrl-C reaches this process
    only) until it exits, or until SIGINT / SIGTERM here, which stop it and every process it
    started (voila_app.stop_server); returns its exit status (0 when stopped)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    except _Stopped as why:
        print(f"stopping {what} ({signal.Signals(why.signum).name})", flush=True)
        stop_server(proc, timeout_s=timeout_s)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _cmd_hub(args: argparse.Namespace) -> int:
    from pflow_explore import hub

    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        raise UsageError(
            "JupyterHub is not installed: `make hub` installs it (or pip install "
            "'pflow-explore[hub]')"
        ) from None
    password = os.environ.get(hub.ENV_PASSWORD) or hub.new_password()
    try:
        hub.check_password(password)
    except ValueError as err:
        raise UsageError(str(err)) from None
    hub.install_proxy()
    prepare_voila_template()
    state = Path(args.state).resolve()
    env = hub.hub_env(state, password, port=args.port, ip=args.ip, scale=args.scale)
    host = LOCALHOST if args.ip in (LOCALHOST, "0.0.0.0") else args.ip
    print(
        f"JupyterHub for a class at http://{host}:{args.port}/ (state and students' folders: "
        f"{state})\nlog in with any user name and the shared password: {password}\n"
        "each student gets a server of their own that opens on the dashboards; JupyterLab "
        "at /user/<name>/lab for the exercises. Ctrl-C stops the hub and every server."
    )
    if args.ip != LOCALHOST:
        print(
            f"WARNING: listening on {args.ip}. This hub is for a closed room: anyone with the "
            "password runs code as your user. See deploy/jupyterhub/README.md."
        )
    return _run_until_stopped(hub.hub_command(), env, "the hub and every server", timeout_s=30)


def _cmd_student(args: argparse.Namespace) -> int:
    from pflow_explore import student_release

    try:
        written = student_release.write_release(Path(args.out))
    except ImportError:
        raise UsageError("the release needs nbgrader: `make student` installs it") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"student release: {len(written)} notebooks in {Path(args.out).resolve()}")
    print("answers replaced by `raise NotImplementedError()`, hidden tests removed, no outputs")
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from pflow_explore import site

    scale = scale_name(args.scale)
    out = Path(args.out)
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or []) - set(site.page_notebooks()))
    if unknown:
        valid = ", ".join(site.page_notebooks())
        raise UsageError(f"unknown page(s) {', '.join(unknown)}; pages: {valid}")
    print(f"building the course site at scale {scale} into {out.resolve()} ...", flush=True)
    try:
        report = site.build(out, scale, only)
    except (ImportError, RuntimeError, OSError) as err:
        print(_error_line("the site was not built", err), file=sys.stderr)
        return 1
    for stem, seconds in report.execute_seconds.items():
        print(f"  {stem:<22} executed in {seconds:6.1f} s")
    print(
        f"site: {len(report.pages)} pages, {report.size_bytes / 1e6:.1f} MB, Sphinx "
        f"{report.sphinx_seconds:.1f} s; open {(out / 'html' / 'index.html').resolve()}"
    )
    return 0


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return n


def _seconds(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}")
    return x


def _scale(value: str) -> str:
    try:
        return check_scale(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


ALL_CHAPTERS = "chapter (default: all)"
SCALE_HELP = f"one of {', '.join(SCALES)} (default: env PFLOW_SCALE, else cpu)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per task, each with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="pflow-explore", description="A notebook-first course and lab on probability flows."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary}. {details}".strip())

    def chapter_command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        summary: str,
        details: str,
        *,
        every: bool = False,
        slug_help: str = "chapter, e.g. start_here",
        switch: tuple[str, str] | None = None,
    ) -> argparse.ArgumentParser:
        """A chapter command: SLUG, --scale and an optional on/off ``switch`` (flag, help);
        with ``every``, SLUG may be left out to mean every chapter that has a module."""
        if every:
            details = f"Without SLUG, every chapter that has a module. {details}"
        p = command(name, summary, details)
        if every:
            p.add_argument("slug", metavar="SLUG", nargs="?", default=None, help=ALL_CHAPTERS)
        else:
            p.add_argument("slug", metavar="SLUG", help=slug_help)
        p.add_argument("--scale", default=None, help=SCALE_HELP)
        if switch is not None:
            p.add_argument(switch[0], action="store_true", help=switch[1])
        p.set_defaults(func=func)
        return p

    p = command(
        "list",
        "every chapter: ready or planned, cached artifacts, last verify result",
        "Cache: artifacts under data/cache/<slug>/ and data/shipped/<slug>/. "
        "Last verify: the latest record written by `pflow-explore verify`.",
    )
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser(
        "serve",
        help="serve the chapters as Voila dashboards on 127.0.0.1",
        description="Serve notebooks/ as Voila dashboards; / leads to the landing page "
        "listing every chapter. Kernels are preheated: each notebook has already run in a "
        "waiting kernel, so a page shows at once.",
    )
    p.add_argument("--port", type=int, default=8866, help="port (default 8866)")
    p.add_argument("--scale", type=_scale, default=None, help=f"one of {', '.join(SCALES)}")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.add_argument(
        "--no-preheat",
        action="store_true",
        help="no preheated kernels: less memory, but each page runs its notebook on load",
    )
    p.add_argument(
        "--pool-size",
        type=_positive_int,
        default=1,
        help="preheated kernels per notebook (default 1; raise for many students at once)",
    )
    p.add_argument(
        "--refill-delay",
        type=_seconds,
        default=REFILL_DELAY_S,
        metavar="SECONDS",
        help=f"wait before replacing a used preheated kernel (default {REFILL_DELAY_S:g}; for "
        "a class arriving at once: --pool-size = class size, --refill-delay 60)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads per kernel (default 1, or env OMP_NUM_THREADS): many kernels share "
        "the cores",
    )
    p.add_argument(
        "--ip",
        default=LOCALHOST,
        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network, "
        "without login: see README)",
    )
    p.set_defaults(func=_cmd_serve)

    p = command(
        "student",
        "write the student release of the notebooks (nbgrader): no answers, no hidden tests",
        "The notebooks in notebooks/ are the instructor source; students get the release.",
    )
    p.add_argument(
        "--out", default="release", metavar="DIR", help="output folder (default: release/)"
    )
    p.set_defaults(func=_cmd_student)

    p = command(
        "site",
        "build the course as a static website: every chapter executed, no kernel needed",
        "The student release of each page runs at --scale (default cpu: the shipped "
        "artifacts) with widgets shown as static figures; Sphinx (myst-nb, the book theme) "
        "writes OUT/html. plotly.js and MathJax are served from the site itself.",
    )
    p.add_argument("--out", default="site", metavar="DIR", help="output folder (default: site/)")
    p.add_argument("--scale", type=_scale, default="cpu", help=f"one of {', '.join(SCALES)}")
    p.add_argument("--only", default=None, metavar="PAGES", help="comma-separated page names")
    p.set_defaults(func=_cmd_site)

    p = command(
        "hub",
        "JupyterHub for a class: a server per student, the dashboards as landing page",
        "For a closed room: log in with any name and one shared password (env "
        "PFLOW_HUB_PASSWORD, else a random one is printed); JupyterLab for the exercises at "
        "/user/<name>/lab. See deploy/jupyterhub/README.md.",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--scale", type=_scale, default=None, help=f"one of {', '.join(SCALES)}")
    p.add_argument("--ip", default=LOCALHOST, help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--state",
        default=str(course.repo_root() / ".hub"),
        metavar="DIR",
        help="the hub's database and the students' folders (default .hub/)",
    )
    p.set_defaults(func=_cmd_hub)

    p = chapter_command(
        "run",
        _cmd_run,
        "execute a chapter notebook headless (papermill) with SCALE injected",
        "Keeps the executed copy and prints the seconds taken; exit 1 if the notebook raised.",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="folder for the executed copy <stem>-<scale>.ipynb (default: runs/)",
    )

    p = chapter_command(
        "figures",
        _cmd_figures,
        "write a chapter's figures as offline HTML and PNG",
        "Runs the chapter module, then writes every figure as HTML with plotly.js inside "
        "(no CDN) and as PNG drawn by headless Chromium (env PFLOW_CHROMIUM, default "
        "/usr/bin/chromium). Exit 1 if PNGs were asked for and cannot be drawn.",
        slug_help="chapter with a module, e.g. start_here",
        switch=("--no-png", "write HTML only (no Chromium needed)"),
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output folder (default: figures/<slug>-<scale>/)",
    )

    chapter_command(
        "verify",
        _cmd_verify,
        "compute a chapter's claims and print the table; exit 1 if a claim fails",
        "Records the result in data/cache/<slug>/verify-<scale>.json, which `list` shows.",
        every=True,
        switch=("--json", "print JSON instead of tables"),
    )
    chapter_command(
        "prepare",
        _cmd_prepare,
        "build (train) and cache the artifacts a chapter needs",
        "Artifacts go to data/cache/, or with --ship to data/shipped/ (committed, so a fresh "
        "clone does not train).",
        every=True,
        switch=("--ship", "store into data/shipped/ (env PFLOW_SHIP)"),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    try:
        return int(args.func(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
