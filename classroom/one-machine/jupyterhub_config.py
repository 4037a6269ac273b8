"""JupyterHub on one machine, for a small class (jupyterhub 6.1, configurable-http-proxy 5.3).

Start it with `python -m labkit hub up` (as root, from the course checkout): that prepares
the private state folder this file reads (LABKIT_HUB_DIR, default /var/lib/labkit/hub:
ports, generated secrets, the list of students), installs the pinned proxy with `npm ci`,
and starts `jupyterhub -f` this file. Nothing secret is written in this file or anywhere in
the checkout. See grading/INSTRUCTORS.md, "A JupyterHub on one machine".

Each student is a local Unix user (`python -m labkit hub add-user NAME`) who logs in with
their Unix password (PAM). Their server runs as them, through binder/start (Binder's start
path): their own PostgreSQL and Redis, in ~/.labkit, then jupyterhub-singleuser.
"""

import json
import sys
from pathlib import Path

from labkit.course import hub
from labkit.course.sharedenv import shared_python

c = get_config()  # noqa: F821 -- JupyterHub provides it when it loads this file

state = hub.state_dir()
settings = json.loads((state / "settings.json").read_text())
tokens = json.loads((state / "secrets.json").read_text())
course = Path(settings["course"])
kit = Path(__file__).resolve().parent
# A Python every student can run (the course venv's may sit under root's private home).
shared = shared_python()

# -- network: everything on loopback. To open it to a class, put a TLS reverse proxy
# (nginx, Caddy) in front of this address; see the instructor guide.
c.JupyterHub.bind_url = f"http://127.0.0.1:{settings['port']}/"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [str(kit / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.auth_token = tokens["proxy_auth_token"]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

# -- the hub's own files, all in the private state folder
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.last_activity_interval = settings["activity_interval"]

# -- who may log in: local Unix users added with `hub add-user` (their Unix password)
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = set(hub.Hub(state).users())
c.Authenticator.allow_existing_users = True  # users added through the REST API stay allowed
c.Authenticator.admin_users = set(settings.get("admin_users", []))
c.Authenticator.blocked_users = {"root", "labkit"}

# -- each student's server: their Unix user, their PostgreSQL and Redis (binder/start)
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(course / "binder" / "start"), "jupyterhub-singleuser"]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks/00-start-here.ipynb"
# The course venv's Jupyter data and configuration (JupyterLab's server extension, lab
# extensions, kernelspec): an overlay Python from shared_python() has none of its own.
venv = Path(sys.prefix)
c.Spawner.environment = {
    "PATH": f"{shared.bin}:/usr/local/bin:/usr/bin:/bin",
    "JUPYTER_PATH": str(venv / "share" / "jupyter"),
    "JUPYTER_CONFIG_PATH": str(venv / "etc" / "jupyter"),
    "JUPYTERLAB_DIR": str(venv / "share" / "jupyter" / "lab"),
    "JUPYTERHUB_ACTIVITY_INTERVAL": str(settings["activity_interval"]),
}
# A first start initialises a PostgreSQL cluster: give it time on a busy machine.
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
hooks = hub.SpawnHooks(shared_bin=shared.bin, course=course)
c.Spawner.pre_spawn_hook = hooks.pre_spawn  # course files into the home, never overwritten
c.Spawner.post_stop_hook = hooks.post_stop  # their PostgreSQL and Redis stop with the server

# -- services: the idle culler (managed by the hub), and the admin token `hub` commands use
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "api_token": tokens["culler_service_token"],
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={settings['cull_timeout']}",
            f"--cull-every={settings['cull_every']}",
        ],  # fmt: skip
    },
    {"name": "labkit-admin", "api_token": tokens["admin_service_token"]},
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
    # `hub add-user`, `hub status` and the tests use this token (readable by root only):
    # the admin role, since only an admin may make another user an admin.
    {"name": "admin", "services": ["labkit-admin"]},
]
# The hub stops every server (and so every student's services) when it stops.
c.JupyterHub.cleanup_servers = True
