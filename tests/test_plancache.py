"""labkit.plancache against the course's PostgreSQL, and what lesson 01 says about prepared
statements: psycopg prepares the sixth run on one connection, the server switches to a
generic plan after five custom plans, a pooled connection's ROLLBACK at check-in makes psycopg
forget its prepared statements (so the lesson's timing loops never time a generic plan),
a COMMIT does not, and ``prepare_threshold=None`` prepares nothing."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import NullPool

from labkit import data, db, plancache, practice

QUERY = "SELECT count(*) FROM posts WHERE author_id = %(author)s"


@pytest.fixture(scope="module")
def blog():
    demo = data.blog_database("test_plancache", scale="tiny")
    yield demo
    db.drop_database("test_plancache")


def plan_counts(conn) -> list[tuple[str, int, int]]:
    return [(s.name, s.custom_plans, s.generic_plans) for s in plancache.prepared_statements(conn)]


def test_psycopg_prepares_the_sixth_run_and_the_server_switches_at_the_eleventh(blog):
    seen = []
    with blog.connect(autocommit=True) as conn:
        for _ in range(12):
            conn.execute(QUERY, {"author": 1}).fetchone()
            seen.append(plan_counts(conn))
    assert seen[:5] == [[]] * 5, "nothing is prepared before the sixth run"
    assert [counts[0][1:] for counts in seen[5:]] == [
        (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (5, 1), (5, 2)
    ]  # fmt: skip
    assert seen[-1][0][0] == "_pg3_0"


def test_the_helpers_own_questions_are_never_prepared(blog):
    with blog.connect(autocommit=True) as conn:
        for _ in range(8):
            assert plancache.prepared_statements(conn) == []
            plancache.generic_plan(conn, QUERY)
        assert plancache.prepared_statements(conn) == []


def test_generic_plan_and_explain_prepared(blog):
    with blog.connect(autocommit=True) as conn:
        generic = plancache.generic_plan(conn, QUERY)
        assert generic.actual_rows is None, "EXPLAIN (GENERIC_PLAN) does not run the statement"
        assert generic.has_seq_scan("posts")
        conn.execute(QUERY, {"author": 1}, prepare=True).fetchone()
        (statement,) = plancache.prepared_statements(conn)
        ran = plancache.explain_prepared(conn, statement.name, 1)
        assert ran.actual_rows == 1 and ran.buffers > 0
        assert plancache.prepared_statements(conn)[0].custom_plans == 2, "EXPLAIN EXECUTE counts"
        shown = plancache.explain_prepared(conn, statement.name, 1, analyze=False)
        assert shown.actual_rows is None


def test_dollar_parameters():
    assert plancache.dollar_parameters("a = %s AND b = %s") == "a = $1 AND b = $2"
    assert plancache.dollar_parameters("%(x)s + %(y)s - %(x)s, 5%%") == "$1 + $2 - $1, 5%"


def test_timing_loops_with_one_checkout_per_run_are_never_prepared(blog):
    """What lesson 01's timing loops do (measure.timeit around fetch or practice.run_sql):
    each run takes the pool's one connection and returns it; the ROLLBACK at check-in
    clears psycopg's counts, so no run is prepared and none runs a generic plan."""
    engine = blog.engine()
    connects = []
    from sqlalchemy import event

    event.listen(engine, "connect", lambda *args: connects.append(1))
    practice.measure_queries(engine, {"q": (QUERY, {"author": 1})}, repeat=15)
    with engine.connect() as conn:
        assert plan_counts(conn) == [], "a timed run was prepared"
        for _ in range(12):  # the contrast: twelve runs inside one checkout
            conn.exec_driver_sql(QUERY, {"author": 1}).all()
        assert [counts[1:] for counts in plan_counts(conn)] == [(5, 2)]
    assert len(connects) == 1, "every run used the pool's one connection"
    engine.dispose()


def test_a_commit_keeps_the_counts_across_checkouts(blog):
    """A ROLLBACK clears psycopg's prepared statements; a COMMIT leaves them, so requests
    that commit count their statements across checkouts."""
    engine = blog.engine()
    for _ in range(6):
        with engine.begin() as conn:  # commits, so the reset at check-in has nothing to undo
            conn.exec_driver_sql(QUERY, {"author": 1}).all()
    with engine.connect() as conn:
        assert [counts[1:] for counts in plan_counts(conn)] == [(1, 0)]
    with engine.connect() as conn:  # the previous checkout ended in a ROLLBACK
        assert plan_counts(conn) == []
    engine.dispose()


def test_prepare_threshold_none_prepares_nothing(blog):
    engine = blog.engine(poolclass=NullPool, connect_args={"prepare_threshold": None})
    with engine.connect() as conn:
        for _ in range(12):
            conn.exec_driver_sql(QUERY, {"author": 1}).all()
        assert plan_counts(conn) == []
    engine.dispose()


def test_pgbouncer_version_is_a_version_or_none():
    version = plancache.pgbouncer_version()
    assert version is None or (len(version) == 3 and version >= (1, 0, 0))


def test_measure_run_prepares_inside_a_call_and_starts_from_zero_at_the_next(blog):
    """An N+1 loop inside one Session: its lazy loads get prepared within one call (here
    they keep custom plans: each user's estimate is cheaper than the generic one); closing
    the Session (a ROLLBACK) clears them, so every call counts from zero."""
    from sqlalchemy.orm import Session

    from labkit.blog import User

    engine = blog.engine()
    seen = []

    def lazy_loop():
        with Session(engine) as session:
            users = session.query(User).order_by(User.id).limit(12).all()
            posts = sum(len(user.posts) for user in users)  # 12 lazy loads, one statement
            seen.append([counts[1:] for counts in plan_counts(session.connection())])
            return posts

    practice.measure_run(engine, lazy_loop, repeat=2)
    assert seen == [[(7, 0)]] * 4, seen  # the recorded call, the warm-up, two timed runs
    engine.dispose()
