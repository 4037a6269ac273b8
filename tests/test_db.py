"""labkit.db against the course's PostgreSQL: isolation, recorder, EXPLAIN as data."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from labkit import db
from labkit.blog import Post


@pytest.fixture(scope="module")
def blog():
    from labkit import data

    return data.blog_database("test_db_blog", scale="tiny")


def test_fresh_database_is_empty_and_isolated():
    """Two fresh databases do not see each other's tables; re-creating empties one."""
    first = db.fresh_database("test_iso_a")
    second = db.fresh_database("test_iso_b")
    with first.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
    with second.connect() as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
    again = db.fresh_database("test_iso_a")
    with again.connect() as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
    db.drop_database("test_iso_a")
    db.drop_database("test_iso_b")


def test_fresh_database_rejects_unsafe_names():
    """Names are validated (and quoted with psycopg.sql.Identifier anyway)."""
    with pytest.raises(ValueError):
        db.fresh_database('x"; DROP DATABASE postgres; --')


def test_recorder_counts_statements_and_durations(blog):
    """record_queries sees every statement through the engine, with its duration."""
    engine = blog.engine()
    with db.record_queries(engine) as recorder:
        with Session(engine) as session:
            posts = session.scalars(select(Post).order_by(Post.id).limit(3)).all()
            for post in posts:
                _ = post.author.name  # lazy load: one statement per post
    assert recorder.count == 4, recorder.frame()
    assert len(recorder.matching("FROM users")) == 3
    assert [s.rowcount for s in recorder.statements] == [3, 1, 1, 1]
    # listeners are removed on exit
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert recorder.count == 4


def test_recorder_duration_is_the_statements_round_trip(blog):
    """A statement the server holds for 50 ms is recorded as taking at least 50 ms (the
    duration is the driver's round trip, not the time to build the statement)."""
    engine = blog.engine()
    with db.record_queries(engine) as recorder, engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.05)"))
    (statement,) = recorder.matching("pg_sleep")
    assert statement.duration_ms >= 50, recorder.frame()
    assert recorder.total_ms >= statement.duration_ms


def test_explain_reads_plans_as_data(blog):
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON): node types, indexes and buffers."""
    engine = blog.engine()
    plan = db.explain(engine, "SELECT * FROM posts WHERE id = %(id)s", {"id": 5})
    assert plan.uses_index("posts_pkey") and plan.actual_rows == 1
    assert plan.buffers > 0 and plan.execution_ms is not None
    scan = db.explain(engine, select(Post).where(Post.author_id == 3))
    assert scan.has_seq_scan("posts") and not scan.uses_index()
    assert "Seq Scan on posts" in scan.tree()


def test_explain_analyze_of_a_write_is_rolled_back(blog):
    """EXPLAIN ANALYZE really runs the statement: for writes, labkit rolls it back, whatever
    the bind (an Engine, a psycopg connection, or a Connection / Session that is committed
    afterwards)."""
    engine = blog.engine()

    def comments() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM comments")).scalar()

    before = comments()
    plan = db.explain(
        engine, "DELETE FROM comments WHERE post_id IN (SELECT id FROM posts LIMIT 5)"
    )
    assert plan.node_types[0] == "ModifyTable" and plan.root["Operation"] == "Delete"
    assert comments() == before, "explain(engine, DELETE) changed the table"
    with blog.connect() as conn:
        db.explain(conn, "DELETE FROM comments")
        conn.commit()
    assert comments() == before, "explain(psycopg connection, DELETE) changed the table"
    with engine.connect() as conn:
        db.explain(conn, "DELETE FROM comments WHERE id < 100")
        conn.commit()
    assert comments() == before, "explain(Connection, DELETE) survived a commit"
    with Session(engine) as session:
        db.explain(
            session, "WITH gone AS (DELETE FROM comments RETURNING id) SELECT count(*) FROM gone"
        )
        session.commit()
    assert comments() == before, "explain(Session, WITH ... DELETE) survived a commit"


def test_explain_of_a_read_adds_no_statements(blog):
    """A plain read is explained as one statement (no savepoint for a recorder to count)."""
    engine = blog.engine()
    with engine.connect() as conn, db.record_queries(engine) as recorder:
        db.explain(conn, "SELECT count(*) FROM posts")
    assert recorder.count == 1, recorder.frame()


def test_database_prefix_isolates_workers(monkeypatch):
    """LABKIT_DB_PREFIX (set per test worker / grading run) is applied to every name."""
    monkeypatch.setenv("LABKIT_DB_PREFIX", "zz_")
    database = db.fresh_database("test_prefix")
    assert database.name == "zz_test_prefix"
    db.drop_database("test_prefix")


def test_login_role_is_ordinary_and_stable():
    """login_role makes an ordinary role (no superuser, no BYPASSRLS) whose password is the
    same at every call, and which can log in to a database it was granted."""
    import psycopg

    first = db.login_role("test_reader")
    second = db.login_role("test_reader")
    assert first == second and first.name.endswith("labkit_test_reader")
    assert "password" not in repr(first) and first.password not in repr(first)
    with db.connect(autocommit=True) as conn:
        flags = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles "
            "WHERE rolname = %s",
            (first.name,),
        ).fetchone()
    assert flags == (False, False, False, True)
    with psycopg.connect(first.url("postgres")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (first.name,)
    with pytest.raises(ValueError):
        db.login_role('x"; DROP ROLE postgres; --')
