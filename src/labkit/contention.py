"""Lock contention seen from the server: what a group of sessions waits for, sampled from
``pg_stat_activity`` while they run.

Two sessions update one row. The first holds its row lock until it commits; the second is
seen waiting for it (``Lock`` / ``transactionid``: the first one's transaction id):

>>> import threading
>>> from labkit import contention, db
>>> demo = db.fresh_database("doctest_contention")
>>> with demo.connect(autocommit=True) as conn:
...     _ = conn.execute("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)")
...     _ = conn.execute("INSERT INTO counter VALUES (1, 0)")
>>> def add_one():
...     with demo.connect(application_name="doctest-writers") as conn:
...         _ = conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
>>> first = demo.connect(application_name="doctest-writers")
>>> _ = first.execute("UPDATE counter SET n = n + 1 WHERE id = 1")   # not committed yet
>>> with contention.sample_waits(demo, "doctest-writers") as waits:
...     second = threading.Thread(target=add_one)
...     second.start()
...     seen = contention.wait_for_lock_wait(waits)   # until a sample shows the wait
...     first.commit()
...     second.join()
>>> seen, waits.seen[("Lock", "transactionid")] >= 1, waits.lock_waits >= 1
(True, True, True)
>>> first.close(); db.drop_database("doctest_contention")
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WaitSamples", "sample_waits", "wait_for_lock_wait"]

_ACTIVITY = (
    "SELECT wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = %s "
    "AND state = 'active' AND pid <> pg_backend_pid()"
)


@dataclass
class WaitSamples:
    """What the sampled sessions were doing. ``seen[(wait_event_type, wait_event)]`` counts
    session-samples: a session seen waiting in three samples counts three. ``(None, None)``
    is a session that was not waiting (running on a CPU)."""

    samples: int = 0
    seen: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def lock_waits(self) -> int:
        """Session-samples waiting for a heavyweight lock (``wait_event_type = 'Lock'``):
        a row, a transaction, a table."""
        with self._lock:
            return sum(n for (kind, _), n in self.seen.items() if kind == "Lock")

    def table(self):
        """A DataFrame: one row per wait event, the most seen first."""
        import pandas as pd

        with self._lock:
            rows = [
                {"wait_event_type": kind or "(not waiting)", "wait_event": event or "",
                 "session-samples": n}
                for (kind, event), n in self.seen.most_common()
            ]  # fmt: skip
        return pd.DataFrame(rows, columns=["wait_event_type", "wait_event", "session-samples"])

    def _add(self, rows: list[tuple[Any, Any]]) -> None:
        with self._lock:
            self.samples += 1
            self.seen.update(tuple(row) for row in rows)


@contextlib.contextmanager
def sample_waits(
    database: Any, application_name: str, *, interval: float = 0.005
) -> Iterator[WaitSamples]:
    """Sample the wait events of ``database``'s active sessions named ``application_name``
    (set it when they connect) every ``interval`` seconds, from a thread with its own
    connection, until the block ends; one last sample is taken then. ``database`` is
    anything with a psycopg ``connect(**kwargs)`` (a :class:`labkit.db.Database`)."""
    samples = WaitSamples()
    stop = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []

    def sample() -> None:
        try:
            with database.connect(autocommit=True) as conn:
                ready.set()
                while True:
                    last = stop.is_set()
                    samples._add(conn.execute(_ACTIVITY, (application_name,)).fetchall())
                    if last:
                        return
                    time.sleep(interval)
        except BaseException as exc:  # raised again in the caller's thread
            errors.append(exc)
            ready.set()

    sampler = threading.Thread(target=sample, name="pg_stat_activity sampler", daemon=True)
    sampler.start()
    ready.wait(30)
    try:
        yield samples
    finally:
        stop.set()
        sampler.join(30)
    if errors:
        raise errors[0]


def wait_for_lock_wait(samples: WaitSamples, *, timeout: float = 10.0) -> bool:
    """Wait until ``samples`` holds a lock wait (True), or ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while samples.lock_waits == 0:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True
