"""Integration tests against the real database, one rolled-back transaction per test.

:func:`rolled_back` is SQLAlchemy's recipe "joining a Session into an external
transaction": a connection begins a transaction, and a ``Session`` is bound to that
connection with ``join_transaction_mode="create_savepoint"``. The code under test may call
``session.commit()`` as often as it likes: each commit only releases a savepoint, and at the
end the outer transaction is rolled back, so the next test finds the database exactly as
this one did, without a TRUNCATE or a fresh database.

>>> from sqlalchemy import text
>>> from labkit import db
>>> demo = db.fresh_database("s15_doctest_testing")
>>> engine = demo.engine()
>>> with engine.begin() as conn:
...     _ = conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
>>> with rolled_back(engine) as session:
...     _ = session.execute(text("INSERT INTO t VALUES (1)"))
...     session.commit()                       # what the code under test does
...     session.execute(text("SELECT count(*) FROM t")).scalar_one()
1
>>> with engine.connect() as conn:             # the next test
...     conn.execute(text("SELECT count(*) FROM t")).scalar_one()
0
>>> engine.dispose(); db.drop_database("s15_doctest_testing")

What it does not isolate: tests that run **in parallel** on the same database still meet
at locks. Two tests that insert the same unique key each in their own rolled-back
transaction: the second waits for the first to end (the unique index's check), because
an uncommitted row holds its key. :func:`waits_for_another` shows it; give parallel
workers disjoint keys, or a database each (as this course's test workers do, by prefix).
Also outside the transaction: anything the code under test does on another connection
(a background thread's, a second engine's), sequences (``nextval`` is never rolled back)
and side effects beyond PostgreSQL (Redis keys, files, e-mails).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["rolled_back", "waits_for_another"]


@contextlib.contextmanager
def rolled_back(engine: Any, **session_options: Any) -> Iterator[Any]:
    """A ``Session`` whose work is rolled back when the block ends, whatever it commits
    (see the module's doc). ``session_options`` go to ``Session`` (not ``bind``)."""
    from sqlalchemy.orm import Session

    if "bind" in session_options:
        raise ValueError("rolled_back binds the session itself: pass the engine, not bind=")
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", **session_options)
    try:
        yield session
    finally:
        session.close()
        if transaction.is_active:
            transaction.rollback()
        connection.close()


def waits_for_another(engine: Any, statement: Any, params: Any = None, *, timeout: float = 10):
    """Run ``statement`` in two rolled-back sessions at once, as two parallel tests would:
    the second starts while the first holds its transaction open. True if the second was
    seen waiting on a lock (``pg_stat_activity``) until the first one ended."""
    from sqlalchemy import text

    started, finished = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with rolled_back(engine) as session:
                started.set()
                session.execute(statement, params)
        except Exception as exc:  # raised again below, in the caller's thread
            errors.append(exc)
        finally:
            finished.set()

    waited = False
    with rolled_back(engine) as session:
        session.execute(statement, params)
        worker = threading.Thread(target=second, daemon=True)
        worker.start()
        started.wait(timeout)
        # autocommit: inside a transaction pg_stat_activity would show one frozen snapshot
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            deadline = time.monotonic() + timeout
            while not finished.is_set() and time.monotonic() < deadline:
                waited = bool(watcher.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND pid <> pg_backend_pid()"
                )).scalar_one())  # fmt: skip
                if waited:
                    break
                time.sleep(0.02)
    worker.join(timeout)  # the first transaction is rolled back: the second goes on
    if errors:
        raise errors[0]
    return waited
