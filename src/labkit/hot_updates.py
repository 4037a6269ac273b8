"""Count how PostgreSQL carried out a statement's row updates: how many were HOT
(heap-only tuples: no index touched), and how many had to put the new row version on
another page.

The counts come from ``pg_stat_xact_user_tables`` (the counters of ``pg_stat_user_tables``
that this session has not yet reported), read before and after the statement in one
transaction, so that no other session and no statistics flush can change them. An update
is HOT when no indexed column changes and the new version fits on the row's page; an index
that holds the updated column, even as an ``INCLUDE`` column, rules it out:

>>> from labkit import data, db, hot_updates
>>> demo = data.blog_database("doctest_hot_updates", scale="tiny")
>>> engine = demo.engine()
>>> one_view = "UPDATE posts SET view_count = view_count + 1 WHERE mod(id, 20) = 0"
>>> plain = hot_updates.trial(engine, [], one_view, table="posts")
>>> covered = hot_updates.trial(
...     engine, ["CREATE INDEX ix_views ON posts (author_id) INCLUDE (view_count)"], one_view,
...     table="posts",
... )
>>> plain.updated, covered.updated, covered.hot
(100, 100, 0)
>>> plain.hot == plain.same_page and covered.same_page > 0   # room, yet not HOT
True
>>> engine.dispose(); db.drop_database("doctest_hot_updates")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["UpdateCounts", "counting_updates", "trial"]

_COUNTERS = """
SELECT coalesce(t.n_tup_upd, 0), coalesce(t.n_tup_hot_upd, 0),
       coalesce(t.n_tup_newpage_upd, 0), transaction_timestamp()
FROM (SELECT) AS one LEFT JOIN pg_stat_xact_user_tables t ON t.relid = %s::regclass
"""


@dataclass
class UpdateCounts:
    """Row updates of one table: ``updated`` in all, ``hot`` of them HOT, ``new_page`` of
    them with the new version on another page (``n_tup_newpage_upd``)."""

    updated: int = 0
    hot: int = 0
    new_page: int = 0

    @property
    def same_page(self) -> int:
        """Updates whose new version stayed on the row's page (HOT or not)."""
        return self.updated - self.new_page

    @property
    def hot_share(self) -> float:
        """HOT updates as a share of all updates (0.0 if there were none)."""
        return self.hot / self.updated if self.updated else 0.0


def _run(conn: Any, statement: str, params: Any = None):
    run = conn.exec_driver_sql if hasattr(conn, "exec_driver_sql") else conn.execute
    return run(statement, params)


def _read(conn: Any, table: str) -> tuple:
    return tuple(_run(conn, _COUNTERS, (table,)).fetchone())


@contextmanager
def counting_updates(conn: Any, table: str) -> Iterator[UpdateCounts]:
    """Count the updates of ``table`` that the block makes on ``conn`` (a SQLAlchemy or a
    psycopg connection). The block must run in one transaction with the counting: not in
    autocommit mode. The counts are filled in when the block ends.

    The session also reports its counts to ``pg_stat_user_tables`` as soon as that
    transaction ends (``pg_stat_force_next_flush()``), instead of up to seconds later."""
    if getattr(conn, "autocommit", False) is True:
        raise ValueError("counting_updates needs a transaction: conn is in autocommit mode")
    counts = UpdateCounts()
    *before, started = _read(conn, table)
    yield counts
    *after, still = _read(conn, table)
    _run(conn, "SELECT pg_stat_force_next_flush()")
    if still != started:
        raise ValueError("the block ended the transaction: the counts would be wrong")
    counts.updated, counts.hot, counts.new_page = (
        int(b - a) for a, b in zip(before, after, strict=True)
    )


def trial(
    engine: Any,
    ddl: Sequence[str],
    statement: str,
    params: Any = None,
    *,
    table: str,
) -> UpdateCounts:
    """Run ``ddl`` (e.g. create or drop an index), then ``statement``, in a transaction that
    is rolled back, and return how ``statement`` updated ``table``.

    The rolled-back row versions would take the room on their pages that the next trial's
    updates need, so ``VACUUM`` removes them afterwards (it removes rolled-back versions
    whatever other sessions do): every trial starts from the same free space."""
    from psycopg import sql
    from sqlalchemy import text

    with engine.connect() as conn:
        try:
            for command in ddl:
                conn.execute(text(command))
            with counting_updates(conn, table) as counts:
                conn.exec_driver_sql(statement, params)
        finally:
            conn.rollback()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        driver = conn.connection.driver_connection  # psycopg, to quote the identifier
        driver.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))
    return counts
