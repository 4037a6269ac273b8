"""labkit.hot_updates against the real server: HOT updates counted within one transaction, on
SQLAlchemy and psycopg connections; an index holding the updated column rules HOT out; trials
leave the rows as they were and start from the same free space; the counts reach
pg_stat_user_tables as soon as the transaction ends."""

from __future__ import annotations

import pytest

from labkit import data, db, hot_updates

pytestmark = pytest.mark.xdist_group("services")

ONE_VIEW = "UPDATE posts SET view_count = view_count + 1 WHERE mod(id, 20) = 0"
COVERING = "CREATE INDEX ix_views ON posts (author_id) INCLUDE (view_count)"


@pytest.fixture()
def blog():
    demo = data.blog_database("test_hot_updates", scale="tiny")
    engine = demo.engine()
    yield demo, engine
    engine.dispose()
    db.drop_database("test_hot_updates")


def test_trials_repeat_exactly_and_the_index_rules_out_hot(blog):
    """The same statement tried twice gives the same counts (the rolled-back versions are
    vacuumed away); with the covering index, updates that stay on their page are not HOT."""
    demo, engine = blog
    with demo.connect() as conn:
        views_before = conn.execute("SELECT sum(view_count) FROM posts").fetchone()[0]
    first = hot_updates.trial(engine, [], ONE_VIEW, table="posts")
    covered = hot_updates.trial(engine, [COVERING], ONE_VIEW, table="posts")
    again = hot_updates.trial(engine, [], ONE_VIEW, table="posts")
    assert first == again
    assert first.updated == covered.updated > 0
    assert 0 < first.hot == first.same_page < first.updated
    assert covered.hot == 0 and covered.same_page == first.same_page
    assert first.new_page == covered.new_page
    with demo.connect() as conn:
        views_after = conn.execute("SELECT sum(view_count) FROM posts").fetchone()[0]
        covering_left = conn.execute("SELECT to_regclass('ix_views')").fetchone()[0]
    assert views_after == views_before and covering_left is None


def test_counting_on_a_psycopg_connection_and_reporting_at_commit(blog):
    """On a psycopg connection in a transaction: the counts of a committed update, and
    pg_stat_user_tables has them as soon as the transaction ends."""
    demo, _ = blog
    with demo.connect() as conn:
        with hot_updates.counting_updates(conn, "posts") as counts:
            conn.execute("UPDATE posts SET view_count = view_count + 1 WHERE id <= 10")
        conn.commit()
    assert counts.updated == 10 and counts.hot + counts.new_page <= 10
    assert 0.0 <= counts.hot_share <= 1.0
    with demo.connect() as conn:
        shared = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'posts'"
        ).fetchone()
    assert tuple(shared) == (counts.updated, counts.hot)


def test_refuses_autocommit_and_a_block_that_ends_the_transaction(blog):
    """Counting needs one transaction around the block: autocommit is refused, and so is a
    block that commits in the middle."""
    demo, _ = blog
    with demo.connect(autocommit=True) as conn, pytest.raises(ValueError, match="autocommit"):
        with hot_updates.counting_updates(conn, "posts"):
            pass
    with demo.connect() as conn, pytest.raises(ValueError, match="ended the transaction"):
        with hot_updates.counting_updates(conn, "posts"):
            conn.execute("UPDATE posts SET view_count = view_count + 1 WHERE id = 1")
            conn.commit()


def test_no_updates_count_zero(blog):
    """A block that updates nothing counts nothing (and a share of 0.0)."""
    _, engine = blog
    with engine.connect() as conn:
        with hot_updates.counting_updates(conn, "posts") as counts:
            conn.exec_driver_sql("SELECT count(*) FROM posts")
        conn.rollback()
    assert counts == hot_updates.UpdateCounts() and counts.hot_share == 0.0
