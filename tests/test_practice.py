"""labkit.practice against the course's PostgreSQL: statements and time of a block, measured
runs and queries, and the before/after table."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from labkit import data, practice
from labkit.blog import User


@pytest.fixture(scope="module")
def blog():
    return data.blog_database("test_practice_blog", scale="tiny")


def test_watch_counts_statements_and_seconds(blog):
    engine = blog.engine()
    with practice.watch(engine) as seen:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            conn.execute(text("SELECT pg_sleep(0.05)"))
    assert seen.count == 2 and seen.recorder.count == 2
    assert seen.seconds >= 0.05
    with pytest.raises(RuntimeError), practice.watch(engine) as failed:
        time.sleep(0.01)
        raise RuntimeError("inside the block")
    assert failed.seconds >= 0.01, "seconds are set even when the block raises"


def test_measure_run_records_the_first_call_and_times_the_others(blog):
    engine = blog.engine()
    calls = []

    def lazy_loop():
        calls.append(1)
        with Session(engine) as session:
            users = session.scalars(select(User).order_by(User.id).limit(3)).all()
            return [len(user.posts) for user in users]  # one lazy load per user

    run = practice.measure_run(engine, lazy_loop, repeat=4)
    assert run.statements == 1 + 3 and len(run.recorder.matching("FROM posts")) == 3
    assert len(run.time.runs_ms) == 4 and len(calls) == 1 + 1 + 4, "recorded, warm-up, 4 timed"
    with Session(engine) as session:
        expected = [len(u.posts) for u in session.scalars(select(User).order_by(User.id).limit(3))]
    assert run.result == expected


def test_measure_queries_and_before_after(blog):
    engine = blog.engine()
    queries = {
        "by author": ("SELECT id FROM posts WHERE author_id = %(a)s ORDER BY id", {"a": 3}),
        "count": ("SELECT count(*) FROM posts", {}),
    }
    before = practice.measure_queries(engine, queries, repeat=3)
    assert before["by author"].plan.has_seq_scan("posts")
    assert len(before["by author"].time.runs_ms) == 3
    assert before["count"].rows == [(2_000,)]
    assert before["by author"].rows == practice.run_sql(engine, *queries["by author"])
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_practice_author ON posts (author_id)"))
    try:
        after = practice.measure_queries(engine, queries, repeat=3)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_practice_author"))
    assert after["by author"].plan.uses_index("ix_practice_author")
    assert after["by author"].rows == before["by author"].rows

    def page():
        return practice.run_sql(engine, "SELECT count(*) FROM posts WHERE author_id = 3")

    page_run = practice.measure_run(engine, page, repeat=2)
    table = practice.before_after(
        before, after, {"by author": "index on author_id"}, pages={"page": (page_run, page_run)}
    )
    assert list(table.index) == ["by author", "count", "page"]
    row = table.loc["by author"]
    assert row["fix"] == "index on author_id" and "Seq Scan" not in row["plan after"]
    assert row["buffers after"] < row["buffers before"]
    assert (row["statements before"], row["statements after"]) == (1, 1)
    assert table.loc["count", "fix"] == ""
    assert table.loc["page", "plan after"] == "one statement"
    expected = (row["ms after"] - row["ms before"]) / row["ms before"] * 100
    assert row["change (%)"] == round(expected)


def test_run_sql_takes_parameters(blog):
    engine = blog.engine()
    assert practice.run_sql(engine, "SELECT %(x)s::int + 1", {"x": 41}) == [(42,)]
    assert practice.run_sql(engine, "SELECT count(*) FROM posts WHERE id = 1") == [(1,)]
