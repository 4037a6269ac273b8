"""00-warmup: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "warmup.ipynb"

REQUIREMENTS = [
    # Task 1
    Requirement("top-five", NB, "top_authors", "the five users who wrote the most posts", "test_top_authors"),
    Requirement("top-columns", NB, "top_authors", "with the columns `id`, `name` and `post_count`", "test_top_authors"),
    Requirement("top-order", NB, "top_authors", "ordered by `post_count` (highest first)", "test_top_authors"),
    Requirement("top-ties", NB, "top_authors", "between users with the same count, by `id` (lowest first)", "test_top_authors"),
    # Task 2
    Requirement("titles-author", NB, "published_titles", "the titles of the author's published posts", "test_published_titles"),
    Requirement("titles-published", NB, "published_titles", "(`Post.published` is true)", "test_published_titles"),
    Requirement("titles-newest", NB, "published_titles", "newest first (`Post.created_at`)", "test_published_titles"),
    Requirement("titles-list", NB, "published_titles", "as a list of strings", "test_published_titles"),
    Requirement("titles-empty", NB, "published_titles", "an empty list for an author with no published post", "test_published_titles"),
    Requirement("titles-one-select", NB, "published_titles", "Use one SQLAlchemy `select` that filters and sorts in PostgreSQL", "test_published_titles"),
    # Task 3
    Requirement("viewed-limit", NB, "most_viewed_posts", "it returns the `limit` most viewed `Post` objects", "test_most_viewed_posts"),
    Requirement("viewed-order", NB, "most_viewed_posts", "highest `view_count` first", "test_most_viewed_posts"),
    Requirement("viewed-ties", NB, "most_viewed_posts", "between posts with the same count, lowest `id` first", "test_most_viewed_posts"),
    Requirement("viewed-eager", NB, "most_viewed_posts", "must not run one more query per post", "test_most_viewed_posts"),
]  # fmt: skip

CONTEXT = {
    (NB, "task3"): ["Phase 1 explains why; for now, look up `joinedload` or `selectinload`."],
}

TOP = "top_authors"
TITLES = "published_titles"
VIEWED = "most_viewed_posts"


def top_authors(select_list="u.id, u.name, count(*) AS post_count", where="", order="post_count DESC, u.id", table="posts AS p ON p.author_id = u.id"):  # fmt: skip
    return f'''TOP_AUTHORS_SQL = """
SELECT {select_list}
FROM users AS u JOIN {table}
{where}GROUP BY u.id, u.name
ORDER BY {order}
LIMIT 5
"""'''


def published_titles(body: str) -> str:
    return "def published_titles(session, author_id):\n" + body


def most_viewed(statement: str) -> str:
    return (
        "def most_viewed_posts(session, limit=10):\n"
        f"    statement = {statement}\n"
        "    return list(session.scalars(statement))"
    )


CASES = [
    # ------------------------------------------------------------------ task 1
    {
        "name": "counts the comments each user wrote instead of the posts",
        "breaks": "top-five",
        "notebook": NB,
        "answers": {TOP: top_authors(table="comments AS c ON c.author_id = u.id")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    {
        "name": "counts only published posts",
        "breaks": "top-five",
        "notebook": NB,
        "answers": {TOP: top_authors(where="WHERE p.published\n")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    {
        "name": "shows the e-mail in the name column",
        "breaks": "top-columns",
        "notebook": NB,
        "answers": {TOP: top_authors(select_list="u.id, u.email AS name, count(*) AS post_count")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    {
        "name": "sorts the counts lowest first",
        "breaks": "top-order",
        "notebook": NB,
        "answers": {TOP: top_authors(order="post_count, u.id")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    {
        "name": "no tie-break: orders by post_count only",
        "breaks": "top-ties",
        "notebook": NB,
        "answers": {TOP: top_authors(order="post_count DESC")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    {
        "name": "breaks ties by the highest id",
        "breaks": "top-ties",
        "notebook": NB,
        "answers": {TOP: top_authors(order="post_count DESC, u.id DESC")},
        "loses": ["test_top_authors"],
        "source": "course",
    },
    # ------------------------------------------------------------------ task 2
    {
        "name": "forgets the author: every author's published titles",
        "breaks": "titles-author",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post.title).where(Post.published)"
                ".order_by(Post.created_at.desc())\n"
                "    return list(session.scalars(statement))"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    {
        "name": "forgets the published filter",
        "breaks": "titles-published",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post.title).where(Post.author_id == author_id)"
                ".order_by(Post.created_at.desc())\n"
                "    return list(session.scalars(statement))"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    {
        "name": "oldest first",
        "breaks": "titles-newest",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post.title).where(Post.author_id == author_id, "
                "Post.published).order_by(Post.created_at)\n"
                "    return list(session.scalars(statement))"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    {
        "name": "returns the ScalarResult instead of a list",
        "breaks": "titles-list",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post.title).where(Post.author_id == author_id, "
                "Post.published).order_by(Post.created_at.desc())\n"
                "    return session.scalars(statement)"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    {
        "name": "returns None when there is no title",
        "breaks": "titles-empty",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post.title).where(Post.author_id == author_id, "
                "Post.published).order_by(Post.created_at.desc())\n"
                "    return list(session.scalars(statement)) or None"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    {
        "name": "filters the published posts in Python",
        "breaks": "titles-one-select",
        "notebook": NB,
        "answers": {
            TITLES: published_titles(
                "    statement = select(Post).where(Post.author_id == author_id)"
                ".order_by(Post.created_at.desc())\n"
                "    return [post.title for post in session.scalars(statement) if post.published]"
            )
        },
        "loses": ["test_published_titles"],
        "source": "course",
    },
    # ------------------------------------------------------------------ task 3
    {
        "name": "always returns ten posts, whatever limit is",
        "breaks": "viewed-limit",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).options(joinedload(Post.author))"
                ".order_by(Post.view_count.desc(), Post.id).limit(10)"
            )
        },
        "loses": ["test_most_viewed_posts"],
        "source": "course",
    },
    {
        "name": "least viewed first",
        "breaks": "viewed-order",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).options(joinedload(Post.author))"
                ".order_by(Post.view_count, Post.id).limit(limit)"
            )
        },
        "loses": ["test_most_viewed_posts"],
        "source": "course",
    },
    {
        "name": "orders by view_count without the id tie-break",
        "breaks": "viewed-ties",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).options(joinedload(Post.author))"
                ".order_by(Post.view_count.desc()).limit(limit)"
            )
        },
        "loses": ["test_most_viewed_posts"],
        "source": "course",
    },
    {
        "name": "breaks view_count ties by the highest id",
        "breaks": "viewed-ties",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).options(joinedload(Post.author))"
                ".order_by(Post.view_count.desc(), Post.id.desc()).limit(limit)"
            )
        },
        "loses": ["test_most_viewed_posts"],
        "source": "course",
    },
    {
        "name": "lazy-loads every author (N+1)",
        "breaks": "viewed-eager",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).order_by(Post.view_count.desc(), Post.id).limit(limit)"
            )
        },
        "loses": ["test_most_viewed_posts"],
        "source": "course",
    },
]

# Written by an outside reviewer from the student version and the task text only (they never
# saw the tests); kept as they wrote them.
CASES += [
    {
        "name": "ties broken by id descending",
        "breaks": "top-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": 'TOP_AUTHORS_SQL = """\n'
            "SELECT u.id, u.name, count(p.id) AS post_count\n"
            "FROM users AS u JOIN posts AS p ON p.author_id = u.id\n"
            "GROUP BY u.id, u.name\n"
            "ORDER BY post_count DESC, u.id DESC\n"
            "LIMIT 5\n"
            '"""'
        },
        "loses": ["test_top_authors"],
        "source": "outside review",
    },
    {
        "name": "no tie-break at all (ORDER BY post_count DESC only)",
        "breaks": "top-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": 'TOP_AUTHORS_SQL = """\n'
            "SELECT u.id, u.name, count(p.id) AS post_count\n"
            "FROM users AS u JOIN posts AS p ON p.author_id = u.id\n"
            "GROUP BY u.id, u.name\n"
            "ORDER BY post_count DESC\n"
            "LIMIT 5\n"
            '"""'
        },
        "loses": ["test_top_authors"],
        "source": "outside review",
    },
    {
        "name": "ties broken by name instead of id",
        "breaks": "top-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": 'TOP_AUTHORS_SQL = """\n'
            "SELECT u.id, u.name, count(p.id) AS post_count\n"
            "FROM users AS u JOIN posts AS p ON p.author_id = u.id\n"
            "GROUP BY u.id, u.name\n"
            "ORDER BY post_count DESC, u.name ASC\n"
            "LIMIT 5\n"
            '"""'
        },
        "loses": ["test_top_authors"],
        "source": "outside review",
    },
    {
        "name": "counts only published posts",
        "breaks": "top-five",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": 'TOP_AUTHORS_SQL = """\n'
            "SELECT u.id, u.name, count(p.id) AS post_count\n"
            "FROM users AS u JOIN posts AS p ON p.author_id = u.id\n"
            "WHERE p.published\n"
            "GROUP BY u.id, u.name\n"
            "ORDER BY post_count DESC, u.id ASC\n"
            "LIMIT 5\n"
            '"""'
        },
        "loses": ["test_top_authors"],
        "source": "outside review",
    },
    {
        "name": "groups by name (homonymous users merged), id = min(id)",
        "breaks": "top-five",
        "notebook": "warmup.ipynb",
        "answers": {
            "top_authors": 'TOP_AUTHORS_SQL = """\n'
            "SELECT min(u.id) AS id, u.name, count(p.id) AS post_count\n"
            "FROM users AS u JOIN posts AS p ON p.author_id = u.id\n"
            "GROUP BY u.name\n"
            "ORDER BY post_count DESC, id ASC\n"
            "LIMIT 5\n"
            '"""'
        },
        "loses": ["test_top_authors"],
        "source": "outside review",
    },
    {
        "name": "oldest first",
        "breaks": "titles-newest",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    statement = (\n"
            "        select(Post.title)\n"
            "        .where(Post.author_id == author_id, "
            "Post.published.is_(True))\n"
            "        .order_by(Post.created_at)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "newest first by id instead of created_at",
        "breaks": "titles-newest",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    statement = (\n"
            "        select(Post.title)\n"
            "        .where(Post.author_id == author_id, "
            "Post.published.is_(True))\n"
            "        .order_by(Post.id.desc())\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "forgets the published filter",
        "breaks": "titles-published",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    statement = (\n"
            "        select(Post.title)\n"
            "        .where(Post.author_id == author_id)\n"
            "        .order_by(Post.created_at.desc())\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "forgets the author filter",
        "breaks": "titles-author",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    statement = (\n"
            "        select(Post.title)\n"
            "        .where(Post.published.is_(True))\n"
            "        .order_by(Post.created_at.desc())\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "caps the list at 10 titles",
        "breaks": "titles-author",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    statement = (\n"
            "        select(Post.title)\n"
            "        .where(Post.author_id == author_id, "
            "Post.published.is_(True))\n"
            "        .order_by(Post.created_at.desc())\n"
            "        .limit(10)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "loads every post and filters/sorts in Python",
        "breaks": "titles-one-select",
        "notebook": "warmup.ipynb",
        "answers": {
            "published_titles": "def published_titles(session: Session, author_id: int) -> "
            "list[str]:\n"
            "    posts = session.scalars(select(Post)).all()\n"
            "    mine = [p for p in posts if p.author_id == author_id and "
            "p.published]\n"
            "    mine.sort(key=lambda p: p.created_at, reverse=True)\n"
            "    return [p.title for p in mine]"
        },
        "loses": ["test_published_titles"],
        "source": "outside review",
    },
    {
        "name": "ties broken by id descending",
        "breaks": "viewed-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": "def most_viewed_posts(session: Session, limit: int = 10) -> "
            "list[Post]:\n"
            "    statement = (\n"
            "        select(Post)\n"
            "        .options(joinedload(Post.author))\n"
            "        .order_by(Post.view_count.desc(), Post.id.desc())\n"
            "        .limit(limit)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_most_viewed_posts"],
        "source": "outside review",
    },
    {
        "name": "no tie-break",
        "breaks": "viewed-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": "def most_viewed_posts(session: Session, limit: int = 10) -> "
            "list[Post]:\n"
            "    statement = (\n"
            "        select(Post)\n"
            "        .options(joinedload(Post.author))\n"
            "        .order_by(Post.view_count.desc())\n"
            "        .limit(limit)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_most_viewed_posts"],
        "source": "outside review",
    },
    {
        "name": "tie-break applied in Python after the LIMIT (wrong rows at the boundary)",
        "breaks": "viewed-ties",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": "def most_viewed_posts(session: Session, limit: int = 10) -> "
            "list[Post]:\n"
            "    statement = (\n"
            "        select(Post)\n"
            "        .options(joinedload(Post.author))\n"
            "        .order_by(Post.view_count.desc())\n"
            "        .limit(limit)\n"
            "    )\n"
            "    posts = list(session.scalars(statement).all())\n"
            "    return sorted(posts, key=lambda p: (-p.view_count, p.id))"
        },
        "loses": ["test_most_viewed_posts"],
        "source": "outside review",
    },
    {
        "name": "ignores the limit argument (always 10)",
        "breaks": "viewed-limit",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": "def most_viewed_posts(session: Session, limit: int = 10) -> "
            "list[Post]:\n"
            "    statement = (\n"
            "        select(Post)\n"
            "        .options(joinedload(Post.author))\n"
            "        .order_by(Post.view_count.desc(), Post.id)\n"
            "        .limit(10)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_most_viewed_posts"],
        "source": "outside review",
    },
    {
        "name": "limit 0 treated as the default (limit or 10)",
        "breaks": "viewed-limit",
        "notebook": "warmup.ipynb",
        "answers": {
            "most_viewed_posts": "def most_viewed_posts(session: Session, limit: int = 10) -> "
            "list[Post]:\n"
            "    statement = (\n"
            "        select(Post)\n"
            "        .options(joinedload(Post.author))\n"
            "        .order_by(Post.view_count.desc(), Post.id)\n"
            "        .limit(limit or 10)\n"
            "    )\n"
            "    return list(session.scalars(statement).all())"
        },
        "loses": ["test_most_viewed_posts"],
        "source": "outside review",
    },
]

# Right answers written another way: each must keep full marks.
ALTERNATIVES = [
    {
        "name": "counts with a subquery, ties by id",
        "notebook": NB,
        "answers": {
            TOP: '''TOP_AUTHORS_SQL = """
SELECT u.id, u.name, c.n AS post_count
FROM (SELECT author_id, count(*) AS n FROM posts GROUP BY author_id) AS c
JOIN users AS u ON u.id = c.author_id
ORDER BY c.n DESC, u.id ASC
LIMIT 5
"""'''
        },
    },
    {
        "name": "selectinload for the authors",
        "notebook": NB,
        "answers": {
            VIEWED: most_viewed(
                "select(Post).options(selectinload(Post.author))"
                ".order_by(Post.view_count.desc(), Post.id).limit(limit)"
            )
        },
    },
]
