"""A streaming read replica of a PostgreSQL cluster of the lesson's own, and the measures
that reading from it needs: where each server stands (LSNs), how far the replica lags
under a write load, and how many statements each server answered.

:class:`ReplicaPair` starts a primary (:class:`~labkit.supervisor.PostgresServer`) and a
replica copied from it with ``pg_basebackup -R`` (:class:`~labkit.supervisor.PostgresReplica`),
both through the caller's :class:`~labkit.supervisor.Supervisor` on free loopback ports, the
replica streaming from a physical replication slot (``pg_basebackup -C -S``) that
:meth:`ReplicaPair.drop_slot` removes once the replica is gone. A server given by
``DATABASE_URL`` is never touched. The application logs in as an ordinary
role (``labkit_app``: not a superuser, owning nothing) that the pair creates with a password
generated at run time.

>>> import tempfile
>>> from labkit.supervisor import Supervisor
>>> with tempfile.TemporaryDirectory() as home, Supervisor(say=lambda m: None) as sup:
...     pair = ReplicaPair(home, supervisor=sup).up()
...     with psycopg.connect(pair.url("primary"), autocommit=True) as w:
...         _ = w.execute("CREATE TABLE notes (id int PRIMARY KEY)")
...         _ = w.execute("INSERT INTO notes VALUES (1)")
...         lsn = current_lsn(w)
...     with psycopg.connect(pair.url("replica", role="app"), autocommit=True) as r:
...         waited = wait_for_replay(r, lsn)
...         seen = r.execute("SELECT count(*) FROM notes").fetchone()[0]
...     status = replication_status(pair.url("primary"))
...     slots = slot_status(pair.url("primary"))
>>> seen, status[0]["state"], [s["slot_name"] for s in slots], pair.primary.pid() is None
(1, 'streaming', ['labkit_replica'], True)
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from labkit.errors import ServiceError
from labkit.supervisor import HOST, PostgresReplica, PostgresServer, Supervisor

__all__ = [
    "LagSample",
    "LagSampler",
    "ReplicaPair",
    "current_lsn",
    "plot_lag",
    "replication_status",
    "replay_paused",
    "reset_statements",
    "slot_status",
    "statement_calls",
    "wait_for_replay",
    "write_load",
]

APP_USER = "labkit_app"
SLOT = "labkit_replica"


class ReplicaPair:
    """A primary and one streaming replica, in ``home/primary`` and ``home/replica``.

    :meth:`up` starts both (idempotent), creates ``database`` on the primary with the
    ``pg_stat_statements`` extension, the ordinary LOGIN role ``app_user`` with privileges
    on the tables the superuser creates later (``ALTER DEFAULT PRIVILEGES``), and waits
    until the replica streams from the replication slot ``slot``. :meth:`down` stops the
    replica, drops its slot, then stops the primary.

    As root, ``home`` is made reachable (0755) by the unprivileged user PostgreSQL runs
    as; each cluster's own folder stays private to that user."""

    def __init__(
        self,
        home: Path | str,
        *,
        supervisor: Supervisor,
        database: str = "shop",
        app_user: str = APP_USER,
        slot: str = SLOT,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ValueError(
                f"database={database!r}: use lower-case letters, digits and underscores "
                "(at most 63 characters)"
            )
        if not app_user.startswith("labkit_"):
            raise ValueError(f"app_user={app_user!r}: the course's roles start with 'labkit_'")
        if not re.fullmatch(r"labkit_[a-z0-9_]{1,56}", slot):
            raise ValueError(
                f"slot={slot!r}: a slot name here is 'labkit_' and lower-case letters, digits "
                "or underscores (at most 63 characters)"
            )
        self.home = Path(home)
        self.supervisor = supervisor
        self.database = database
        self.app_user = app_user
        self.app_password = secrets.token_urlsafe(16)
        self.primary = PostgresServer(self.home / "primary", password=secrets.token_urlsafe(16))
        self.primary.name = "primary"
        self.slot = slot
        self.replica = PostgresReplica(self.home / "replica", self.primary, slot=slot)

    def url(self, server: str = "primary", *, role: str = "admin", driver: str = "") -> str:
        """The URL of ``server`` ("primary" or "replica") as ``role`` ("admin": the
        superuser, for set-up and monitoring only; "app": the application's ordinary role).
        ``driver="psycopg"`` gives SQLAlchemy's ``postgresql+psycopg://``."""
        target = {"primary": self.primary, "replica": self.replica}.get(server)
        if target is None:
            raise ValueError(f"server must be 'primary' or 'replica' (got {server!r})")
        if role == "admin":
            user, password = "postgres", self.primary.password or ""
        elif role == "app":
            user, password = self.app_user, self.app_password
        else:
            raise ValueError(f"role must be 'admin' or 'app' (got {role!r})")
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return (f"{scheme}://{user}:{quote(password, safe='')}@{HOST}:{target.port()}"
                f"/{self.database}")  # fmt: skip

    def up(self, timeout: float = 30) -> ReplicaPair:
        """Start the primary, prepare its database and role, start the replica, and wait
        (up to ``timeout`` s) until the primary lists it as streaming."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.primary.runner.as_user:  # as root, PostgreSQL's user must reach the clusters
            os.chmod(self.home, 0o755)  # (each cluster's own folder stays private)
        self.supervisor.up(self.primary)
        maintenance = self.primary.url()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (self.app_user,)
            ).fetchone()
            conn.execute(
                sql.SQL("{} {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD {}")
                .format(sql.SQL("ALTER ROLE" if exists else "CREATE ROLE"),
                        sql.Identifier(self.app_user), sql.Literal(self.app_password))
            )  # fmt: skip
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        with psycopg.connect(self.url("primary"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            app = sql.Identifier(self.app_user)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(app))
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, "
                        "UPDATE, DELETE ON TABLES TO {}").format(app)
            )  # fmt: skip
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT "
                        "ON SEQUENCES TO {}").format(app)
            )  # fmt: skip
        if not (self.replica.data / "PG_VERSION").exists():
            self.drop_slot()  # a slot left by a replica whose folder is gone: pg_basebackup -C
        self.supervisor.up(self.replica)  # would refuse to create it again
        deadline = time.monotonic() + timeout
        while not any(row["state"] == "streaming" for row in replication_status(maintenance)):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"the replica did not stream within {timeout:.0f} s: read "
                    f"{self.replica.log} for the reason."
                )
            time.sleep(0.05)
        return self

    def catch_up(self, timeout: float = 120) -> float:
        """Wait until the replica has replayed everything the primary has written so far;
        returns the seconds waited."""
        with psycopg.connect(self.url("primary"), autocommit=True) as w:
            lsn = current_lsn(w)
        with psycopg.connect(self.url("replica"), autocommit=True) as r:
            return wait_for_replay(r, lsn, timeout=timeout)

    def replay_behind(self, lsn: str | None = None) -> int:
        """Bytes of WAL up to ``lsn`` (default: the primary's position now) that the replica
        has not replayed yet, 0 if it has replayed past it — read from the replica itself
        (``pg_last_wal_replay_lsn()``), not from the primary's view, which only learns the
        replay position when the replica next reports it."""
        if lsn is None:
            with psycopg.connect(self.url("primary"), autocommit=True) as w:
                lsn = current_lsn(w)
        with psycopg.connect(self.url("replica"), autocommit=True) as r:
            return int(r.execute(
                "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()))::bigint",
                (lsn,),
            ).fetchone()[0])  # fmt: skip

    @contextmanager
    def synchronous(self, standby: str = "walreceiver", *, timeout: float = 10) -> Iterator[int]:
        """Name the replica a synchronous standby for the ``with`` block: ``ALTER SYSTEM SET
        synchronous_standby_names`` to ``standby`` (the ``application_name`` the replica
        connects with: ``walreceiver`` unless its ``primary_conninfo`` sets one) and reload;
        at the end, reset, reload, and wait until the replica is listed as async again.
        Inside, a transaction that sets ``synchronous_commit = remote_apply`` returns from
        its commit only once the replica has applied it (one that wrote no WAL never waits).

        A reload takes effect asynchronously (the checkpointer publishes the new list), so
        before the block runs, this proves the setting is in force: with replay paused, a
        ``remote_apply`` commit must be seen waiting (``wait_event = 'SyncRep'``) until the
        replay resumes, retried until one does. Yields the number of such probes."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", standby):
            raise ValueError(f"standby={standby!r}: give the replica's application_name")
        with psycopg.connect(self.url("primary"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                    sql.Literal(sql.Identifier(standby).as_string(conn)))
            )  # fmt: skip
            conn.execute("SELECT pg_reload_conf()")
        try:
            probes, deadline = 0, time.monotonic() + timeout
            while True:
                probes += 1
                if self._remote_apply_waits(timeout):
                    break
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"no remote_apply commit waited for {standby!r} within {timeout:g} s: "
                        "is it the replica's application_name (pg_stat_replication)?"
                    )
            yield probes
        finally:
            with psycopg.connect(self.url("primary"), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + timeout  # until the walsender has reloaded too
                while (
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_replication WHERE sync_state <> 'async'"
                    ).fetchone()[0]
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.01)

    def _remote_apply_waits(self, timeout: float) -> bool:
        """One probe: with replay paused, does a remote_apply commit wait (SyncRep)?"""
        started, done, errors = threading.Event(), threading.Event(), []
        pid: list[int] = []

        def commit() -> None:
            try:
                with psycopg.connect(self.url("primary")) as conn:
                    pid.append(conn.info.backend_pid)
                    conn.execute("SET LOCAL synchronous_commit = remote_apply")
                    # WAL written in the transaction: only then does its commit wait
                    conn.execute("SELECT pg_logical_emit_message(true, 'labkit', 'probe')")
                    started.set()
                    conn.commit()
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)
            finally:
                started.set()
                done.set()

        waited = False
        with replay_paused(self.url("replica")):
            thread = threading.Thread(target=commit, name="remote-apply-probe", daemon=True)
            thread.start()
            started.wait(timeout)
            with psycopg.connect(self.url("primary"), autocommit=True) as monitor:
                deadline = time.monotonic() + 1
                while not done.is_set() and time.monotonic() < deadline:
                    row = monitor.execute(
                        "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid[0],)
                    ).fetchone()
                    if row == ("SyncRep",):
                        waited = True
                        break
                    time.sleep(0.002)
        thread.join(timeout)  # replay resumed: the commit returns
        if errors:
            raise ServiceError(f"the remote_apply probe failed: {errors[0]}") from errors[0]
        return waited

    def drop_slot(self) -> bool:
        """Drop the replica's slot on the primary if it is there and no replica streams from
        it; True if dropped. A slot that nobody reads keeps WAL on the primary for ever."""
        if self.primary.pid() is None:
            return False
        with psycopg.connect(self.url("primary"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (self.slot,),
            ).fetchone()
        return row is not None

    def down(self) -> None:
        """Stop the replica, drop its slot, then stop the primary (their folders stay for
        the caller to remove)."""
        self.supervisor.down(self.replica)
        self.drop_slot()
        self.supervisor.down(self.primary)


# --------------------------------------------------------------------------- positions


def current_lsn(conn: psycopg.Connection) -> str:
    """The primary's WAL write position (``pg_current_wal_lsn()``). Read right after a
    commit, in the same session, it is at or past the end of that commit's record when the
    commit was synchronous (``synchronous_commit`` on, the default: the commit returned
    after flushing its record); after an asynchronous commit the record may still be in
    memory past it, and ``pg_current_wal_insert_lsn()`` is the safe position."""
    return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def wait_for_replay(
    conn: psycopg.Connection, lsn: str, *, timeout: float = 10, poll: float = 0.0005
) -> float:
    """Wait until the replica behind ``conn`` has replayed WAL up to ``lsn``
    (``pg_last_wal_replay_lsn() >= lsn``); returns the seconds waited.

    Raises ``TimeoutError`` after ``timeout`` s (is the replica streaming? see
    :func:`replication_status`) and ``ValueError`` on a server that is not a replica."""
    started = time.perf_counter()
    while True:
        caught_up = conn.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
        ).fetchone()[0]
        if caught_up is None:
            raise ValueError(
                "pg_last_wal_replay_lsn() is NULL: this connection is not to a replica. "
                "Pass a connection to the replica."
            )
        if caught_up:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(
                f"the replica has not replayed up to {lsn} after {timeout:g} s: check that "
                "it streams (pg_stat_replication on the primary)."
            )
        time.sleep(poll)


_STATUS = """
SELECT application_name, state, sync_state,
       sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS bytes_behind,
       extract(epoch FROM write_lag) * 1000 AS write_lag_ms,
       extract(epoch FROM flush_lag) * 1000 AS flush_lag_ms,
       extract(epoch FROM replay_lag) * 1000 AS replay_lag_ms
FROM pg_stat_replication
"""


_SLOTS = """
SELECT slot_name, slot_type, active, wal_status, restart_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS bytes_kept,
       safe_wal_size
FROM pg_replication_slots ORDER BY slot_name
"""


def slot_status(url: str) -> list[dict[str, Any]]:
    """``pg_replication_slots`` on the primary at ``url`` (a superuser URL), one dict per
    slot: ``restart_lsn`` (the oldest WAL the slot keeps), ``bytes_kept`` (WAL kept for it
    from there), ``wal_status`` ("reserved": within max_wal_size; "extended", "unreserved",
    "lost" as it falls further behind) and ``safe_wal_size`` (None when
    ``max_slot_wal_keep_size`` is -1: no limit, the slot may fill the disk)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(_SLOTS)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@contextmanager
def replay_paused(url: str, *, timeout: float = 10) -> Iterator[None]:
    """Pause WAL replay on the replica at ``url`` (a superuser URL) for the ``with`` block,
    then resume it (even if the block raises). The replica still receives and flushes WAL,
    but applies none of it: every commit made inside the block is invisible there until
    the block ends — a replica that is behind, for certain."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise ValueError("this server is not a replica: pass the replica's URL")
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            deadline = time.monotonic() + timeout
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replay did not pause within {timeout:.0f} s")
                time.sleep(0.001)
            yield
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")


def replication_status(url: str) -> list[dict[str, Any]]:
    """``pg_stat_replication`` on the primary at ``url`` (a superuser URL: other roles see
    no LSNs), one dict per replica, with ``bytes_behind`` (``pg_wal_lsn_diff`` of the
    primary's position and the replica's replay position) and the lags in milliseconds
    (None when the replica is idle and caught up)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(_STATUS)
        names = [c.name for c in cur.description]
        return [
            {k: (float(v) if k.endswith("_ms") and v is not None else v) for k, v in zip(names, row, strict=True)}
            for row in cur.fetchall()
        ]  # fmt: skip


# --------------------------------------------------------------------------- lag under load


@dataclass(frozen=True)
class LagSample:
    """One reading of ``pg_stat_replication``, begun ``t`` seconds after sampling began."""

    t: float
    bytes_behind: int
    write_lag_ms: float | None
    flush_lag_ms: float | None
    replay_lag_ms: float | None


@dataclass
class LagSampler:
    """Read the replica's lag on the primary every ``interval`` s in a background thread,
    while the ``with`` block runs (a write load, say); :attr:`samples` holds the readings.

    The lags come from ``pg_stat_replication``. Bytes behind too, unless ``replica_url`` is
    given: then they are the primary's position minus the replica's own
    ``pg_last_wal_replay_lsn()``, exact at every sample (the primary's ``replay_lsn`` is
    only as fresh as the replica's last report, which an idle replica sends every
    ``wal_receiver_status_interval``, 10 s).

    >>> with LagSampler(url) as sampler:            # doctest: +SKIP
    ...     write_load(app_url, transactions=200)
    >>> max(s.bytes_behind for s in sampler.samples)  # doctest: +SKIP
    """

    url: str
    interval: float = 0.02
    replica_url: str | None = None
    samples: list[LagSample] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be positive (got {self.interval})")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.perf_counter()

    def _run(self) -> None:
        try:
            with (
                psycopg.connect(self.url, autocommit=True) as conn,
                psycopg.connect(self.replica_url or self.url, autocommit=True) as replica,
            ):
                while True:
                    t = self.elapsed()  # when this reading began
                    row = conn.execute(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, "
                        "extract(epoch FROM write_lag) * 1000, extract(epoch FROM flush_lag) * 1000, "
                        "extract(epoch FROM replay_lag) * 1000, pg_current_wal_lsn()::text "
                        "FROM pg_stat_replication LIMIT 1"
                    ).fetchone()  # fmt: skip
                    if row is not None:
                        behind, *lags, position = row
                        if self.replica_url:
                            behind = replica.execute(
                                "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, "
                                "pg_last_wal_replay_lsn()))::bigint", (position,)
                            ).fetchone()[0]  # fmt: skip
                        self.samples.append(LagSample(
                            t, int(behind or 0),
                            *(None if v is None else float(v) for v in lags)))  # fmt: skip
                    if self._stop.wait(self.interval):
                        return
        except BaseException as exc:  # reported by __exit__, not lost in the thread
            self.error = exc

    def elapsed(self) -> float:
        """Seconds since the ``with`` block began: the time axis of the samples."""
        return time.perf_counter() - self._started

    def next_sample(self, timeout: float = 10) -> LagSample:
        """Wait for a reading that begins after this call (so after whatever the caller did
        before it) and return it."""
        now = self.elapsed()
        deadline = time.monotonic() + timeout
        while True:
            later = [s for s in list(self.samples) if s.t > now]
            if later:
                return later[0]
            if self.error is not None or self._thread is None or not self._thread.is_alive():
                raise ServiceError(f"the lag sampler is not running ({self.error})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no lag sample within {timeout:g} s")
            time.sleep(self.interval / 4)

    def __enter__(self) -> LagSampler:
        self._started = time.perf_counter()
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.error is not None:
            raise ServiceError(f"the lag sampler failed: {self.error}") from self.error

    def table(self):
        """The samples as a pandas DataFrame (one row per reading)."""
        import pandas as pd

        return pd.DataFrame([s.__dict__ for s in self.samples])


def write_load(
    url: str,
    *,
    table: str = "events",
    transactions: int = 100,
    rows_per_transaction: int = 500,
    progress: bool = True,
) -> dict[str, Any]:
    """Insert ``transactions`` batches of ``rows_per_transaction`` rows (~200 bytes of
    ``payload`` each) into ``table``, one commit per batch: a steady write load. The table
    must exist with a ``payload text`` column (its other columns with defaults). Returns
    rows, seconds, the WAL bytes written (measured on the primary) and ``last_lsn``, the
    primary's position after the last commit."""
    import sys

    from tqdm import tqdm  # plain text: a saved notebook shows the finished bar

    if transactions < 1 or rows_per_transaction < 1:
        raise ValueError("transactions and rows_per_transaction must be at least 1")
    name = sql.Identifier(table)
    with psycopg.connect(url, autocommit=True) as conn:
        first = current_lsn(conn)
        insert = sql.SQL(
            "INSERT INTO {} (payload) SELECT repeat(md5(g::text), 6) || g "
            "FROM generate_series(1, %s) AS g"
        ).format(name)
        started = time.perf_counter()
        for _ in tqdm(range(transactions), desc="write load", unit="txn", file=sys.stdout,
                      disable=not progress):  # fmt: skip
            conn.execute(insert, (rows_per_transaction,))
        seconds = time.perf_counter() - started
        last = current_lsn(conn)
        wal = conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (last, first)
        ).fetchone()[0]
    return {"rows": transactions * rows_per_transaction, "seconds": seconds,
            "wal_bytes": int(wal), "last_lsn": last}  # fmt: skip


def plot_lag(
    samples: list[LagSample],
    title: str = "Replica lag under a write load",
    marks: dict[str, float] | None = None,
):
    """Bytes behind (top) and write/flush/replay lag in ms (bottom) over time, one dot per
    sample; ``marks`` ({label: seconds}) draws labelled vertical lines (load ended, ...)."""
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("no samples to plot: run the load inside `with LagSampler(...)`")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    t = [s.t for s in samples]
    top.plot(t, [s.bytes_behind / 1024 for s in samples], ".-", color="tab:red")
    top.set_ylabel("replay behind (KiB)")
    top.set_title(title)
    for attr, label in (("write_lag_ms", "write"), ("flush_lag_ms", "flush"), ("replay_lag_ms", "replay")):  # fmt: skip
        bottom.plot(t, [getattr(s, attr) if getattr(s, attr) is not None else float("nan")
                        for s in samples], ".-", label=f"{label} lag")  # fmt: skip
    for i, (label, at) in enumerate((marks or {}).items()):
        for axis in (top, bottom):
            axis.axvline(at, color="grey", linestyle=":")
        top.annotate(label, (at, 0), xytext=(3, 5 + 12 * i), textcoords="offset points",
                     fontsize=8, color="grey")  # fmt: skip
    bottom.set_ylabel("lag (ms)")
    bottom.set_xlabel("seconds since sampling began")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- statements


def reset_statements(url: str) -> None:
    """Empty ``pg_stat_statements`` on the server at ``url`` (a primary or a replica)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def statement_calls(url: str, contains: str) -> int:
    """How many times the server at ``url`` ran statements whose normalized text contains
    ``contains`` (case-insensitive), from its own ``pg_stat_statements``: the server's count,
    independent of what the client believes it sent."""
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND strpos(lower(query), lower(%s)) > 0", (contains,)
        ).fetchone()[0])  # fmt: skip
