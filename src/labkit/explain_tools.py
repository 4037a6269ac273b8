"""Comparing query plans: try an index without keeping it, read the plan details the
lessons tabulate, and show many plans side by side (as a table, or in a viewer).

For example, an index tried inside a transaction that is rolled back::

    >>> from sqlalchemy import select
    >>> from labkit import data, db, explain_tools
    >>> from labkit.blog import Post
    >>> demo = data.blog_database("doctest_explain_tools", scale="tiny")
    >>> engine = demo.engine()
    >>> by_author = select(Post.id, Post.title).where(Post.author_id == 7)
    >>> plans = explain_tools.trial_plans(
    ...     engine, "CREATE INDEX ix_try ON posts (author_id)", {"by author": by_author}
    ... )
    >>> plans["by author"].uses_index("ix_try")  # while the index existed
    True
    >>> db.explain(engine, by_author).uses_index("ix_try")  # it is gone afterwards
    False
    >>> list(explain_tools.plan_table(plans).columns)
    ['plan', 'indexes', 'actual rows', 'buffers']
    >>> explain_tools.heap_fetches(plans["by author"])  # no index-only scan here
    0
    >>> engine.dispose()
    >>> db.drop_database("doctest_explain_tools")

Each function works on :class:`labkit.db.Plan` objects (``db.explain``'s result).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from labkit.db import Plan, explain

__all__ = [
    "SUMMARY_COLUMNS",
    "heap_fetches",
    "index_searches",
    "plan_summary",
    "plan_table",
    "plan_viewer",
    "trial_plans",
]

#: The columns :func:`plan_summary` returns, in the order :func:`plan_table` shows them.
SUMMARY_COLUMNS = (
    "plan",
    "indexes",
    "estimated rows",
    "actual rows",
    "buffers",
    "index searches",
    "heap fetches",
)


def trial_plans(
    engine: Any, ddl: str | Sequence[str], queries: Mapping[str, Any]
) -> dict[str, Plan]:
    """The plan of each of ``queries`` after ``ddl`` ran — in a transaction that is then
    rolled back, so the database is left exactly as it was.

    PostgreSQL's DDL is transactional: an index created (or dropped) inside a transaction
    is seen by the queries of that transaction only. ``queries`` maps a name to a
    SQLAlchemy statement, SQL text, or a ``(sql, params)`` pair; ``ddl`` is one statement
    or several, run in order.

    The DDL's locks are held until the rollback: a ``CREATE INDEX`` blocks every write to
    its table meanwhile. Use it on a copy, never on a table an application is writing
    (:mod:`labkit.online_ddl` shows the wait)."""
    from sqlalchemy import text

    statements = [ddl] if isinstance(ddl, str) else list(ddl)
    with engine.connect() as conn:
        try:
            for statement in statements:
                conn.execute(text(statement))
            return {
                name: explain(conn, *query) if isinstance(query, tuple) else explain(conn, query)
                for name, query in queries.items()
            }
        finally:
            conn.rollback()


def heap_fetches(plan: Plan) -> int:
    """Rows an index-only scan had to check in the table (its pages were not all-visible)."""
    return sum(int(node.get("Heap Fetches", 0)) for node in plan.nodes)


def index_searches(plan: Plan) -> int:
    """Descents into an index (PostgreSQL 18 counts them; a skip scan makes several)."""
    return sum(int(node.get("Index Searches", 0)) for node in plan.nodes)


def plan_summary(plan: Plan) -> dict[str, Any]:
    """One plan in a row: node types, indexes, estimated and actual rows, buffers, searches."""
    return {
        "plan": " > ".join(plan.node_types),
        "indexes": ", ".join(plan.index_names),
        "estimated rows": plan.estimated_rows,
        "actual rows": plan.actual_rows,
        "buffers": plan.buffers,
        "index searches": index_searches(plan),
        "heap fetches": heap_fetches(plan),
    }


def plan_table(
    plans: Mapping[Any, Plan],
    columns: Iterable[str] = ("plan", "indexes", "actual rows", "buffers"),
    *,
    index: str | Sequence[str] = "plan name",
):
    """A DataFrame with one row per plan (:func:`plan_summary`'s ``columns``).

    Keys become the index; tuple keys, e.g. ``(query, index)``, a MultiIndex named by
    ``index``."""
    import pandas as pd

    columns = list(columns)
    unknown = [c for c in columns if c not in SUMMARY_COLUMNS]
    if unknown:
        raise ValueError(f"unknown columns {unknown}: choose from {list(SUMMARY_COLUMNS)}")
    keys = list(plans)
    rows = [{c: plan_summary(plans[k])[c] for c in columns} for k in keys]
    names = [index] if isinstance(index, str) else list(index)
    if keys and isinstance(keys[0], tuple):
        labels = pd.MultiIndex.from_tuples(keys, names=names)
    else:
        labels = pd.Index(keys, name=names[0])
    return pd.DataFrame(rows, index=labels, columns=columns)


def plan_viewer(plans: Mapping[str, Plan], *, default: str | None = None):
    """An ipywidgets viewer: pick a plan by name, read its full tree.

    Shows ``default`` (the first plan if not given) without any interaction, so a notebook
    executed by papermill shows something too. Built with :func:`labkit.controls.live`
    (an ``HTML`` widget, no ``Output`` widget), so that executors cannot hang on it.
    ``viewer.children[0]`` is the dropdown, ``viewer.children[-1].value`` the tree shown."""
    import ipywidgets as widgets

    from labkit.controls import live

    names = list(plans)
    if not names:
        raise ValueError("no plans to show")
    width = max(len(name) for name in names)
    chooser = widgets.Dropdown(
        options=names,
        value=default or names[0],
        description="plan",
        layout={"width": f"min(100%, {width + 12}ch)"},
    )
    return live(lambda name: plans[name].tree(), pre=True, name=chooser)
