"""Changing indexes on a live table: watch a write wait for a DDL lock, build an index
without blocking writes, and find the invalid index a failed build leaves behind.

A transaction that created an index and is still open (the "try it, then roll back"
habit) holds a SHARE lock on the table: a write from another session waits for it.

>>> from labkit import data, db, online_ddl
>>> demo = data.blog_database("doctest_online_ddl", scale="tiny")
>>> watcher = demo.connect(autocommit=True)     # looks at the other sessions
>>> trial = demo.connect()                      # a transaction, left open
>>> _ = trial.execute("CREATE INDEX ix_try ON posts (created_at)")
>>> with online_ddl.Background(demo, "UPDATE posts SET view_count = 0 WHERE id = 1") as write:
...     waiting = online_ddl.wait_for_lock(watcher, write.pid)
...     held = online_ddl.relation_locks(watcher, "posts")
...     trial.rollback()                        # ends the transaction: the write goes on
>>> waiting["wait_event"], waiting["blocked_by"] == [trial.info.backend_pid]
('relation', True)
>>> sorted((lock["mode"], lock["granted"]) for lock in held)
[('RowExclusiveLock', False), ('ShareLock', True)]
>>> write.result().rowcount
1

``CREATE INDEX CONCURRENTLY`` runs outside a transaction; ``attempt`` reports a failure
instead of raising it. A failed concurrent build leaves an invalid index:

>>> ddl = demo.connect(autocommit=True)
>>> online_ddl.attempt(ddl, "CREATE INDEX CONCURRENTLY ix_ok ON posts (created_at)").ok
True
>>> open_writer = demo.connect()                # a write transaction, still open
>>> _ = open_writer.execute("UPDATE posts SET view_count = 1 WHERE id = 2")
>>> _ = ddl.execute("SET lock_timeout = '100ms'")
>>> failed = online_ddl.attempt(ddl, "CREATE INDEX CONCURRENTLY ix_bad ON posts (title)")
>>> failed.ok, failed.error
(False, 'LockNotAvailable: canceling statement due to lock timeout')
>>> [(index["index"], index["valid"]) for index in online_ddl.invalid_indexes(watcher, "posts")]
[('ix_bad', False)]
>>> open_writer.rollback()
>>> online_ddl.attempt(ddl, "DROP INDEX CONCURRENTLY ix_bad").ok
True
>>> for conn in (watcher, trial, ddl, open_writer):
...     conn.close()
>>> db.drop_database("doctest_online_ddl")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Background",
    "Outcome",
    "attempt",
    "build_progress",
    "invalid_indexes",
    "relation_locks",
    "wait_for_lock",
]


@dataclass(frozen=True)
class Outcome:
    """How a statement ended: ``ok``, the rows it changed, its duration, and the error
    (``"ClassName: message"``) if it failed."""

    ok: bool
    rowcount: int | None
    seconds: float
    error: str | None = None


def attempt(conn: Any, statement: Any, params: Any = None) -> Outcome:
    """Run ``statement`` on the psycopg connection ``conn`` and return its :class:`Outcome`;
    a database error is returned, not raised (in a transaction, roll it back yourself)."""
    import psycopg

    started = time.perf_counter()
    try:
        cursor = conn.execute(statement, params)
    except psycopg.Error as exc:
        message = str(exc).splitlines()[0] if str(exc) else ""
        return Outcome(
            False, None, time.perf_counter() - started, f"{type(exc).__name__}: {message}"
        )
    return Outcome(True, cursor.rowcount, time.perf_counter() - started)


class Background:
    """Run one statement in a thread, on a connection of its own (autocommit), so that the
    caller can watch it wait. ``with Background(database, sql) as job:`` starts it and
    sets ``job.pid`` (its backend's process id); leaving the block waits for it to end;
    ``job.result()`` is its :class:`Outcome`.

    ``lock_timeout`` bounds any lock wait (a statement left waiting fails instead of
    hanging the notebook); ``database`` is anything with ``connect(autocommit=True)``
    (a :class:`labkit.db.Database`)."""

    def __init__(
        self, database: Any, statement: Any, params: Any = None, *, lock_timeout: str = "10s"
    ) -> None:
        self._database = database
        self._statement = statement
        self._params = params
        self.lock_timeout = lock_timeout
        self.pid: int | None = None
        self._outcome: Outcome | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = self._database.connect(autocommit=True)
        except Exception as exc:  # reported by start()
            self._outcome = Outcome(False, None, 0.0, f"{type(exc).__name__}: {exc}")
            self._connected.set()
            return
        with conn:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (self.lock_timeout,))
            self.pid = conn.info.backend_pid
            self._connected.set()
            self._outcome = attempt(conn, self._statement, self._params)

    def start(self, timeout: float = 10.0) -> Background:
        """Start the thread; return once its connection is open (``pid`` is set)."""
        self._thread.start()
        if not self._connected.wait(timeout) or self.pid is None:
            raise RuntimeError(f"the background session did not connect: {self._outcome}")
        return self

    def result(self, timeout: float = 30.0) -> Outcome:
        """Wait for the statement to end (at most ``timeout`` seconds) and return its outcome."""
        self._thread.join(timeout)
        if self._thread.is_alive() or self._outcome is None:
            raise TimeoutError(f"the statement was still running after {timeout} s")
        return self._outcome

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self._thread.join(30.0)


_ACTIVITY = """
SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid) AS blocked_by,
       left(query, 80) AS query
FROM pg_stat_activity WHERE pid = %s
"""


def _autocommit(conn: Any) -> None:
    # pg_stat_activity is read once per transaction: polling needs a transaction per read.
    if not conn.autocommit:
        raise ValueError("use an autocommit connection to watch other sessions")


def wait_for_lock(
    conn: Any, pid: int, *, event: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll ``pg_stat_activity`` (on the autocommit connection ``conn``) until the backend
    ``pid`` waits for a lock (``event``: that kind of lock, e.g. ``'virtualxid'``); return
    what it shows then: ``state``, ``wait_event_type`` (``'Lock'``), ``wait_event`` (the
    kind of lock: ``'relation'``, ``'virtualxid'``...), ``blocked_by``
    (``pg_blocking_pids``) and ``query``. TimeoutError after ``timeout`` seconds."""
    _autocommit(conn)
    deadline = time.monotonic() + timeout
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        cursor = conn.execute(_ACTIVITY, (pid,))
        found = cursor.fetchone()
        if found is not None:
            row = dict(zip([c.name for c in cursor.description], found, strict=True))
            if row["wait_event_type"] == "Lock" and event in (None, row["wait_event"]):
                return row
        time.sleep(0.01)
    raise TimeoutError(f"backend {pid} was not seen waiting for a lock within {timeout} s: {row}")


def relation_locks(conn: Any, table: str) -> list[dict[str, Any]]:
    """The locks on ``table`` in ``pg_locks``, granted first: ``pid``, ``mode``, ``granted``,
    and what the session is doing (``state``, ``wait_event``, ``query``). Only this
    database's: copies of one template database share their tables' object ids."""
    cursor = conn.execute(
        """
        SELECT l.pid, l.mode, l.granted, a.state, a.wait_event, left(a.query, 60) AS query
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'relation' AND l.relation = %s::regclass
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY l.granted DESC, l.pid
        """,
        (table,),
    )
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def invalid_indexes(conn: Any, table: str) -> list[dict[str, Any]]:
    """The indexes of ``table`` that the planner may not use (``pg_index.indisvalid`` is
    false): ``index``, ``valid``, ``ready`` (true: every write already updates it) and
    ``bytes``. A failed ``CREATE INDEX CONCURRENTLY`` leaves one."""
    cursor = conn.execute(
        """
        SELECT c.relname AS index, i.indisvalid AS valid, i.indisready AS ready,
               pg_relation_size(c.oid) AS bytes
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %s::regclass AND NOT i.indisvalid
        ORDER BY c.relname
        """,
        (table,),
    )
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def build_progress(conn: Any, table: str) -> dict[str, Any] | None:
    """The index build running on ``table`` (``pg_stat_progress_create_index``): ``pid``,
    ``command``, ``phase``, ``lockers_total``, ``lockers_done``; None if there is none."""
    cursor = conn.execute(
        """
        SELECT pid, command, phase, lockers_total, lockers_done
        FROM pg_stat_progress_create_index
        WHERE relid = %s::regclass
          AND datid = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        (table,),
    )
    row = cursor.fetchone()
    return (
        None if row is None else dict(zip([c.name for c in cursor.description], row, strict=True))
    )
