"""Before/after measurements for the lessons' practice runs: the statements and wall-clock
time of a block of code, a set of SQL queries measured (plan, time, rows), and the table
that compares them before and after a fix.

For example, the statements of a block, and a query before and after an index::

    >>> from labkit import data, db, practice
    >>> demo = data.blog_database("doctest_practice", scale="tiny")
    >>> engine = demo.engine()
    >>> NAME = "SELECT name FROM users WHERE id = %(id)s"
    >>> with practice.watch(engine) as run:  # statements and seconds of a block
    ...     names = [practice.run_sql(engine, NAME, {"id": i}) for i in (1, 2, 3)]
    >>> run.count
    3
    >>> query = {"by author": ("SELECT id FROM posts WHERE author_id = %(a)s", {"a": 7})}
    >>> before = practice.measure_queries(engine, query, repeat=3)
    >>> with engine.begin() as conn:
    ...     _ = conn.exec_driver_sql("CREATE INDEX ix_posts_author_id ON posts (author_id)")
    >>> after = practice.measure_queries(engine, query, repeat=3)
    >>> table = practice.before_after(before, after, fixes={"by author": "index on author_id"})
    >>> bool(table.loc["by author", "buffers after"] < table.loc["by author", "buffers before"])
    True
    >>> engine.dispose()
    >>> db.drop_database("doctest_practice")

Deterministic measures (statements, buffers) decide; wall-clock times are shown beside.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit import db, measure

__all__ = [
    "QueryRun",
    "Run",
    "Watch",
    "before_after",
    "measure_queries",
    "measure_run",
    "run_sql",
    "watch",
]


@dataclass
class Watch:
    """What :func:`watch` saw: the statements (a :class:`labkit.db.QueryRecorder`) and the
    wall-clock seconds of the block (set when the block ends)."""

    recorder: db.QueryRecorder
    seconds: float = 0.0

    @property
    def count(self) -> int:
        """Statements the block sent to the database."""
        return self.recorder.count


@contextlib.contextmanager
def watch(engine: Any) -> Iterator[Watch]:
    """Record the statements sent through ``engine`` and time the block (``db.record_queries``
    plus a stopwatch); the seconds are filled in even if the block raises."""
    with db.record_queries(engine) as recorder:
        seen = Watch(recorder)
        started = time.perf_counter()
        try:
            yield seen
        finally:
            seen.seconds = time.perf_counter() - started


@dataclass
class Run:
    """One callable measured: its result and statements on a first call, then its timing."""

    result: Any
    recorder: db.QueryRecorder
    time: measure.Timing

    @property
    def statements(self) -> int:
        return self.recorder.count


def measure_run(engine: Any, fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1) -> Run:
    """Call ``fn`` once with its statements recorded, then time it (``measure.timeit``).

    Within one call, a statement that ``fn`` runs more than five times on one connection (an
    N+1 loop's lazy loads) is prepared by psycopg, and from its eleventh run it may use a
    generic plan. The next call starts from zero if ``fn`` gave its connection back, or closed
    its Session, without a commit: the pool's reset (a ROLLBACK) clears psycopg's counts."""
    with db.record_queries(engine) as recorder:
        result = fn()
    return Run(result, recorder, measure.timeit(fn, repeat=repeat, warmup=warmup))


def run_sql(bind: Any, sql: str, params: Mapping[str, Any] | None = None) -> list:
    """Every row of one SQL statement (``%(name)s`` parameters), on its own connection."""
    with bind.connect() as conn:
        return conn.exec_driver_sql(sql, dict(params or {})).all()


@dataclass
class QueryRun:
    """One query measured: its plan (``EXPLAIN ANALYZE, BUFFERS``), timing and rows."""

    plan: db.Plan
    time: measure.Timing
    rows: list = field(repr=False)


def measure_queries(
    bind: Any, queries: Mapping[str, tuple[str, Mapping[str, Any]]], *, repeat: int = 5
) -> dict[str, QueryRun]:
    """Plan, median time over ``repeat`` runs and rows of each named ``(sql, params)``.

    Each run takes a connection from ``bind``'s pool and gives it back, and the pool's reset
    (a ROLLBACK) makes psycopg forget what it counted and prepared: no run is prepared, none
    switches to a generic plan, and each one is planned for its own parameters, like the plan
    shown (tests/test_plancache.py checks it)."""
    found = {}
    for name, (sql, params) in queries.items():
        timing = measure.timeit(
            lambda sql=sql, params=params: run_sql(bind, sql, params), repeat=repeat
        )
        found[name] = QueryRun(db.explain(bind, sql, params), timing, run_sql(bind, sql, params))
    return found


def before_after(
    before: Mapping[str, QueryRun],
    after: Mapping[str, QueryRun],
    fixes: Mapping[str, str],
    *,
    pages: Mapping[str, tuple[Run, Run]] | None = None,
):
    """The practice run's table: per query, its fix, the plan after, buffers, statements and
    median ms before and after, and the change in time (%).

    ``pages`` adds code paths measured with :func:`measure_run` (statements, not one
    plan): name → (before, after). Rows are not compared here: assert that in the lesson."""
    import pandas as pd

    rows = []
    for name, b in before.items():
        a = after[name]
        rows.append(
            {
                "query": name,
                "fix": fixes.get(name, ""),
                "plan after": " > ".join(a.plan.node_types),
                "buffers before": b.plan.buffers,
                "buffers after": a.plan.buffers,
                "statements before": 1,
                "statements after": 1,
                "ms before": b.time.median_ms,
                "ms after": a.time.median_ms,
            }
        )
    for name, (b, a) in (pages or {}).items():
        rows.append(
            {
                "query": name,
                "fix": fixes.get(name, ""),
                "plan after": "one statement"
                if a.statements == 1
                else f"{a.statements} statements",
                "buffers before": None,
                "buffers after": None,
                "statements before": b.statements,
                "statements after": a.statements,
                "ms before": b.time.median_ms,
                "ms after": a.time.median_ms,
            }
        )
    table = pd.DataFrame(rows).set_index("query")
    table["change (%)"] = (
        (table["ms after"] - table["ms before"]) / table["ms before"] * 100
    ).round(0)
    return table
