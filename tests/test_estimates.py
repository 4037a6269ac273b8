"""labkit.estimates against the real server: the estimate it computes from pg_stats is the
planner's own (for sampled and for whole-table statistics), a whole-table sample gives the
same statistics at every ANALYZE, and SET STATISTICS waits for the next ANALYZE."""

from __future__ import annotations

import pytest

from labkit import data, db, estimates

pytestmark = pytest.mark.xdist_group("services")

BY_AUTHOR = "SELECT id FROM posts WHERE author_id = %(author)s"


@pytest.fixture(scope="module")
def blog():
    demo = data.blog_database("test_estimates", scale="tiny")
    with demo.connect() as conn:
        ranked = [
            row[0]
            for row in conn.execute(
                "SELECT author_id FROM posts GROUP BY 1 ORDER BY count(*) DESC, 1"
            ).fetchall()
        ]
    engine = demo.engine()
    yield demo, engine, ranked
    engine.dispose()
    db.drop_database("test_estimates")


def _planner_rows(engine, author) -> int:
    return db.explain(engine, BY_AUTHOR, {"author": author}, analyze=False).estimated_rows


@pytest.mark.parametrize("target", [1, 3, 100])
def test_the_estimate_is_the_planners_for_any_sample(blog, target):
    """With a sample of part of the table (targets 1 and 3: 300 and 900 of 2,000 posts, a
    different sample at each ANALYZE) or all of it (100), in the list or not, and for an
    author with no posts: the computed estimate is the one in the plan."""
    demo, engine, ranked = blog
    authors = [ranked[0], ranked[2], ranked[len(ranked) // 2], ranked[-1], 0]
    with demo.connect(autocommit=True) as conn:
        estimates.set_statistics(conn, "posts", "author_id", target)
        try:
            for _ in range(4):
                conn.execute("ANALYZE posts (author_id)")
                for author in authors:
                    guess = estimates.equality_estimate(conn, "posts", "author_id", author)
                    assert guess.rows == _planner_rows(engine, author), (target, author, guess)
                    assert guess.mcv_count <= target
        finally:
            estimates.set_statistics(conn, "posts", "author_id", -1)


def test_in_and_out_of_the_list(blog):
    """The busiest author is estimated at its frequency; an author outside the list gets
    the leftover share, the same for every such author, never above the least common one."""
    demo, _, ranked = blog
    with demo.connect(autocommit=True) as conn:
        conn.execute("ANALYZE posts (author_id)")
        top = estimates.equality_estimate(conn, "posts", "author_id", ranked[0])
        rare = estimates.equality_estimate(conn, "posts", "author_id", ranked[-1])
        absent = estimates.equality_estimate(conn, "posts", "author_id", 0)
    assert top.in_mcv and top.frequency == top.selectivity
    assert not rare.in_mcv and rare.frequency is None and rare.rows == absent.rows
    assert rare.selectivity <= rare.least_common
    assert "sampled frequency" in top.formula() and "distinct" in rare.formula()


def test_a_whole_table_sample_is_exact_and_stable(blog):
    """A target of at least rows / 300 samples every row: the busiest author's estimate is
    its true count, and two ANALYZEs leave the same statistics."""
    demo, _, ranked = blog
    with demo.connect(autocommit=True) as conn:
        rows, busiest = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE author_id = %s) FROM posts", (ranked[0],)
        ).fetchone()
        estimates.set_statistics(conn, "posts", "author_id", estimates.full_sample_target(rows))
        try:
            conn.execute("ANALYZE posts (author_id)")
            first = estimates.equality_estimate(conn, "posts", "author_id", ranked[0])
            conn.execute("ANALYZE posts (author_id)")
            second = estimates.equality_estimate(conn, "posts", "author_id", ranked[0])
        finally:
            estimates.set_statistics(conn, "posts", "author_id", -1)
    assert first == second
    assert first.rows == busiest and first.table_rows == rows


def test_set_statistics_waits_for_the_next_analyze(blog):
    """Right after SET STATISTICS, pg_stats (and so the estimate) is what it was."""
    demo, _, ranked = blog
    with demo.connect(autocommit=True) as conn:
        conn.execute("ANALYZE posts (author_id)")
        before = estimates.equality_estimate(conn, "posts", "author_id", ranked[1])
        estimates.set_statistics(conn, "posts", "author_id", 1)
        try:
            assert estimates.equality_estimate(conn, "posts", "author_id", ranked[1]) == before
            conn.execute("ANALYZE posts (author_id)")
            assert estimates.equality_estimate(conn, "posts", "author_id", 0).mcv_count <= 1
        finally:
            estimates.set_statistics(conn, "posts", "author_id", -1)


def test_no_statistics_says_what_to_do(blog):
    """A table never analyzed has no pg_stats row: the error says to run ANALYZE."""
    demo, _, _ = blog
    with demo.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fresh (n int)")
        with pytest.raises(LookupError, match="ANALYZE fresh"):
            estimates.equality_estimate(conn, "fresh", "n", 1)


def test_full_sample_target():
    """300 rows a unit of target, rounded up."""
    assert estimates.full_sample_target(300) == 1
    assert estimates.full_sample_target(301) == 2
    assert estimates.full_sample_target(0) == 1


def test_a_negative_n_distinct_is_a_share_of_the_rows(blog):
    """comments.post_id has a negative n_distinct (distinct values grow with the rows): the
    estimate scales it by the table's rows, as the planner does, in the list or not."""
    demo, engine, _ = blog
    with demo.connect(autocommit=True) as conn:
        conn.execute("ANALYZE comments (post_id)")
        stored = conn.execute(
            "SELECT n_distinct FROM pg_stats WHERE tablename = 'comments' AND attname = 'post_id'"
        ).fetchone()[0]
        assert stored < 0, stored
        for post in (1, 2, 50, 10**6):
            guess = estimates.equality_estimate(conn, "comments", "post_id", post)
            plan = db.explain(
                engine, "SELECT id FROM comments WHERE post_id = %(p)s", {"p": post}, analyze=False
            )
            assert guess.rows == plan.estimated_rows, (post, guess)
            assert guess.n_distinct == round(-stored * guess.table_rows)
