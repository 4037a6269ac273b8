"""labkit.explain_tools against the course's PostgreSQL: trial indexes that leave no trace,
plan details, the comparison table and the viewer."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from labkit import data, db, explain_tools
from labkit.blog import Post


@pytest.fixture(scope="module")
def blog():
    return data.blog_database("test_explain_tools_blog", scale="tiny")


def index_names(engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'posts'"))
        return {row[0] for row in rows}


def test_trial_plans_use_the_index_then_roll_it_back(blog):
    """The queries see the trial index; afterwards the database is exactly as it was."""
    engine = blog.engine()
    before = index_names(engine)
    queries = {
        "by author": select(Post.id).where(Post.author_id == 3),
        "sql and parameters": ("SELECT id FROM posts WHERE author_id = %(a)s", {"a": 3}),
        "sql text": "SELECT count(*) FROM posts",
    }
    plans = explain_tools.trial_plans(engine, "CREATE INDEX ix_try ON posts (author_id)", queries)
    assert set(plans) == set(queries)
    assert plans["by author"].uses_index("ix_try")
    assert plans["sql and parameters"].uses_index("ix_try")
    assert index_names(engine) == before, "the trial index was rolled back"
    dropped = explain_tools.trial_plans(
        engine,
        ["CREATE INDEX ix_try ON posts (author_id)", "DROP INDEX ix_try"],
        {"by author": queries["by author"]},
    )
    assert dropped["by author"].has_seq_scan("posts"), "DDL runs in order"


def test_trial_plans_roll_back_when_a_statement_fails(blog):
    engine = blog.engine()
    before = index_names(engine)
    with pytest.raises(Exception, match="does_not_exist"):
        explain_tools.trial_plans(
            engine,
            ["CREATE INDEX ix_try ON posts (author_id)", "DROP INDEX does_not_exist"],
            {"q": select(Post.id)},
        )
    assert index_names(engine) == before


def test_heap_fetches_and_index_searches(blog):
    """An index-only scan on freshly loaded (all-visible) pages fetches nothing from the heap."""
    engine = blog.engine()
    count_for_author = {"count": select(func.count()).where(Post.author_id == 3)}
    plan = explain_tools.trial_plans(
        engine, "CREATE INDEX ix_try ON posts (author_id)", count_for_author
    )["count"]
    assert "Index Only Scan" in plan.node_types
    assert explain_tools.heap_fetches(plan) == 0
    assert explain_tools.index_searches(plan) == 1, "one descent into the index"
    seq = db.explain(engine, select(Post.id).where(Post.view_count < 0))
    assert explain_tools.heap_fetches(seq) == 0 and explain_tools.index_searches(seq) == 0


def test_plan_summary_and_table(blog):
    engine = blog.engine()
    by_key = db.explain(engine, select(Post.title).where(Post.id == 5))
    scan = db.explain(engine, select(Post.id).where(Post.author_id == 3))
    summary = explain_tools.plan_summary(by_key)
    assert set(summary) == set(explain_tools.SUMMARY_COLUMNS)
    assert summary["plan"] == "Index Scan" and summary["indexes"] == "posts_pkey"
    assert summary["actual rows"] == 1 and summary["buffers"] == by_key.buffers

    table = explain_tools.plan_table({"by key": by_key, "scan": scan})
    assert list(table.columns) == ["plan", "indexes", "actual rows", "buffers"]
    assert table.index.name == "plan name" and table.loc["scan", "plan"] == "Seq Scan"

    pairs = explain_tools.plan_table(
        {("q", "a"): by_key, ("q", "b"): scan}, ["buffers"], index=["query", "index"]
    )
    assert list(pairs.index.names) == ["query", "index"]
    assert pairs.loc[("q", "b"), "buffers"] == scan.buffers
    with pytest.raises(ValueError, match="unknown columns"):
        explain_tools.plan_table({"x": scan}, ["nodes"])


def test_plan_viewer_shows_the_default_plan_without_interaction(blog, capsys):
    engine = blog.engine()
    plans = {
        "scan": db.explain(engine, select(Post.id).where(Post.author_id == 3)),
        "by key": db.explain(engine, select(Post.id).where(Post.id == 1)),
    }
    viewer = explain_tools.plan_viewer(plans)
    chooser = viewer.children[0]
    assert list(chooser.options) == ["scan", "by key"] and chooser.value == "scan"
    assert explain_tools.plan_viewer(plans, default="by key").children[0].value == "by key"
    with pytest.raises(ValueError):
        explain_tools.plan_viewer({})
