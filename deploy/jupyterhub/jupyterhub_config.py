"""JupyterHub for a class on one machine: a server per student, the dashboards up front.

Start it with `pflow-explore hub` (or `make hub`), which sets the PFLOW_HUB_* variables
read below (ports, the state folder, the shared password) and prints the address and the
password. Read deploy/jupyterhub/README.md first: this configuration is for a closed room
(a shared password, every server runs as the hub's own user), not for the open internet.
"""

import os
import sys
from pathlib import Path

from jupyterhub.spawner import Spawner

from pflow_explore import hub, student_release

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)
env = os.environ
state = Path(env[hub.ENV_STATE])
homes = Path(env["PFLOW_HUB_HOMES"])
state.mkdir(parents=True, exist_ok=True)

# --- where the hub listens and keeps its state -------------------------------------------
c.JupyterHub.ip = env.get("PFLOW_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(env.get("PFLOW_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env.get("PFLOW_HUB_API_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.ConfigurableHTTPProxy.command = [env.get("PFLOW_HUB_PROXY", str(hub.proxy_command()))]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('PFLOW_HUB_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every student's server

# --- who may log in: one shared password, for a closed room ---------------------------------
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env[hub.ENV_PASSWORD]
c.Authenticator.allow_all = True  # any name with the password gets a server

# --- a server per student --------------------------------------------------------------------
# SimpleLocalProcessSpawner runs every server as the hub's user, each in its own folder;
# LocalProcessSpawner (one Unix account per student) or a container spawner isolate them.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(homes / "{username}")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = hub.singleuser_args()
c.Spawner.default_url = hub.DEFAULT_URL
c.Spawner.environment = hub.singleuser_env(env.get("PFLOW_SCALE"))
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# Local processes cannot be capped by JupyterHub (it passes MEM_LIMIT / CPU_LIMIT to the
# server, which only reports them); a container spawner enforces these.
c.Spawner.mem_limit = "2G"
c.Spawner.cpu_limit = 1.0


def copy_notebooks(spawner: Spawner) -> None:
    """Before a student's first start: their own copy of the notebooks, the student
    release (no answers, no hidden tests: pflow_explore.student_release), never
    overwritten later, since their exercises live there."""
    home = Path(spawner.home_dir_template.format(username=spawner.user.name))
    target = home / "notebooks"
    if not target.exists():
        student_release.write_release(target)
    spawner.notebook_dir = str(target)


c.Spawner.pre_spawn_hook = copy_notebooks

# --- idle servers are stopped (their files stay) --------------------------------------------
cull = env.get("PFLOW_HUB_CULL_AFTER_S", str(hub.CULL_AFTER_S))
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={cull}"],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
