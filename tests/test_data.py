"""labkit.data: determinism, skew, load and the template copy."""

from __future__ import annotations

import itertools
from collections import Counter

from labkit import data, db


def test_same_seed_same_rows():
    """The generator is deterministic for a seed, and different for another seed."""
    first = list(itertools.islice(data.generate_posts(2000, 200, seed=7), 2000))
    again = list(itertools.islice(data.generate_posts(2000, 200, seed=7), 2000))
    other = list(itertools.islice(data.generate_posts(2000, 200, seed=8), 2000))
    assert first == again
    assert first != other
    assert list(data.generate_users(50, seed=1)) == list(data.generate_users(50, seed=1))
    assert list(data.generate_comments(100, 50, 20, 3)) == list(
        data.generate_comments(100, 50, 20, 3)
    )


def test_authors_are_skewed():
    """A few prolific authors: the busiest 1% of users write at least 20% of the posts."""
    counts = Counter(row[1] for row in data.generate_posts(20_000, 2_000))
    top = sum(c for _, c in counts.most_common(20))
    assert top / 20_000 >= 0.2, f"top 1% wrote {top / 20_000:.0%}"


def test_load_matches_generator_and_schema():
    """A load puts exactly the generated rows in, with keys, and the ORM can insert after."""
    target = db.fresh_database("test_data_load")
    report = data.load_blog(target, users=100, posts=1000, comments=500, seed=3)
    assert (report.users, report.posts, report.comments) == (100, 1000, 500)
    with target.connect() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM posts), "
            "(SELECT count(*) FROM comments)"
        ).fetchone()
        assert counts == (100, 1000, 500)
        first = conn.execute(
            "SELECT id, author_id, title FROM posts ORDER BY id LIMIT 1"
        ).fetchone()
        expected = next(data.generate_posts(1000, 100, seed=3))
        assert first == (expected[0], expected[1], expected[2])
        constraints = {r[0] for r in conn.execute("SELECT conname FROM pg_constraint")}
        assert {"posts_pkey", "posts_author_id_fkey", "comments_post_id_fkey"} <= constraints
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'posts'"
        ).fetchone() == (1,), "only the primary key: the lessons add the other indexes"
    from sqlalchemy.orm import Session

    from labkit.blog import Post

    with Session(target.engine()) as session:
        post = Post(
            author_id=1, title="t", body="b", published=True, view_count=0, created_at=data.EPOCH
        )
        session.add(post)
        session.commit()
        assert post.id == 1001
    db.drop_database("test_data_load")


def test_blog_database_copies_a_template():
    """blog_database gives an independent copy: changes in one never reach the next."""
    first = data.blog_database("test_blog_copy", scale="tiny")
    with first.connect() as conn:
        conn.execute("DELETE FROM comments")
        conn.commit()
    second = data.blog_database("test_blog_copy", scale="tiny")
    with second.connect() as conn:
        assert (
            conn.execute("SELECT count(*) FROM comments").fetchone()[0]
            == data.SCALES["tiny"].comments
        )
    db.drop_database("test_blog_copy")
