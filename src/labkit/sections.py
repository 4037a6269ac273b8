"""Run a lesson from any section: the set-up cell at the start of each ``##`` section.

A learner who runs the imports cell, jumps to a section and runs from there gets what
that section needs — the database in its starting state, the names earlier sections
defined — from one idempotent line, ``sections.performance(globals(), n)``. Here on a small
copy of the dataset, for section 4, which compares its index with section 3's plan:

>>> from labkit import sections
>>> namespace = {"USERS": 1_000, "POSTS": 5_000}   # the parameters cell's values
>>> sections.performance(namespace, 4)  # doctest: +ELLIPSIS
section 4 ready: AUTHOR, AUTHOR_POSTS, BUSY, BUSY_POSTS, authors, before, demo, engine, ...
>>> namespace["before"].has_seq_scan("posts")   # section 3's plan: no index yet
True
>>> namespace["engine"].dispose()

What ``numbers`` shows for a section that did not run in this kernel:

>>> sections.numbers({}).iloc[0, 0]
'(section not run in this kernel)'

Each call starts the section from a fresh copy of the dataset (~0.1-0.5 s) — from section
5 on, with the indexes section 4 creates — and, from section 10 on, from an empty cache
under the lesson's key prefix, so no state carries from one section to the next: run top
to bottom, each section starts as it would alone. The functions defined here are the
lesson's own, under the same names (tests/test_notebooks.py compares their code), so the
cells after a set-up run unchanged, and may define them again.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from labkit import cache, caching, data, db

__all__ = ["PERFORMANCE_DB", "numbers", "performance", "performance_prefix"]

#: The database of lesson 01 (``data.blog_database`` adds the test worker's prefix).
PERFORMANCE_DB = "lesson01_perf"
_CACHE_FROM = 10  # lesson 01's Part II (caching) starts at section 10


def performance_prefix() -> str:
    """The prefix of every Redis key lesson 01 writes (its database's name, then ``:``)."""
    return f"{db.qualified_name(PERFORMANCE_DB)}:"


def performance(namespace: MutableMapping[str, Any], section: int) -> None:
    """Set up section ``section`` of lesson 01 in ``namespace`` (the notebook's
    ``globals()``, which holds the parameters cell's values), and print the names it set.

    Idempotent: the database is copied afresh from its template, the lesson's cache keys
    are deleted, every name is rebound."""
    ready: dict[str, Any] = {}
    previous = namespace.get("engine")
    if previous is not None and hasattr(previous, "dispose"):
        previous.dispose()  # its connections point at the copy about to be replaced
    ready |= _dataset(namespace["USERS"], namespace["POSTS"])
    if section == 4:
        ready |= _author_lookup(ready)
    if section >= 5:
        _indexes_of_section_4(ready["demo"])
    if section >= _CACHE_FROM:
        ready |= _cache_kit(ready, namespace)
    namespace.update(ready)
    print(f"section {section} ready: {', '.join(sorted(ready))}")


def _dataset(users: int, posts: int) -> dict[str, Any]:
    """Section 1's result: the database, its engine, the counts and the two authors."""
    demo = data.blog_database(PERFORMANCE_DB, users=users, posts=posts, progress=False)
    with demo.connect() as conn:
        n_users, n_posts, n_comments = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM posts), "
            "(SELECT count(*) FROM comments)"
        ).fetchone()
        posts_pages = conn.execute(
            "SELECT pg_relation_size('posts') / current_setting('block_size')::int"
        ).fetchone()[0]
        authors = conn.execute(
            "SELECT author_id, count(*) AS posts FROM posts GROUP BY author_id "
            "ORDER BY posts DESC, author_id"
        ).fetchall()
    author, author_posts = authors[99]
    busy, busy_posts = authors[9]
    return {
        "demo": demo, "engine": demo.engine(), "n_users": n_users, "n_posts": n_posts,
        "n_comments": n_comments, "posts_pages": posts_pages, "authors": authors,
        "AUTHOR": author, "AUTHOR_POSTS": author_posts, "BUSY": busy, "BUSY_POSTS": busy_posts,
    }  # fmt: skip


def _author_lookup(ready: dict[str, Any]) -> dict[str, Any]:
    """Section 3's result that section 4 compares with: the lookup and its plan, no index."""
    from sqlalchemy import select

    from labkit.blog import Post

    authors = ready["authors"]
    lookup = select(Post.id, Post.title, Post.created_at).where(Post.author_id == ready["AUTHOR"])
    ranks = [1, 10, 100, 1_000, len(authors) // 2]
    return {"lookup": lookup, "before": db.explain(ready["engine"], lookup), "ranks": ranks}


#: The indexes section 4 leaves on the dataset, which the later sections start from. Not
#: 4.5's covering index on ``view_count``: 4.5 drops it (it rules out HOT updates of views).
SECTION_4_INDEXES = [
    "CREATE INDEX ix_posts_author_created ON posts (author_id, created_at)",
    "CREATE INDEX ix_posts_drafts ON posts (created_at) WHERE NOT published",
    "CREATE INDEX ix_users_email_lower ON users (lower(email))",
]


def _indexes_of_section_4(demo: Any) -> None:
    with demo.connect(autocommit=True) as conn:
        for ddl in SECTION_4_INDEXES:
            conn.execute(ddl)
        conn.execute("VACUUM ANALYZE posts, users")


def _cache_kit(ready: dict[str, Any], namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """Part II's client, key prefix and the functions its sections define (sections 10-17),
    with an empty cache: the lesson's own definitions, bound to this section's engine."""
    import random
    from datetime import UTC, datetime

    from sqlalchemy import bindparam, func, select, text
    from sqlalchemy.orm import Session

    from labkit.blog import Comment, Post, User

    demo, engine = ready["demo"], ready["engine"]
    r = cache.redis_client()
    prefix = f"{demo.name}:"  # = performance_prefix()
    caching.delete_prefix(r, prefix)
    profile_ttl, missing_ttl = 300, 30
    ttl_rng = random.Random(2024)  # section 10's jittered TTLs
    profile_hits = caching.HitCounter()
    profile_columns = select(User.id, User.email, User.name, User.country, User.created_at)
    profile_query = profile_columns.where(User.id == bindparam("user_id"))
    top_authors_key, dashboard_key, dashboard_ttl = (
        f"{prefix}authors:top10",
        f"{prefix}dashboard",
        60,
    )

    def fetch(statement, bind=engine):
        with bind.connect() as conn:
            return conn.execute(statement).all()

    def select_one(some_engine):
        with some_engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    def load_profile(user_id):
        with engine.connect() as conn:
            row = conn.execute(profile_query, {"user_id": user_id}).mappings().first()
        return dict(row) if row else None

    def profile_key(user_id):
        return f"{prefix}user:{user_id}"

    def get_profile(user_id, client=r, counter=profile_hits):
        cached = client.get(profile_key(user_id))
        if cached is not None:
            counter.hit()
            return caching.loads(cached)
        counter.miss()
        profile = load_profile(user_id)
        if profile is None:
            ttl = missing_ttl
        else:
            ttl = caching.jittered_ttl(profile_ttl, spread=0.1, rng=ttl_rng)
        client.set(profile_key(user_id), caching.dumps(profile), ex=ttl)
        return profile

    def rename_user(user_id, new_name):
        with Session(engine) as session, session.begin():
            session.get(User, user_id).name = new_name
        r.delete(profile_key(user_id), top_authors_key)

    def feed_version_key(author_id):
        return f"{prefix}feed:{author_id}:version"

    def publish_post(author_id, title):
        post = Post(author_id=author_id, title=title, body="Fresh.", published=True, view_count=0)
        post.created_at = datetime.now(UTC)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            session.add(post)
        r.incr(feed_version_key(author_id))
        return post.id

    def compute_dashboard(bind=engine):
        posts_and_views = select(func.count(), func.round(func.avg(Post.view_count), 2))
        with bind.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            users = conn.scalar(select(func.count()).select_from(User))
            posts, avg_views = conn.execute(posts_and_views.select_from(Post)).one()
            comments = conn.scalar(select(func.count()).select_from(Comment))
            conn.rollback()
        computed_at = datetime.now(UTC)
        return dict(
            users=users,
            posts=posts,
            comments=comments,
            avg_views=avg_views,
            computed_at=computed_at,
        )

    def get_dashboard(bind=engine, lock=True):
        return caching.get_or_compute(
            r, dashboard_key, lambda: compute_dashboard(bind), ttl=dashboard_ttl, lock=lock
        )

    def warm_profiles(client, user_ids, pipelined=True):
        with engine.connect() as conn:
            rows = conn.execute(profile_columns.where(User.id.in_(user_ids))).mappings().all()
        target = client.pipeline(transaction=False) if pipelined else client
        for row in rows:
            target.set(profile_key(row["id"]), caching.dumps(dict(row)), ex=profile_ttl)
        if pipelined:
            target.execute()
        return len(rows)

    with db.record_queries(engine) as computing:
        compute_dashboard()
    with demo.connect() as conn:  # every user, most active authors first
        popular = [
            row[0]
            for row in conn.execute(
                "SELECT u.id FROM users u LEFT JOIN posts p ON p.author_id = u.id "
                "GROUP BY u.id ORDER BY count(p.id) DESC, u.id"
            )
        ]
    seed = 2024
    reads = namespace["READS_PER_USER"] * len(popular)
    return {
        "r": r, "PREFIX": prefix, "PROFILE_TTL": profile_ttl, "MISSING_TTL": missing_ttl,
        "ttl_rng": ttl_rng,
        "profile_hits": profile_hits, "profile_columns": profile_columns,
        "profile_query": profile_query, "fetch": fetch, "select_one": select_one,
        "load_profile": load_profile, "profile_key": profile_key, "get_profile": get_profile,
        "STAR": ready["authors"][0][0], "TOP_AUTHORS_KEY": top_authors_key,
        "rename_user": rename_user, "feed_version_key": feed_version_key,
        "publish_post": publish_post, "compute_dashboard": compute_dashboard,
        "DASHBOARD_KEY": dashboard_key, "DASHBOARD_TTL": dashboard_ttl,
        "get_dashboard": get_dashboard, "STATEMENTS_PER_DASHBOARD": computing.count,
        "warm_profiles": warm_profiles, "popular": popular,
        "WARM_COUNT": int(len(popular) * namespace["WARM_FRACTION"]), "WORKLOAD_SEED": seed,
        "workload": caching.zipf_workload(popular, reads, s=namespace["SKEW"], seed=seed),
    }  # fmt: skip


def numbers(namespace: MutableMapping[str, Any]):
    """Lesson 01's headline numbers from the sections run in this kernel (a DataFrame);
    a section not run shows as such: no number is carried over from elsewhere."""
    import pandas as pd

    rows = {
        "author lookup: buffers, no index → index (4)": lambda n: (
            f"{n['before'].buffers:,} → {n['after'].buffers:,}"
        ),
        "author lookup: median ms (4)": lambda n: (
            f"{n['time_before'].median_ms:.2f} → {n['time_after'].median_ms:.2f}"
        ),
        "N+1: statements, lazy → selectinload (6)": lambda n: (
            f"{n['lazy'].count} → {n['n_plus_one'].loc['selectinload', 'statements']}"
        ),
        "connection: new → pooled checkout, median ms (7)": lambda n: (
            f"{n['unpooled_time'].median_ms:.2f} → {n['pooled_time'].median_ms:.2f}"
        ),
        "practice run: profile page statements (8)": lambda n: (
            f"{n['page_before'].statements} → {n['page_after'].statements}"
        ),
        "TTL jitter: most entries expiring in one second, same TTL → ±10% (10)": lambda n: (
            f"{n['peak_same']} → {n['peak_jittered']} (of {len(n['burst'])})"
        ),
        "cache workload: statements, none → warmed cache (16)": lambda n: (
            f"{n['baseline']:,} → {n['warm_count']:,} ({n['saved']:.1%} fewer)"
        ),
        "cache workload: hit rate, cold / warmed (16)": lambda n: (
            f"{n['cold'].hit_rate:.1%} / {n['warm'].hit_rate:.1%}"
        ),
        "hot row: row updates, UPDATE per view → HINCRBY + flush (16)": lambda n: (
            f"{n['pg_rows']} → {n['redis_rows']}"
        ),
        "hot row: lock waits seen, UPDATE per view → HINCRBY + flush (16)": lambda n: (
            f"{n['pg_waits'].lock_waits} → {n['redis_waits'].lock_waits}"
        ),
        "stampede: computations, no lock → lock (17)": lambda n: (
            f"{n['unprotected_runs']} → {n['protected_runs']}"
        ),
        "stale-while-revalidate: readers served stale at once, loads (17)": lambda n: (
            f"{len(n['served_stale'])}, {n['revalidating'].count // n['STATEMENTS_PER_DASHBOARD']}"
        ),
        "Redis down: reads answered correctly (18)": lambda n: (
            f"{len(n['while_down'])} of {len(n['sample'])}"
        ),
        "Redis hung: reads that waited for the timeout, no breaker → breaker (18)": lambda n: (
            f"{n['hang_waited']['no breaker']} → {n['hang_waited']['breaker']}"
        ),
    }
    values = {}
    for label, show in rows.items():
        try:
            values[label] = show(namespace)
        except (KeyError, AttributeError, TypeError):
            values[label] = "(section not run in this kernel)"
    return pd.Series(values, name="this run").rename_axis("measure").to_frame()
