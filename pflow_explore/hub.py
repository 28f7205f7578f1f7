"""A class on one machine: JupyterHub with a server per student and the dashboards up front.

`pflow-explore hub` (and `make hub`) runs JupyterHub with deploy/jupyterhub/jupyterhub_config.py:
one single-user Jupyter server per student (JupyterLab for the exercises, the Voila server
extension for the dashboards, the landing page as the default URL), a shared password for a
closed room, idle servers culled, one read-only artifact folder for everybody. This module
holds what that configuration and the command need: where things are, the environment a
student's server gets, and the jupyterhub command line. It imports no JupyterHub code, so
the package works without it; the hub itself is JupyterHub's (``pip install jupyterhub``),
the proxy is configurable-http-proxy from npm (:func:`install_proxy`).

Not for the open internet: anybody who knows the shared password gets a server that runs
code as the hub's own user (SimpleLocalProcessSpawner). For a department server use a real
authenticator and spawner (docs in deploy/jupyterhub/README.md); for a cluster, Zero to
JupyterHub with deploy/jupyterhub/z2jh-values.yaml.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from pflow_explore import cache, course

PROXY_VERSION = "5.3.0"  # configurable-http-proxy, from the npm registry
DEFAULT_URL = "/voila/render/index.ipynb"  # a student's server opens on the landing page
CULL_AFTER_S = 3600  # an idle server is stopped after an hour (its files stay)
MIN_PASSWORD = 8  # JupyterHub's SharedPasswordAuthenticator refuses shorter ones
ENV_PASSWORD = "PFLOW_HUB_PASSWORD"
ENV_STATE = "PFLOW_HUB_STATE"


def config_file() -> Path:
    return course.repo_root() / "deploy" / "jupyterhub" / "jupyterhub_config.py"


def proxy_dir() -> Path:
    """Where configurable-http-proxy is installed: inside the virtual environment."""
    return Path(sys.prefix) / "hub-proxy"


def proxy_command() -> Path:
    return proxy_dir() / "node_modules" / ".bin" / "configurable-http-proxy"


def install_proxy() -> Path:
    """configurable-http-proxy from the npm registry into :func:`proxy_dir` (once)."""
    if proxy_command().exists():
        return proxy_command()
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "JupyterHub needs configurable-http-proxy, installed with npm, and npm was not "
            "found: install Node.js (Debian: apt-get install nodejs npm) and run again"
        )
    args = [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(proxy_dir())]
    subprocess.run([*args, f"configurable-http-proxy@{PROXY_VERSION}"], check=True)
    return proxy_command()


def singleuser_env(scale: str | None, data: Path | None = None) -> dict[str, str]:
    """What every student's server (and its kernels) gets: the pflow template and the
    course's front-end extension on JUPYTER_PATH, the shared artifact folder (PFLOW_DATA;
    read-only is fine: a chapter that cannot write its cache recomputes), the scale, and one
    CPU thread per kernel (a class shares the cores)."""
    from pflow_explore import cli

    env = {
        "JUPYTER_PATH": str(cli.voila_template_root()),
        cache.ENV_DATA: str(data or cache.data_dir()),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PATH": os.environ.get("PATH", ""),
    }
    if scale:
        env["PFLOW_SCALE"] = scale
    return env


def singleuser_args() -> list[str]:
    """Options of each student's server: Voila's server extension renders with the pflow
    template and loads only the extensions the dashboards need (as `serve` does)."""
    from pflow_explore import cli

    args = [
        f"--VoilaConfiguration.template={cli.TEMPLATE}",
        f"--VoilaConfiguration.extension_allowlist={json.dumps(list(cli.EXTENSIONS))}",
        "--VoilaConfiguration.show_tracebacks=False",
    ]
    # Jupyter refuses to run as root unless told (containers and CI often are root)
    return args + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])


def new_password() -> str:
    """A random shared password for a session (printed once by `pflow-explore hub`)."""
    return secrets.token_urlsafe(9)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(
            f"the shared password must have at least {MIN_PASSWORD} characters "
            f"(got {len(password)}); set {ENV_PASSWORD} or leave it unset for a random one"
        )
    return password


def hub_env(
    state: Path,
    password: str,
    *,
    port: int = 8000,
    ip: str = "127.0.0.1",
    scale: str | None = None,
    hub_port: int = 8081,
    proxy_api_port: int = 8001,
    homes: Path | None = None,
    cull_after_s: int = CULL_AFTER_S,
) -> dict[str, str]:
    """The environment jupyterhub_config.py reads (every setting of a session in one place:
    ports, where the hub keeps its database and the students' folders, the password)."""
    env = dict(os.environ)
    env.update(
        {
            ENV_STATE: str(state),
            ENV_PASSWORD: check_password(password),
            "PFLOW_HUB_IP": ip,
            "PFLOW_HUB_PORT": str(port),
            "PFLOW_HUB_API_PORT": str(hub_port),
            "PFLOW_HUB_PROXY_API_PORT": str(proxy_api_port),
            "PFLOW_HUB_HOMES": str(homes or state / "homes"),
            "PFLOW_HUB_CULL_AFTER_S": str(cull_after_s),
            "PFLOW_HUB_PROXY": str(proxy_command()),
        }
    )
    if scale:
        env["PFLOW_SCALE"] = scale
    return env


def hub_command() -> list[str]:
    """The jupyterhub command line (all settings come from :func:`hub_env`)."""
    return [sys.executable, "-m", "jupyterhub", "-f", str(config_file())]
