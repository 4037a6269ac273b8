"""Plausible wrong answers for 00-warmup, and the test cells each one must fail."""

CASES = [
    {
        "name": "counts the comments each user wrote instead of the posts",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": '''TOP_AUTHORS_SQL = """
SELECT u.id, u.name, count(*) AS post_count
FROM users AS u JOIN comments AS c ON c.author_id = u.id
GROUP BY u.id, u.name
ORDER BY post_count DESC, u.id
LIMIT 5
"""''',
        },
        "loses": ["test_top_authors"],
    },
    {
        "name": "forgets the published filter",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": """def published_titles(session, author_id):
    statement = select(Post.title).where(Post.author_id == author_id).order_by(Post.created_at.desc())
    return list(session.scalars(statement))""",
        },
        "loses": ["test_published_titles"],
    },
    {
        "name": "lazy-loads every author (N+1)",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": """def most_viewed_posts(session, limit=10):
    statement = select(Post).order_by(Post.view_count.desc(), Post.id).limit(limit)
    return list(session.scalars(statement))""",
        },
        "loses": ["test_most_viewed_posts"],
    },
    {
        "name": "orders by view_count without the id tie-break",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": """def most_viewed_posts(session, limit=10):
    statement = (
        select(Post).options(joinedload(Post.author)).order_by(Post.view_count.desc()).limit(limit)
    )
    return list(session.scalars(statement))""",
        },
        "loses": ["test_most_viewed_posts"],
    },
]
