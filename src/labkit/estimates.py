"""Where the planner's row estimate for ``column = value`` comes from: the statistics that
``ANALYZE`` kept in ``pg_stats``, and the arithmetic PostgreSQL does with them.

A value in the column's list of most common values (MCV) is estimated at its sampled
frequency; any other value gets an equal share of what the list leaves over, spread across
the other distinct values. :func:`equality_estimate` redoes that arithmetic, so a lesson
can check a plan's ``rows=`` against it, and show why the estimate is what it is::

    >>> from labkit import data, db, estimates
    >>> demo = data.blog_database("doctest_estimates", scale="tiny")
    >>> with demo.connect(autocommit=True) as conn:
    ...     busiest = conn.execute(
    ...         "SELECT author_id FROM posts GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ...     ).fetchone()[0]
    ...     _ = conn.execute("ANALYZE posts")
    ...     guess = estimates.equality_estimate(conn, "posts", "author_id", busiest)
    >>> guess.in_mcv  # the busiest author is among the most common values
    True
    >>> engine = demo.engine()
    >>> plan = db.explain(engine, "SELECT id FROM posts WHERE author_id = %(a)s", {"a": busiest})
    >>> guess.rows == plan.estimated_rows  # the planner's own estimate
    True
    >>> engine.dispose()
    >>> db.drop_database("doctest_estimates")

Only single-column equality on a plain table is covered (no extended statistics, no
inheritance); the value is matched against the list by its text form, which is exact for
integers and text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["EqualityEstimate", "equality_estimate", "full_sample_target", "set_statistics"]


def _float4(value: float) -> float:
    """``value`` rounded to single precision, as PostgreSQL stores the frequencies."""
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclass(frozen=True)
class EqualityEstimate:
    """What ``pg_stats`` holds for one column and one value, and the estimate it gives.

    ``frequency`` is the value's share of the rows if it is in the MCV list (else None),
    ``mcv_total`` the share of all values in the list, ``n_distinct`` the estimated number
    of distinct values, ``table_rows`` the planner's row count for the table."""

    value: Any
    in_mcv: bool
    frequency: float | None
    mcv_count: int
    mcv_total: float
    least_common: float | None
    null_frac: float
    n_distinct: float
    table_rows: float

    @property
    def selectivity(self) -> float:
        """The share of rows the planner expects (``var_eq_const`` in PostgreSQL)."""
        if self.frequency is not None:
            return self.frequency
        share = min(max(1.0 - self.mcv_total - self.null_frac, 0.0), 1.0)
        others = self.n_distinct - self.mcv_count
        if others > 1:
            share /= others
        if self.least_common is not None and share > self.least_common:
            share = self.least_common  # never above the least common "most common" value
        return share

    @property
    def rows(self) -> int:
        """The estimated rows, rounded as the planner rounds them (at least 1)."""
        rows = self.selectivity * self.table_rows
        return 1 if rows <= 1 else round(rows)

    def formula(self) -> str:
        """The arithmetic, in words and numbers."""
        n = f"{self.table_rows:,.0f} rows"
        if self.frequency is not None:
            return f"{self.frequency:.6f} (its sampled frequency) × {n} = {self.rows:,}"
        return (
            f"(1 − {self.mcv_total:.4f} (the {self.mcv_count} common values)"
            f"{f' − {self.null_frac:.4f} (nulls)' if self.null_frac else ''}) "
            f"÷ ({self.n_distinct:,.0f} distinct − {self.mcv_count}) × {n} = {self.rows:,}"
        )


def equality_estimate(conn: Any, table: str, column: str, value: Any) -> EqualityEstimate:
    """The planner's estimate for ``table.column = value``, redone from ``pg_stats`` and
    ``pg_class`` (``conn``: a psycopg connection; ``table`` in the current schema)."""
    from psycopg import sql

    stats = conn.execute(
        "SELECT null_frac, n_distinct, most_common_vals::text::text[], most_common_freqs "
        "FROM pg_stats WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
        (table, column),
    ).fetchone()
    if stats is None:
        raise LookupError(f"no statistics for {table}.{column}: run ANALYZE {table} first")
    null_frac, n_distinct, values, freqs = stats
    values, freqs = values or [], [_float4(f) for f in freqs or []]
    reltuples, relpages, pages = conn.execute(
        "SELECT reltuples, relpages, pg_relation_size(oid) / current_setting('block_size')::int "
        "FROM pg_class WHERE oid = %s::regclass",
        (sql.Identifier(table).as_string(conn),),
    ).fetchone()
    # The planner scales reltuples to the table's current size (estimate_rel_size), and
    # reads a negative n_distinct as a share of the rows (get_variable_numdistinct).
    reltuples = _float4(reltuples)
    rows = round(reltuples / relpages * pages) if relpages > 0 else reltuples
    distinct = round(_float4(n_distinct) if n_distinct >= 0 else -_float4(n_distinct) * rows)
    position = values.index(str(value)) if str(value) in values else None
    total = 0.0
    for freq in freqs:
        total += freq
    return EqualityEstimate(
        value=value,
        in_mcv=position is not None,
        frequency=freqs[position] if position is not None else None,
        mcv_count=len(freqs),
        mcv_total=total,
        least_common=freqs[-1] if freqs else None,
        null_frac=_float4(null_frac),
        n_distinct=max(distinct, 1),
        table_rows=rows,
    )


def full_sample_target(rows: int) -> int:
    """The smallest statistics target whose ``ANALYZE`` sample is the whole table: ANALYZE
    reads ``300 × target`` rows, so statistics no longer change from one ANALYZE to the
    next (the target is capped at 10,000 by PostgreSQL).

    >>> full_sample_target(100_000), full_sample_target(50_000), full_sample_target(10)
    (334, 167, 1)
    """
    return max(1, -(-rows // 300))


def set_statistics(conn: Any, table: str, column: str, target: int) -> None:
    """``ALTER TABLE table ALTER COLUMN column SET STATISTICS target`` (names quoted; ``conn``:
    a psycopg connection). ``ANALYZE`` then samples ``300 × target`` rows and keeps up to
    ``target`` common values of the column; -1 goes back to ``default_statistics_target``.
    Nothing changes in ``pg_stats`` until the next ``ANALYZE``.

    >>> from labkit import data, db, estimates
    >>> demo = data.blog_database("doctest_set_statistics", scale="tiny")
    >>> with demo.connect(autocommit=True) as conn:
    ...     estimates.set_statistics(conn, "posts", "author_id", 5)
    ...     _ = conn.execute("ANALYZE posts")
    ...     guess = estimates.equality_estimate(conn, "posts", "author_id", 1)
    >>> guess.mcv_count  # five common values kept, no more
    5
    >>> db.drop_database("doctest_set_statistics")
    """
    from psycopg import sql

    conn.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STATISTICS {}").format(
            sql.Identifier(table), sql.Identifier(column), sql.Literal(int(target))
        )
    )
