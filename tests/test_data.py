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


SCHEMA_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, a.attnum""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY 1, 2""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle
        FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1""",
}


def schema_of(database: db.Database) -> dict[str, list[tuple]]:
    with database.connect() as conn:
        return {name: conn.execute(query).fetchall() for name, query in SCHEMA_QUERIES.items()}


def test_loaded_schema_equals_the_orm_metadata():
    """The loader builds its tables from labkit.blog's metadata: after a load (tables first,
    keys, foreign keys and identities after the rows), the columns, types, nullability,
    constraints, indexes and identity sequences are exactly what
    ``Base.metadata.create_all`` makes on an empty database."""
    from labkit.blog import Base

    loaded = db.fresh_database("test_schema_loaded")
    data.load_blog(loaded, users=20, posts=50, comments=50)
    created = db.fresh_database("test_schema_created")
    engine = created.engine()
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        expected, actual = schema_of(created), schema_of(loaded)
        assert {len(rows) for rows in expected.values()} != {0}
        for part in SCHEMA_QUERIES:
            assert actual[part] == expected[part], part
    finally:
        db.drop_database("test_schema_loaded")
        db.drop_database("test_schema_created")
