"""A JupyterHub on one machine, for a small class: start, stop, inspect, add students.

The kit is ``classroom/one-machine/`` (``jupyterhub_config.py``, and ``package.json`` with
its lock file pinning configurable-http-proxy 5.3.0). This module is its machinery; an
instructor runs it as root, from the course checkout::

    python -m labkit hub up [--port N]      # the hub and its proxy on 127.0.0.1 (idempotent)
    python -m labkit hub add-user ada       # a Unix user (home 0700) the hub lets in
    python -m labkit hub status             # what runs, which servers are up
    python -m labkit hub down               # stop the hub, every student's server, their services

How a student's server runs (what ``jupyterhub_config.py`` sets with this module):

- LocalProcessSpawner starts it as the student's own Unix user, through ``binder/start``
  (the same start path as Binder): that starts the student's own PostgreSQL and Redis, with
  data, ports and passwords in ``~/.labkit`` (mode 0700), exports ``DATABASE_URL`` and
  ``REDIS_URL``, then execs ``jupyterhub-singleuser``. The interpreter is
  :func:`labkit.course.sharedenv.shared_python`'s, first on ``PATH``: the course venv's own
  Python may be private to root.
- Before the first start (:meth:`SpawnHooks.pre_spawn`) the course's lessons and the student
  copies of the exercises are copied into the student's home, as the student; a file that
  is already there is never overwritten.
- When the server stops, culled or stopped (:meth:`SpawnHooks.post_stop`), the student's
  PostgreSQL and Redis stop too (``python -m labkit services down``, as the student):
  ``binder/start`` starts them as daemons, so they outlive the server otherwise.

The hub's own secrets (cookie secret, proxy token, service tokens) are generated once into
its private state folder (default ``/var/lib/labkit/hub``, mode 0700; ``LABKIT_HUB_DIR``),
never in the checkout.

>>> hub = Hub()                          # doctest: +SKIP
>>> hub.up().url                         # doctest: +SKIP
'http://127.0.0.1:8000/'

A hub that was never started says what to do; the course copy never overwrites:

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> print(Hub(folder / "hub").status().lines()[0])
hub        stopped    (the hub has no settings in .../hub: run `python -m labkit hub up` first)
>>> (folder / "course").mkdir(); _ = (folder / "course" / "a.ipynb").write_text("{}")
>>> [p.name for p in copy_missing(folder / "course", folder / "home")]
['a.ipynb']
>>> copy_missing(folder / "course", folder / "home")   # already there: left alone
[]
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from labkit import config
from labkit.errors import ServiceError
from labkit.supervisor import port_is_free, write_private

__all__ = [
    "DEFAULT_STATE_DIR",
    "Hub",
    "HubStatus",
    "KernelSession",
    "SpawnHooks",
    "copy_missing",
    "kit_dir",
    "state_dir",
]

DEFAULT_STATE_DIR = Path("/var/lib/labkit/hub")
#: What each student's home receives on first spawn (from the course checkout).
COURSE_FOLDERS = ("notebooks", "exercises")
#: The idle culler's defaults: a server idle for an hour is stopped (checked every 5 min).
CULL_TIMEOUT_S = 3600
CULL_EVERY_S = 300
#: How often the hub refreshes activity (from the proxy and from the servers).
ACTIVITY_INTERVAL_S = 300
#: A Unix user name the kit accepts: what `useradd` accepts by default, kept short.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST = "127.0.0.1"


def kit_dir() -> Path:
    """The kit's folder in the checkout: ``classroom/one-machine``."""
    return config.project_root() / "classroom" / "one-machine"


def state_dir() -> Path:
    """The hub's private state folder: ``LABKIT_HUB_DIR``, else ``/var/lib/labkit/hub``."""
    return Path(os.environ.get("LABKIT_HUB_DIR") or DEFAULT_STATE_DIR).resolve()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return sock.getsockname()[1]


def _check_user_name(name: str) -> str:
    if not _USER_NAME.match(name):
        raise ServiceError(
            f"{name!r} is not a usable Unix user name: use lowercase letters, digits, '-' or "
            "'_', starting with a letter or '_', at most 32 characters (e.g. `ada`)."
        )
    return name


# --------------------------------------------------------------------------- spawner hooks


def copy_missing(source: Path, target: Path) -> list[Path]:
    """Copy every file under ``source`` to ``target`` that is not there yet; return them.

    Never overwrites: a file (or link) already at the destination is the student's. Run it
    as the student, so that nothing is written where the student could not write."""
    copied = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            destination = target / relative / name
            if name.startswith(".") or os.path.lexists(destination):
                continue
            # O_EXCL: a file that appears meanwhile is not replaced either.
            with (
                open(Path(folder) / name, "rb") as src,
                open(
                    os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb"
                ) as dst,
            ):
                shutil.copyfileobj(src, dst)
            copied.append(destination)
    return copied


@dataclass
class SpawnHooks:
    """The kit's ``pre_spawn_hook`` and ``post_stop_hook`` (both run in the hub, as root).

    ``shared_bin`` is the ``bin/`` of a Python every user can run; ``course`` the checkout
    whose lessons and exercises are copied."""

    shared_bin: Path
    course: Path
    timeout_s: float = 120

    def user_env(self, name: str) -> dict[str, str]:
        home = pwd.getpwnam(name).pw_dir
        return {
            "HOME": home,
            "USER": name,
            "LOGNAME": name,
            "LANG": "C.UTF-8",
            "PATH": f"{self.shared_bin}:/usr/local/bin:/usr/bin:/bin",
            "LABKIT_STATE_DIR": f"{home}/.labkit",
        }

    def as_user(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` as the user ``name``, with a clean environment of ours (nothing of the
        hub's, in particular no secret, reaches it)."""
        env = [f"{k}={v}" for k, v in self.user_env(name).items()]
        return ["runuser", "-u", name, "--", "env", "-i", *env, *argv]

    async def _run(self, spawner, argv: list[str], what: str) -> str:
        name = spawner.user.name
        proc = await asyncio.create_subprocess_exec(
            *self.as_user(name, argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd="/",
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            raise ServiceError(
                f"{what} for {name} did not finish in {self.timeout_s:.0f} s"
            ) from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise ServiceError(f"{what} for {name} failed (exit {proc.returncode}): {text}")
        return text

    async def pre_spawn(self, spawner) -> None:
        """Make the home private, and copy the course into it (first spawn; later spawns
        copy only files that are new in the course, never over the student's)."""
        name = spawner.user.name
        entry = pwd.getpwnam(name)  # KeyError: the hub's spawner says "no such user"
        home = Path(entry.pw_dir)
        if not home.is_dir():
            raise ServiceError(
                f"{name} has no home folder {home}: run `python -m labkit hub add-user {name}`"
            )
        os.chmod(home, 0o700)
        copies = ", ".join(
            f"(Path({str(self.course / f)!r}), Path({str(home / f)!r}))" for f in COURSE_FOLDERS
        )
        code = (
            "from pathlib import Path; from labkit.course.hub import copy_missing; "
            f"print(sum(len(copy_missing(s, t)) for s, t in [{copies}]))"
        )
        copied = await self._run(spawner, ["python", "-c", code], "copying the course")
        spawner.log.info("labkit: %s file(s) of the course copied into %s", copied, home)

    async def post_stop(self, spawner) -> None:
        """Stop the student's PostgreSQL and Redis, which ``binder/start`` started."""
        name = spawner.user.name
        try:
            out = await self._run(
                spawner, ["python", "-m", "labkit", "services", "down"], "services down"
            )
        except ServiceError as exc:
            spawner.log.error("labkit: %s", exc)
            return
        spawner.log.info("labkit: %s's services: %s", name, " | ".join(out.splitlines()))


# --------------------------------------------------------------------------- the hub


@dataclass
class HubStatus:
    running: bool
    url: str
    pid: int | None = None
    version: str = ""
    servers: dict[str, str] = field(default_factory=dict)  # user -> "ready" / "pending" / ...
    detail: str = ""

    def lines(self) -> list[str]:
        state = "running" if self.running else "stopped"
        head = f"hub        {state:<8} {self.url}"
        if self.version:
            head += f"  v{self.version}"
        if self.pid:
            head += f"  pid {self.pid}"
        if self.detail:
            head += f"  ({self.detail})"
        rows = [head]
        rows += [f"  {user:<20} {server}" for user, server in sorted(self.servers.items())]
        return rows


class Hub:
    """One JupyterHub, its state in ``state`` (default :func:`state_dir`), its kit in
    ``kit`` (default :func:`kit_dir`). Must run as root (LocalProcessSpawner)."""

    def __init__(self, state: Path | str | None = None, kit: Path | str | None = None) -> None:
        self.state = Path(state).resolve() if state else state_dir()
        self.kit = Path(kit).resolve() if kit else kit_dir()

    # -- files
    @property
    def settings_file(self) -> Path:
        return self.state / "settings.json"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def users_file(self) -> Path:
        return self.state / "users.txt"

    @property
    def log_file(self) -> Path:
        return self.state / "jupyterhub.log"

    @property
    def pid_file(self) -> Path:
        return self.state / "jupyterhub.pid"

    @property
    def proxy_pid_file(self) -> Path:
        return self.state / "proxy.pid"

    def settings(self) -> dict:
        try:
            return json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            raise ServiceError(
                f"the hub has no settings in {self.state}: run `python -m labkit hub up` first"
            ) from None

    def secrets(self) -> dict:
        return json.loads(self.secrets_file.read_text())

    def users(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted({u for u in self.users_file.read_text().split() if u})
        return []

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.settings()['port']}/"

    # -- preparing
    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise ServiceError(
                "the hub runs each student's server as that student's Unix user, so it must "
                "run as root: `sudo .venv/bin/python -m labkit hub ...`"
            )

    def prepare(
        self,
        port: int | None = None,
        cull_timeout: int | None = None,
        cull_every: int | None = None,
        activity_interval: int | None = None,
    ) -> dict:
        """Create the private state folder, the secrets (once), the settings (ports kept
        across restarts unless given) and the proxy (``npm ci``, once). Returns settings."""
        self._require_root()
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        if not self.secrets_file.exists():
            write_private(
                self.secrets_file,
                json.dumps(
                    {
                        "proxy_auth_token": secrets.token_hex(32),
                        "admin_service_token": secrets.token_hex(32),
                        "culler_service_token": secrets.token_hex(32),
                    },
                    indent=2,
                ),
            )
        cookie = self.state / "cookie_secret"
        if not cookie.exists():
            write_private(cookie, secrets.token_hex(32) + "\n")
        try:
            settings = json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            settings = {}
        if port is not None:
            settings["port"] = port
        elif settings.get("port") and not port_is_free(settings["port"]):
            raise ServiceError(
                f"the hub's port {settings['port']} (kept from its last start, so that the "
                "students' address stays the same) is taken by another program: stop it, or "
                "choose another port with `python -m labkit hub up --port N`."
            )
        taken: set[int] = set()
        for key in ("port", "hub_port", "proxy_api_port"):
            while (
                not settings.get(key)
                or settings[key] in taken
                or (key != "port" and not port_is_free(settings[key]))
            ):
                settings[key] = _free_port()
            taken.add(settings[key])
        settings["cull_timeout"] = cull_timeout or settings.get("cull_timeout", CULL_TIMEOUT_S)
        settings["cull_every"] = cull_every or settings.get("cull_every", CULL_EVERY_S)
        settings["activity_interval"] = activity_interval or settings.get(
            "activity_interval", ACTIVITY_INTERVAL_S
        )
        settings["course"] = str(config.project_root())
        write_private(self.settings_file, json.dumps(settings, indent=2))
        self.users_file.touch(mode=0o600, exist_ok=True)
        self.ensure_proxy()
        return settings

    def proxy_command(self) -> Path:
        return self.kit / "node_modules" / ".bin" / "configurable-http-proxy"

    def ensure_proxy(self) -> Path:
        """configurable-http-proxy as the lock file pins it (``npm ci``, first use only)."""
        command = self.proxy_command()
        if command.exists():
            return command
        npm = shutil.which("npm")
        if npm is None:
            raise ServiceError(
                "the hub's proxy (configurable-http-proxy) comes from npm, and npm is not "
                "installed: install Node.js 20 or later with npm (e.g. `apt-get install "
                "nodejs npm`), then run `python -m labkit hub up` again."
            )
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=self.kit, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0 or not command.exists():
            raise ServiceError(
                f"`npm ci` in {self.kit} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        return command

    # -- life cycle
    def pid(self) -> int | None:
        """The hub's pid, if our hub runs (its command line names our config)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if "jupyterhub" in cmdline and str(self.kit) in cmdline else None

    def up(
        self,
        port: int | None = None,
        *,
        cull_timeout: int | None = None,
        cull_every: int | None = None,
        activity_interval: int | None = None,
        timeout_s: float = 90,
    ) -> HubStatus:
        """Start the hub (and, through it, the proxy and the idle culler); idempotent."""
        if self.pid() is not None:
            return self.status()
        self.prepare(port, cull_timeout, cull_every, activity_interval)
        from labkit.course.sharedenv import shared_python

        shared_python()  # built once, before the hub needs it (~15 s the first time)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env["LABKIT_HUB_DIR"] = str(self.state)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(self.log_file, "ab") as log:
            os.chmod(self.log_file, 0o600)
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.kit / "jupyterhub_config.py")],
                cwd=self.state, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(
                    f"the hub exited (code {proc.returncode}) while starting; its log "
                    f"{self.log_file} ends with:\n{_tail(self.log_file)}"
                )
            with contextlib.suppress(OSError, ValueError):
                self.api("GET", "/")
                if self.pid() is not None:
                    return self.status()
            time.sleep(0.3)
        proc.terminate()
        raise ServiceError(
            f"the hub did not answer within {timeout_s:.0f} s; see {self.log_file}:\n"
            f"{_tail(self.log_file)}"
        )

    def down(self, timeout_s: float = 90) -> bool:
        """Stop the hub: it stops every student's server (and so their services) and the
        proxy it started. Returns whether it was running."""
        pid = self.pid()
        if pid is None:
            self._stop_stray_proxy()
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                    break
            time.sleep(0.2)
        else:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        self._stop_stray_proxy()
        return True

    def _stop_stray_proxy(self) -> None:
        """A proxy left behind by a hub that was killed: ours only if its command line says
        so (the proxy's pid file is written by the hub)."""
        try:
            pid = int(self.proxy_pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if "configurable-http-proxy" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def status(self) -> HubStatus:
        """The hub's state and each user's server; starts nothing."""
        try:
            url = self.url
        except ServiceError as exc:
            return HubStatus(False, "", detail=str(exc))
        pid = self.pid()
        if pid is None:
            return HubStatus(False, url, detail=f"not running; log: {self.log_file}")
        try:
            version = self.api("GET", "/")["version"]
            users = self.api("GET", "/users")
        except (OSError, ValueError) as exc:
            return HubStatus(False, url, pid, detail=f"process runs but does not answer: {exc}")
        servers = {}
        for user in users:
            server = user.get("servers", {}).get("")
            if server is None:
                servers[user["name"]] = "no server"
            else:
                servers[user["name"]] = (
                    "ready" if server.get("ready") else (server.get("pending") or "starting")
                )
        return HubStatus(True, url, pid, version, servers)

    # -- REST API
    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """Call the hub's REST API (``/hub/api`` + ``path``) with the admin service's token;
        returns the decoded JSON (None for an empty reply). HTTP errors raise OSError."""
        token = token or self.secrets()["admin_service_token"]
        request = urllib.request.Request(
            f"http://{_HOST}:{self.settings()['port']}/hub/api{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise OSError(f"{method} /hub/api{path}: HTTP {exc.code} {detail}") from None
        return json.loads(text) if text else None

    # -- users
    def add_user(self, name: str, *, admin: bool = False, create_unix_user: bool = True) -> bool:
        """Create the Unix user (home 0700, no password: set one with `passwd`) if missing,
        and let the hub in (now if it runs, else at its next start); ``admin``: a hub admin
        too (the instructor: sees and stops every server). Returns whether the Unix user
        was created."""
        self._require_root()
        _check_user_name(name)
        created = False
        if create_unix_user:
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run(
                    ["useradd", "--create-home", "--shell", "/bin/bash", name],
                    check=True, capture_output=True,
                )  # fmt: skip
                created = True
        os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
        self.state.mkdir(parents=True, exist_ok=True)
        users = set(self.users()) | {name}
        write_private(self.users_file, "\n".join(sorted(users)) + "\n")
        if admin:
            settings = self.settings()
            settings["admin_users"] = sorted({*settings.get("admin_users", []), name})
            write_private(self.settings_file, json.dumps(settings, indent=2))
        if self.pid() is not None:
            with contextlib.suppress(OSError):  # 409: the hub already knows this user
                self.api("POST", f"/users/{name}")
            if admin:
                self.api("PATCH", f"/users/{name}", {"admin": True})
        return created

    def remove_user(self, name: str, *, delete_unix_user: bool = False) -> None:
        """Stop the user's server, remove them from the hub, end their processes; with
        ``delete_unix_user``, delete the Unix user and home too."""
        self._require_root()
        _check_user_name(name)
        if self.pid() is not None:
            with contextlib.suppress(OSError):
                self.stop_server(name)
            with contextlib.suppress(OSError):
                self.api("DELETE", f"/users/{name}")
        users = set(self.users()) - {name}
        if self.users_file.exists():
            write_private(self.users_file, "".join(f"{u}\n" for u in sorted(users)))
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            return
        if delete_unix_user:
            end_processes_of(uid)
            subprocess.run(["userdel", "--remove", name], capture_output=True)

    # -- servers
    def spawn(self, name: str, timeout_s: float = 180) -> float:
        """Start ``name``'s server through the REST API and wait until it is ready.
        Returns the seconds it took."""
        started = time.monotonic()
        self.api("POST", f"/users/{name}/server")
        self.wait_server(name, ready=True, timeout_s=timeout_s)
        return time.monotonic() - started

    def stop_server(self, name: str, timeout_s: float = 120) -> None:
        with contextlib.suppress(OSError):
            self.api("DELETE", f"/users/{name}/server")
        self.wait_server(name, ready=False, timeout_s=timeout_s)

    def server(self, name: str) -> dict | None:
        return self.api("GET", f"/users/{name}").get("servers", {}).get("")

    def wait_server(self, name: str, *, ready: bool, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            server = self.server(name)
            if ready and server and server.get("ready"):
                return
            if not ready and server is None:
                return
            if ready and server is None:
                raise ServiceError(
                    f"{name}'s server stopped while starting; see {self.log_file}:\n"
                    f"{_tail(self.log_file)}"
                )
            time.sleep(0.25)
        raise ServiceError(f"{name}'s server is not {'ready' if ready else 'stopped'} "
                           f"after {timeout_s:.0f} s; see {self.log_file}")  # fmt: skip

    def user_token(self, name: str, expires_in: int = 3600) -> str:
        """A token for ``name`` (their default scopes: their own server)."""
        reply = self.api(
            "POST", f"/users/{name}/tokens", {"expires_in": expires_in, "note": "labkit"}
        )
        return reply["token"]


def end_processes_of(uid: int, timeout_s: float = 10) -> list[int]:
    """SIGTERM, then SIGKILL, every process of ``uid`` (a test's or a removed student's).
    Returns their pids."""
    import psutil

    procs = [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
    ]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    return [p.pid for p in procs]


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --------------------------------------------------------------------------- a user's kernel


@dataclass
class CellRun:
    """One code cell run in a remote kernel: its outputs as nbformat output dicts."""

    source: str
    outputs: list[dict]
    status: str  # "ok" or "error" (the execute_reply's)

    @property
    def errors(self) -> list[dict]:
        return [o for o in self.outputs if o.get("output_type") == "error"]

    def text(self) -> str:
        parts = []
        for out in self.outputs:
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
            elif out.get("output_type") == "error":
                parts.append(f"{out.get('ename')}: {out.get('evalue')}")
        return "".join(parts)


class KernelSession:
    """A kernel in a user's server, reached through the hub's proxy with the user's token
    (the Jupyter Server REST API, then the kernel's websocket), as JupyterLab reaches it.

    >>> async with KernelSession(hub_url, "ada", token, "notebooks/x.ipynb") as kernel:  # doctest: +SKIP
    ...     run = await kernel.execute("1 + 1")
    """

    def __init__(
        self, hub_url: str, user: str, token: str, path: str, kernel: str = "python3",
        *, keep: bool = False,
    ) -> None:  # fmt: skip
        self.keep = keep  # leave the session (and its kernel) running on exit
        self.base = f"{hub_url.rstrip('/')}/user/{user}"
        self.token = token
        self.path = path
        self.kernel_name = kernel
        self.session_id: str | None = None
        self.kernel_id: str | None = None
        self.client_session = uuid.uuid4().hex
        self._ws = None

    def rest(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        request = urllib.request.Request(
            f"{self.base}/api{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise OSError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        return json.loads(text) if text else None

    def get_page(self, path: str) -> str:
        """A page of the user's server (e.g. ``/lab``), as their browser would get it."""
        request = urllib.request.Request(
            f"{self.base}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode(errors="replace")

    def notebook(self) -> dict:
        """The notebook at ``path`` in the user's server (their copy)."""
        return self.rest("GET", f"/contents/{self.path}?content=1&type=notebook")["content"]

    async def __aenter__(self) -> KernelSession:
        from websockets.asyncio.client import connect

        body = {"path": self.path, "type": "notebook", "name": Path(self.path).name,
                "kernel": {"name": self.kernel_name}}  # fmt: skip
        session = await asyncio.to_thread(self.rest, "POST", "/sessions", body)
        self.session_id, self.kernel_id = session["id"], session["kernel"]["id"]
        url = self.base.replace("http", "ws", 1) + (
            f"/api/kernels/{self.kernel_id}/channels?session_id={self.client_session}"
        )
        self._ws = await connect(
            url, additional_headers={"Authorization": f"token {self.token}"}, max_size=None,
            open_timeout=60, ping_interval=None,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self.session_id and not self.keep:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.rest, "DELETE", f"/sessions/{self.session_id}")

    async def execute(self, code: str, timeout_s: float = 600) -> CellRun:
        """Run ``code``; collect its outputs until the kernel is idle again."""
        msg_id = uuid.uuid4().hex
        message = {
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "labkit",
                       "session": self.client_session, "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }  # fmt: skip
        await self._ws.send(json.dumps(message))
        outputs: list[dict] = []
        status, idle = None, False
        deadline = time.monotonic() + timeout_s
        while status is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"a cell did not finish in {timeout_s:.0f} s:\n{code[:300]}")
            raw = await asyncio.wait_for(self._ws.recv(), left)
            if isinstance(raw, bytes):
                continue  # binary frames carry buffers, which we do not use
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "stream":
                outputs.append({"output_type": "stream", **content})
            elif kind in ("execute_result", "display_data"):
                outputs.append({"output_type": kind, **content})
            elif kind == "error":
                outputs.append({"output_type": "error", **content})
        return CellRun(code, outputs, status)

    async def run_notebook(
        self, notebook: dict | None = None, parameters: dict | None = None, timeout_s: float = 600
    ) -> list[CellRun]:
        """Every code cell of the notebook in order (``parameters`` injected after the cell
        tagged ``parameters``, as papermill does); stops at the first failing cell."""
        notebook = notebook or await asyncio.to_thread(self.notebook)
        runs = []
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            run = await self.execute(source, timeout_s)
            runs.append(run)
            if run.status != "ok":
                break
            if parameters and "parameters" in cell.get("metadata", {}).get("tags", []):
                injected = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
                runs.append(await self.execute(injected, timeout_s))
        return runs
