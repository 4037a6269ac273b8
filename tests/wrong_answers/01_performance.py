"""01-performance: the requirement table of each task of Step 6 and Step 7, and plausible
wrong answers: at least one per requirement, which must lose exactly that requirement's test
cell (the other answers stay correct, so a case also proves that the other tasks' tests do
not depend on it)."""

from pathlib import Path

from labkit.course import grading
from wrong_answers import Requirement

STEP06 = "step06-query-optimization.ipynb"
STEP07 = "step07-caching.ipynb"


def r6(id, answer, text, test):  # noqa: A002
    return Requirement(id, STEP06, answer, text, test)


def r7(id, answer, text, test):  # noqa: A002
    return Requirement(id, STEP07, answer, text, test)


REQUIREMENTS = [
    # ------------------------------------------------------------------ step 6
    r6("log-each", "query_log", "every statement that this engine sends to PostgreSQL appends one tuple `(sql, duration_ms)` to the list `log`", "test_query_log"),
    r6("log-sql", "query_log", "where `sql` is the SQL text the driver received", "test_query_log"),
    r6("log-duration", "query_log", "`duration_ms` the time it took", "test_query_log"),
    r6("log-ms", "query_log", "the time it took, in milliseconds", "test_query_log"),
    r6("log-float", "query_log", "as a `float`", "test_query_log"),
    r6("log-this-engine", "query_log", "Listen on the engine you are given, not on every `Engine`", "test_query_log"),
    r6("slow-limit", "slowest_queries", "it returns the `limit` statements", "test_slowest_queries"),
    r6("slow-database", "slowest_queries", "of the current database", "test_slowest_queries"),
    r6("slow-total", "slowest_queries", "that took the most time in total (most first)", "test_slowest_queries"),
    r6("slow-columns", "slowest_queries", "as rows with the attributes `query`, `calls`, `total_ms` and `mean_ms`", "test_slowest_queries"),
    r6("index-one", "comments_index", "create exactly one index", "test_comments_index"),
    r6("index-serves", "comments_index", "the one that lets PostgreSQL find a post's comments without reading the table", "test_comments_index"),
    r6("index-unchanged", "comments_index", "Do not change the query or the data", "test_comments_index"),
    r6("composite-one", "composite_index", "Create one composite index", "test_composite_index"),
    r6("composite-both", "composite_index", "Create one composite index on `posts` over both columns", "test_composite_index"),
    r6("composite-conditions", "composite_index", "so that PostgreSQL uses both conditions to find the rows", "test_composite_index"),
    r6("composite-entries", "composite_index", "reads only the index entries of that author in that period", "test_composite_index"),
    r6("summaries-statements", "post_summaries", "at most 3 statements in all for any list of up to 500 posts", "test_post_summaries"),
    r6("summaries-same", "post_summaries", "returns exactly the same tuples as the line above", "test_post_summaries"),
    r6("summaries-zero", "post_summaries", "posts without comments included, with 0", "test_post_summaries"),
    r6("summaries-order", "post_summaries", "for the given posts in id order", "test_post_summaries"),
    r6("function-url", "function_engine", "`function_engine(url)` is used by a short-lived function", "test_function_engine"),
    r6("function-no-pool", "function_engine", "Return an engine that keeps no connection open between uses", "test_function_engine"),
    r6("web-size", "web_engine", "keeps at least 5 connections open between requests", "test_web_engine"),
    r6("web-overflow", "web_engine", "absorbs bursts with at least one extra connection", "test_web_engine"),
    r6("web-max", "web_engine", "without ever exceeding 20 in all", "test_web_engine"),
    r6("web-timeout", "web_engine", "makes a request wait at most 10 s for a free connection", "test_web_engine"),
    r6("web-recycle", "web_engine", "replaces connections within 30 minutes of opening them", "test_web_engine"),
    r6("web-pre-ping", "web_engine", "checks a connection before handing it out", "test_web_engine"),
    r6("keyset-index-author", "keyset_index", "PostgreSQL finds the author's posts in the index", "test_keyset_cost"),
    r6("keyset-index", "keyset_index", "reads each page straight from it, in the page's order", "test_keyset_cost"),
    r6("keyset-order", "next_page", "ordered by `created_at` descending", "test_next_page"),
    r6("keyset-tiebreak", "next_page", "then `id` descending", "test_next_page"),
    r6("keyset-ties", "next_page", "two posts may have the same `created_at`: the `id` decides between them", "test_next_page"),
    r6("keyset-rows", "next_page", "as a list of rows with the attributes `id`, `title` and `created_at`", "test_next_page"),
    r6("keyset-limit", "next_page", "It returns the author's next `limit` posts", "test_next_page"),
    r6("keyset-after", "next_page", "The page holds only the posts that come after that post, in that order", "test_next_page"),
    r6("keyset-end", "next_page", "the last page is shorter, and the page after it is empty", "test_next_page"),
    r6("keyset-fetch", "next_page", "Fetch at most `limit` rows from PostgreSQL per page", "test_keyset_cost"),
    r6("keyset-depth", "next_page", "The cursor must be a condition that the index can start reading at", "test_keyset_cost"),
    # ------------------------------------------------------------------ step 7
    r7("get-redis-first", "get_user", "reading Redis first", "test_get_user"),
    r7("get-miss", "get_user", "On a miss, load the profile from PostgreSQL with `load_profile`", "test_get_user"),
    r7("get-json", "get_user", "store it under `user_key(user_id)` as JSON (`json.dumps`)", "test_get_user"),
    r7("get-ttl", "get_user", "with a TTL of `PROFILE_TTL` seconds", "test_get_user"),
    r7("get-hit-ttl", "get_user", "A hit leaves the TTL as it is", "test_get_user"),
    r7("get-hit", "get_user", "On a hit, return `json.loads` of the cached value without touching the database", "test_get_user"),
    r7("get-unknown", "get_user", "For an id that does not exist, return `None` and cache nothing", "test_get_user"),
    r7("update-commit", "update_user_country", "move the user to `country` in PostgreSQL (commit it", "test_update_user_country"),
    r7("update-others", "update_user_country", "no other user changes", "test_update_user_country"),
    r7("update-after-commit", "update_user_country", "once the change is committed", "test_update_user_country"),
    r7("update-stale", "update_user_country", "delete every cached value the change made stale", "test_update_user_country"),
    r7("update-nothing-else", "update_user_country", "and nothing else", "test_update_user_country"),
    r7("update-locked", "update_user_country", "read it in the same transaction as the update, with the user's row locked", "test_update_user_country"),
    r7("warm-top", "warm_top_users", "cache the profiles of the `n` users who wrote the most posts", "test_warm_top_users"),
    r7("warm-ties", "warm_top_users", "(ties: lowest id first)", "test_warm_top_users"),
    r7("warm-as-get-user", "warm_top_users", "exactly as `get_user` would (JSON under `user_key(id)`, TTL `PROFILE_TTL`)", "test_warm_top_users"),
    r7("warm-one-statement", "warm_top_users", "Load the profiles in one statement", "test_warm_top_users"),
    r7("warm-pipeline", "warm_top_users", "at most 2 round trips to Redis, whatever `n` is", "test_warm_top_users"),
    r7("consume-delete", "consume_invalidations", "delete that user's cached profile", "test_consume_invalidations"),
    r7("consume-skip", "consume_invalidations", "skip other types", "test_consume_invalidations"),
    r7("consume-max", "consume_invalidations", "Stop after `max_messages` messages", "test_consume_invalidations"),
    r7("consume-timeout", "consume_invalidations", "or when no message arrives within `timeout` seconds", "test_consume_invalidations"),
    r7("consume-count", "consume_invalidations", "return the number of messages handled", "test_consume_invalidations"),
    r7("stats-in-redis", "hit_rate", "count in Redis, where every application instance adds to the same counters", "test_hit_rate"),
    r7("stats-hit", "hit_rate", "If `key` is cached, count a hit (`INCR stats_key(\"hits\")`) and return the cached value", "test_hit_rate"),
    r7("stats-miss", "hit_rate", "otherwise count a miss (`stats_key(\"misses\")`), call `load()`", "test_hit_rate"),
    r7("stats-ttl", "hit_rate", "cache its JSON with the TTL", "test_hit_rate"),
    r7("stats-rate", "hit_rate", "hits / (hits + misses) from those Redis counters", "test_hit_rate"),
    r7("stats-float", "hit_rate", "as a float; `0.0` before any read", "test_hit_rate"),
    r7("resilient-cache-aside", "get_user_resilient", "the same cache-aside as `get_user`", "test_get_user_resilient"),
    r7("resilient-any-error", "get_user_resilient", "any `redis.RedisError`", "test_get_user_resilient"),
    r7("resilient-read", "get_user_resilient", "when reading", "test_get_user_resilient"),
    r7("resilient-write", "get_user_resilient", "when writing back", "test_get_user_resilient"),
    r7("resilient-warn", "get_user_resilient", "log a warning with `log.warning(...)`", "test_get_user_resilient"),
    r7("resilient-carry-on", "get_user_resilient", "carry on with PostgreSQL", "test_get_user_resilient"),
    r7("jitter-json", "set_with_jitter", "cache `value` as JSON under `key`", "test_set_with_jitter"),
    r7("jitter-range", "set_with_jitter", "a TTL in whole seconds drawn uniformly between `ttl * (1 - spread)` and `ttl * (1 + spread)`", "test_set_with_jitter"),
    r7("jitter-return", "set_with_jitter", "and return that TTL", "test_set_with_jitter"),
    r7("jitter-rng", "set_with_jitter", "Draw it with `rng`, the `random.Random` you are given", "test_set_with_jitter"),
    r7("jitter-one-command", "set_with_jitter", "Set the value and its TTL in one command", "test_set_with_jitter"),
    r7("swr-entry", "get_swr", 'Store an entry under `key` as the JSON `{"value": <the value>, "fresh_until": <time.time() + fresh_for>}`', "test_get_swr"),
    r7("swr-ttl", "get_swr", "with a Redis TTL of `fresh_for + stale_for` seconds", "test_get_swr"),
    r7("swr-miss", "get_swr", "No entry (a miss): call `load()`, store its value, return it", "test_get_swr"),
    r7("swr-fresh", "get_swr", "A fresh entry (`time.time()` before its `fresh_until`): return its value without calling `load()`", "test_get_swr"),
    r7("swr-one-refresh", "get_swr", 'one reader takes the lock `key + ":refresh"` (`SET` with `NX`)', "test_get_swr"),
    r7("swr-lock-expiry", "get_swr", "expiring after `REFRESH_LOCK_SECONDS`", "test_get_swr"),
    r7("swr-new-value", "get_swr", "it calls `load()`, stores the new entry and returns the new value", "test_get_swr"),
    r7("swr-serve-stale", "get_swr", "Every other reader returns the stale value at once, without waiting and without calling `load()`", "test_get_swr"),
    r7("swr-release", "get_swr", "Release the lock when the refresh is done", "test_get_swr"),
    r7("swr-release-error", "get_swr", "also when `load()` raises", "test_get_swr"),
    r7("swr-error-raised", "get_swr", "The error itself reaches the caller", "test_get_swr"),
]  # fmt: skip

CONTEXT = {
    (STEP06, "task1"): [
        "`echo=True` prints SQL, but a log you can analyse needs each statement with its duration.",
        "Use SQLAlchemy's engine events",
        "A place to keep the start time between the two events is `conn.info`",
    ],
    (STEP06, "task2"): [
        "PostgreSQL's `pg_stat_statements` view keeps",
        "The view is cluster-wide",
        "`conn` is a SQLAlchemy `Connection`.",
        "The current database's oid is",
    ],
    (STEP06, "task3"): [
        "A post's page shows its comments with `COMMENTS_OF_POST_SQL` (below).",
        "Today PostgreSQL reads the whole `comments` table to find a handful of rows.",
    ],
    (STEP06, "task4"): [
        "An author's dashboard lists their posts since a date",
        "The column order is the whole question.",
        "Either order gives an index over both columns",
        "Before you decide, try both and compare the buffers",
    ],
    (STEP06, "task5"): [
        "Written the obvious way, it loads the posts in one statement",
        "Tell SQLAlchemy which relationships to load together with the posts",
    ],
    (STEP06, "task6"): [
        "`function_engine(url)` is used by a short-lived function",
        "`web_engine(url)` serves a long-running web server with several worker threads.",
        "The database allows this application at most 20 connections",
        "Return an engine whose pool",
    ],
    (STEP06, "task7"): [
        "An author's page lists their posts newest first",
        "With `OFFSET`, PostgreSQL reads every row of the pages before the one asked for",
        "Keyset pagination starts each page where the previous one ended instead.",
        "Complete `next_page(conn, author_id, after, limit)`.",
        "`conn` is a SQLAlchemy `Connection`.",
        "`after` is `None` for the first page",
    ],
    (STEP07, "task1"): [],
    (STEP07, "task2"): [
        "Besides profiles, other code caches the list of each country's users",
        "Think about which lists mention the user before and after the move.",
        "Several application instances run this code.",
    ],
    (STEP07, "task3"): [
        "A new application instance starts with an empty cache",
        "One command per user would be `n` round trips.",
    ],
    (STEP07, "task4"): [
        "Complete `consume_invalidations(r, subscriber, max_messages, timeout)`.",
        "Several application instances cache profiles",
        "`subscriber` is a `redis.client.PubSub` already subscribed to the channel.",
    ],
    (STEP07, "task5"): ["`cached_with_stats(r, key, load, ttl)`: cache-aside for any JSON value."],
    (STEP07, "task6"): [
        "A cache must never make a read fail.",
        "The test runs your function against a private Redis server",
    ],
    (STEP07, "task7"): [
        "Task 3 warms many profiles at the same moment, with the same TTL",
        "Jitter spreads the expiries",
    ],
    (STEP07, "task8"): [
        "A lock against the stampede still makes readers wait",
        "Stale-while-revalidate goes on serving the old value for a while instead",
        "Complete `get_swr(r, key, load, fresh_for, stale_for)`",
    ],
}

SOURCE = Path(__file__).resolve().parents[2] / "grading" / "source" / "01-performance"
SOLUTIONS = {nb: grading.solution_cells(SOURCE / nb) for nb in (STEP06, STEP07)}
BY_ID = {r.id: r for r in REQUIREMENTS}


def variant(requirement: Requirement, *edits: tuple[str, str]) -> str:
    """The solution of the requirement's answer cell with each (old, new) edit applied once."""
    text = SOLUTIONS[requirement.notebook][requirement.answer]
    for old, new in edits:
        assert old in text, f"{requirement.id}: {old!r} is not in the solution"
        text = text.replace(old, new, 1)
    return text


def case(breaks: str, name: str, *edits: tuple[str, str], answer: str | None = None,
         source: str = "course") -> dict:  # fmt: skip
    """A wrong answer that breaks only ``breaks``: the solution with ``edits`` (or ``answer``)."""
    requirement = BY_ID[breaks]
    return {
        "name": name,
        "breaks": breaks,
        "notebook": requirement.notebook,
        "answers": {requirement.answer: answer or variant(requirement, *edits)},
        "loses": [requirement.test],
        "source": source,
    }


SWR_REFRESH = """    try:
        value = load()
        entry = {"value": value, "fresh_until": time.time() + fresh_for}
        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)
        return value
    finally:
        if cached is not None:
            r.delete(key + ":refresh")
"""  # the refresh in get_swr's solution (task 8 of step 7)

CASES = [
    # ------------------------------------------------------------------ step 6, task 1
    case(
        "log-each",
        "logs only the queries (SELECT), not the writes",
        (
            "        log.append((statement, (time.perf_counter() - started) * 1000))",
            '        if statement.lstrip().upper().startswith("SELECT"):\n'
            "            log.append((statement, (time.perf_counter() - started) * 1000))",
        ),
    ),
    case(
        "log-sql",
        "logs the parameters instead of the SQL text",
        ("log.append((statement,", "log.append((str(parameters),"),
    ),
    case("log-ms", "logs durations in seconds, not milliseconds", (" * 1000))", "))")),
    case("log-ms", "logs durations in microseconds", (" * 1000))", " * 1_000_000))")),
    case(
        "log-float",
        "rounds the duration to whole milliseconds (an int)",
        (
            "log.append((statement, (time.perf_counter() - started) * 1000))",
            "log.append((statement, round((time.perf_counter() - started) * 1000)))",
        ),
    ),
    case(
        "log-this-engine",
        "listens on the Engine class: every engine writes to this log",
        (
            'event.listen(engine, "before_cursor_execute", before)',
            'event.listen(Engine, "before_cursor_execute", before)',
        ),
        (
            'event.listen(engine, "after_cursor_execute", after)',
            'event.listen(Engine, "after_cursor_execute", after)',
        ),
    ),
    # ------------------------------------------------------------------ step 6, task 2
    case(
        "slow-limit",
        "always five statements, whatever limit is",
        (
            'return conn.execute(statement, {"limit": limit}).all()',
            'return conn.execute(statement, {"limit": 5}).all()',
        ),
    ),
    case(
        "slow-database",
        "reads pg_stat_statements cluster-wide",
        (
            "        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())\n",
            "",
        ),
    ),
    case(
        "slow-total",
        "ranks statements by how often they ran, not by total time",
        ("ORDER BY total_exec_time DESC", "ORDER BY calls DESC"),
    ),
    case(
        "slow-total",
        "ranks statements by their mean time per call, not by their total time",
        ("ORDER BY total_exec_time DESC", "ORDER BY mean_exec_time DESC"),
    ),
    case(
        "slow-columns",
        "reports the slowest call as mean_ms",
        ("mean_exec_time AS mean_ms", "max_exec_time AS mean_ms"),
    ),
    # ------------------------------------------------------------------ step 6, task 3
    case(
        "index-serves",
        "indexes the wrong column (comments.author_id)",
        (
            "ix_comments_post_id ON comments (post_id)",
            "ix_comments_author_id ON comments (author_id)",
        ),
    ),
    case(
        "index-serves",
        "a partial index that covers the posts the learner tried",
        ("ON comments (post_id)", "ON comments (post_id) WHERE post_id <= 1000"),
    ),
    case(
        "index-unchanged",
        "makes the table smaller by deleting old comments first",
        (
            "with engine.begin() as conn:\n",
            "with engine.begin() as conn:\n"
            "    conn.execute(text(\"DELETE FROM comments WHERE created_at < '2025-01-15'\"))\n",
        ),
    ),
    # ------------------------------------------------------------------ step 6, task 4
    case(
        "composite-both",
        "author_id alone in the index",
        (
            "ix_posts_author_created ON posts (author_id, created_at)",
            "ix_posts_author ON posts (author_id)",
        ),
    ),
    case(
        "composite-conditions",
        "two single-column indexes instead of one composite",
        (
            '        text("CREATE INDEX IF NOT EXISTS ix_posts_author_created ON posts (author_id, created_at)")\n',
            '        text("CREATE INDEX IF NOT EXISTS ix_posts_created ON posts (created_at)")\n',
        ),
    ),
    case(
        "composite-entries",
        "puts the range column first in the composite index",
        ("(author_id, created_at)", "(created_at, author_id)"),
    ),
    # ------------------------------------------------------------------ step 6, task 5
    case(
        "summaries-statements",
        "eager-loads the comments' authors instead of the post's author",
        (
            "joinedload(Post.author), selectinload(Post.comments)",
            "selectinload(Post.comments).joinedload(Comment.author)",
        ),
    ),
    case(
        "summaries-same",
        "loads the comments of the first post only",
        (
            "selectinload(Post.comments)",
            "selectinload(Post.comments.and_(Comment.post_id == post_ids[0]))",
        ),
    ),
    case(
        "summaries-zero",
        "an inner join to the comments drops the posts without comments",
        (
            "        select(Post)\n",
            "        select(Post)\n        .join(Post.comments)\n        .distinct()\n",
        ),
    ),
    case("summaries-order", "drops the ORDER BY", ("        .order_by(Post.id)\n", "")),
    # ------------------------------------------------------------------ step 6, task 6
    case(
        "function-no-pool",
        "a pool of one connection for the short-lived function (connection_limit=1)",
        ("poolclass=NullPool", "pool_size=1, max_overflow=0"),
    ),
    case(
        "web-size",
        "a pool of three",
        ("pool_size=10", "pool_size=3"),
    ),
    case("web-overflow", "no overflow: a burst waits", ("max_overflow=10", "max_overflow=0")),
    case("web-max", "20 in the pool and 10 more in bursts", ("pool_size=10", "pool_size=20")),
    case(
        "web-timeout", "waits the default 30 s for a connection", ("        pool_timeout=10,\n", "")
    ),
    case("web-recycle", "recycles after an hour", ("pool_recycle=1800", "pool_recycle=3600")),
    case(
        "web-pre-ping",
        "a web pool without pre-ping: a connection the server closed fails a request",
        ("        pool_pre_ping=True,\n", ""),
    ),
    # ------------------------------------------------------------------ step 6, task 7
    case(
        "keyset-index",
        "reuses the columns of task 4's index (author_id, created_at): each page is sorted again",
        ("(author_id, created_at DESC, id DESC)", "(author_id, created_at)"),
    ),
    case(
        "keyset-index",
        "indexes (author_id, id): the rows come in id order, not the page's",
        ("(author_id, created_at DESC, id DESC)", "(author_id, id)"),
    ),
    case(
        "keyset-index-author",
        "indexes the page's order without the author: (created_at DESC, id DESC)",
        ("(author_id, created_at DESC, id DESC)", "(created_at DESC, id DESC)"),
    ),
    case(
        "keyset-order",
        "pages oldest first (ascending order, cursor compared with >)",
        ("Post.created_at.desc(), Post.id.desc()", "Post.created_at.asc(), Post.id.asc()"),
        ("Post.id) < after", "Post.id) > after"),
    ),
    case(
        "keyset-tiebreak",
        "compares the pair (created_at, id) but orders by created_at alone",
        ("Post.created_at.desc(), Post.id.desc()", "Post.created_at.desc()"),
    ),
    {  # no index returns this order either: the cost test fails too
        **case(
            "keyset-tiebreak",
            "orders ties by id ascending while the cursor compares the pair with <",
            ("Post.created_at.desc(), Post.id.desc()", "Post.created_at.desc(), Post.id.asc()"),
        ),
        "loses": ["test_next_page", "test_keyset_cost"],
    },
    case(
        "keyset-ties",
        "the cursor compares created_at only: posts in the same second as the cursor are skipped",
        ("tuple_(Post.created_at, Post.id) < after", "Post.created_at < after[0]"),
    ),
    case(
        "keyset-rows",
        "returns the ids only (conn.scalars)",
        ("return conn.execute(query.order_by", "return conn.scalars(query.order_by"),
    ),
    case(
        "keyset-rows",
        "returns the result object, not a list of rows",
        (".limit(limit)).all()", ".limit(limit))"),
    ),
    case("keyset-limit", "pages of 10 posts, whatever limit is", (".limit(limit)", ".limit(10)")),
    {  # it also fetches more than limit rows: the cost test fails too
        **case(
            "keyset-limit",
            "fetches one more post to see whether a next page exists, and returns it too",
            (".limit(limit)", ".limit(limit + 1)"),
        ),
        "loses": ["test_next_page", "test_keyset_cost"],
    },
    case(
        "keyset-after",
        "compares with <=: each page starts again with the cursor's own post",
        ("Post.id) < after", "Post.id) <= after"),
    ),
    case(
        "keyset-after",
        "compares the cursor the wrong way (>): the next page holds newer posts",
        ("Post.id) < after", "Post.id) > after"),
    ),
    case(
        "keyset-end",
        "returns None instead of an empty page after the last one",
        (".limit(limit)).all()", ".limit(limit)).all() or None"),
    ),
    case(
        "keyset-fetch",
        "no LIMIT in the query: the page is cut in Python",
        (".limit(limit)).all()", ").all()[:limit]"),
    ),
    case(
        "keyset-depth",
        "OFFSET paging: counts the posts up to the cursor, then skips them",
        (
            "    return conn.execute(query.order_by(",
            "    skip = 0\n"
            "    if after is not None:\n"
            "        newer = tuple_(Post.created_at, Post.id) >= after\n"
            "        skip = conn.scalar(\n"
            "            select(func.count()).where(Post.author_id == author_id, newer)\n"
            "        )\n"
            "    return conn.execute(query.order_by(",
        ),
        (
            "    if after is not None:\n        query = query.where(tuple_(Post.created_at, Post.id) < after)\n",
            "",
        ),
        (".limit(limit)", ".offset(skip).limit(limit)"),
    ),
    case(
        "keyset-depth",
        "the cursor as an OR (older, or as old with a smaller id): the index cannot start there",
        (
            "query.where(tuple_(Post.created_at, Post.id) < after)",
            "query.where(\n"
            "            (Post.created_at < after[0])\n"
            "            | ((Post.created_at == after[0]) & (Post.id < after[1]))\n"
            "        )",
        ),
    ),
    # ------------------------------------------------------------------ step 7, task 1
    case(
        "get-redis-first",
        "reads PostgreSQL first and caches what it read",
        (
            "    cached = r.get(key)\n    if cached is not None:\n        return json.loads(cached)\n",
            "",
        ),
    ),
    case(
        "get-miss",
        "returns the cached value, or None on a miss",
        ("    found = load_profile(user_id)\n", "    found = None\n"),
    ),
    case(
        "get-json",
        "caches the dict's repr, and reads it back with eval",
        ("json.dumps(found)", "repr(found)"),
        ("return json.loads(cached)", "return eval(cached)"),
    ),
    case("get-ttl", "a cache that never expires", (", ex=PROFILE_TTL", "")),
    case("get-ttl", "a TTL of one minute", ("ex=PROFILE_TTL", "ex=60")),
    case(
        "get-hit",
        "checks the database on every hit",
        (
            "        return json.loads(cached)\n",
            "        load_profile(user_id)\n        return json.loads(cached)\n",
        ),
    ),
    case(
        "get-unknown",
        "caches an unknown user as JSON null",
        ("    if found is not None:\n        r.set(", "    if True:\n        r.set("),
    ),
    # ------------------------------------------------------------------ step 7, task 2
    case(
        "update-commit",
        "runs the UPDATE on a connection that is never committed",
        ("with engine.begin() as conn:", "with engine.connect() as conn:"),
    ),
    case(
        "update-others",
        "the UPDATE without its WHERE moves every user",
        (
            "conn.execute(update(User).where(User.id == user_id).values(country=country))",
            "conn.execute(update(User).values(country=country))",
        ),
    ),
    case(
        "update-after-commit",
        "deletes the keys inside the transaction, before the commit",
        (
            "        conn.execute(update(User).where(User.id == user_id).values(country=country))\n"
            "    r.delete(user_key(user_id), country_key(old), country_key(country))",
            "        conn.execute(update(User).where(User.id == user_id).values(country=country))\n"
            "        r.delete(user_key(user_id), country_key(old), country_key(country))",
        ),
    ),
    case(
        "update-stale",
        "invalidates the new country's list but not the old one's",
        (
            "r.delete(user_key(user_id), country_key(old), country_key(country))",
            "r.delete(user_key(user_id), country_key(country))",
        ),
    ),
    case(
        "update-nothing-else",
        "deletes every country's list",
        (
            "r.delete(user_key(user_id), country_key(old), country_key(country))",
            'r.delete(user_key(user_id), *(country_key(c) for c in ("US", "IN", "DE", "GB", "BR", '
            '"FR", "JP", "NG", "CA", "ES", "PL", "KE")))',
        ),
    ),
    case(
        "update-locked", "reads the old country without locking the row", (".with_for_update()", "")
    ),
    # ------------------------------------------------------------------ step 7, task 3
    case(
        "warm-top",
        "counts only the published posts",
        (
            ".join(Post, Post.author_id == User.id)",
            ".join(Post, (Post.author_id == User.id) & Post.published)",
        ),
    ),
    case(
        "warm-ties",
        "warms without the id tie-break",
        (".order_by(func.count(Post.id).desc(), User.id)", ".order_by(func.count(Post.id).desc())"),
    ),
    case("warm-as-get-user", "warmed keys never expire", (", ex=PROFILE_TTL", "")),
    case(
        "warm-one-statement",
        "one load_profile per user",
        (
            "            pipe.set(user_key(row.id), json.dumps(profile(row)), ex=PROFILE_TTL)",
            "            pipe.set(user_key(row.id), json.dumps(load_profile(row.id)), ex=PROFILE_TTL)",
        ),
    ),
    case(
        "warm-pipeline",
        "warms the cache with one SET per user (no pipeline)",
        (
            "    with r.pipeline(transaction=False) as pipe:\n"
            "        for row in rows:\n"
            "            pipe.set(user_key(row.id), json.dumps(profile(row)), ex=PROFILE_TTL)\n"
            "        pipe.execute()",
            "    for row in rows:\n"
            "        r.set(user_key(row.id), json.dumps(profile(row)), ex=PROFILE_TTL)",
        ),
    ),
    # ------------------------------------------------------------------ step 7, task 4
    case(
        "consume-delete",
        "deletes a key built from the raw message instead of the user id",
        (
            'r.delete(user_key(json.loads(message["data"])["user_id"]))',
            'r.delete(user_key(message["data"]))',
        ),
    ),
    case(
        "consume-skip",
        "takes every pub/sub message for an invalidation",
        ('        if message["type"] != "message":\n            continue\n', ""),
    ),
    case(
        "consume-max",
        "drains every waiting message, whatever max_messages is",
        ("    while handled < max_messages:", "    while True:"),
    ),
    case(
        "consume-timeout",
        "does not wait for a message: get_message() returns at once",
        ("subscriber.get_message(timeout=timeout)", "subscriber.get_message()"),
    ),
    case(
        "consume-count",
        "counts the subscribe confirmations as handled messages",
        (
            '        if message["type"] != "message":\n            continue\n',
            '        if message["type"] != "message":\n            handled += 1\n            continue\n',
        ),
    ),
    # ------------------------------------------------------------------ step 7, task 5
    case(
        "stats-in-redis",
        "counts hits and misses in the process, not in Redis",
        answer="""counters = {"hits": 0, "misses": 0}


def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):
    cached = r.get(key)
    if cached is not None:
        counters["hits"] += 1
        return json.loads(cached)
    counters["misses"] += 1
    value = load()
    r.set(key, json.dumps(value), ex=ttl)
    return value


def hit_rate(r) -> float:
    total = counters["hits"] + counters["misses"]
    return counters["hits"] / total if total else 0.0""",
    ),
    case(
        "stats-hit",
        "counts a hit as a miss",
        ('        r.incr(stats_key("hits"))', '        r.incr(stats_key("misses"))'),
    ),
    case("stats-miss", "does not count misses", ('    r.incr(stats_key("misses"))\n', "")),
    case("stats-ttl", "caches without a TTL", (", ex=ttl)", ")")),
    case(
        "stats-ttl", "uses PROFILE_TTL instead of the ttl it is given", ("ex=ttl", "ex=PROFILE_TTL")
    ),
    case(
        "stats-rate",
        "hits / misses instead of hits / (hits + misses)",
        ("return hits / total if total else 0.0", "return hits / misses if misses else 0.0"),
    ),
    case(
        "stats-float",
        "returns the integer 0 before any read",
        ("if total else 0.0", "if total else 0"),
    ),
    # ------------------------------------------------------------------ step 7, task 6
    case("resilient-cache-aside", "the write-back forgets the TTL", (", ex=PROFILE_TTL)", ")")),
    case(
        "resilient-any-error",
        "only ConnectionError caught (a Redis that hangs raises TimeoutError)",
        (
            '    except redis.RedisError as exc:\n        log.warning("cache read',
            '    except redis.ConnectionError as exc:\n        log.warning("cache read',
        ),
        (
            '        except redis.RedisError as exc:\n            log.warning("cache write',
            '        except redis.ConnectionError as exc:\n            log.warning("cache write',
        ),
    ),
    case(
        "resilient-read",
        "guards the write-back but not the read",
        (
            "    try:\n        cached = r.get(key)\n    except redis.RedisError as exc:\n"
            '        log.warning("cache read of %s failed (%s): reading PostgreSQL", key, exc)\n'
            "        cached = None\n",
            "    cached = r.get(key)\n",
        ),
    ),
    case(
        "resilient-write",
        "guards the cache read but not the write-back",
        (
            "        try:\n            r.set(key, json.dumps(found), ex=PROFILE_TTL)\n"
            '        except redis.RedisError as exc:\n            log.warning("cache write of %s failed (%s)", key, exc)\n',
            "        r.set(key, json.dumps(found), ex=PROFILE_TTL)\n",
        ),
    ),
    case(
        "resilient-warn",
        "swallows a failed read without a warning",
        ('        log.warning("cache read of %s failed (%s): reading PostgreSQL", key, exc)\n', ""),
    ),
    case(
        "resilient-warn",
        "logs the failures at debug level",
        ('log.warning("cache read', 'log.debug("cache read'),
        ('log.warning("cache write', 'log.debug("cache write'),
    ),
    case(
        "resilient-carry-on",
        "returns None when Redis fails instead of reading PostgreSQL",
        ("        cached = None\n", "        return None\n"),
    ),
    # ------------------------------------------------------------------ step 7, task 7
    case("jitter-json", "caches str(value), not its JSON", ("json.dumps(value)", "str(value)")),
    case(
        "jitter-range",
        "only longer TTLs: from ttl to ttl * (1 + spread)",
        ("rng.uniform(ttl * (1 - spread),", "rng.uniform(ttl,"),
    ),
    case(
        "jitter-range",
        "reads spread as seconds: ttl ± 0.1 s, every TTL the same once rounded",
        (
            "rng.uniform(ttl * (1 - spread), ttl * (1 + spread))",
            "ttl + rng.uniform(-spread, spread)",
        ),
    ),
    case(
        "jitter-range",
        "a normal draw around ttl (gauss), not a uniform one within the bounds",
        (
            "rng.uniform(ttl * (1 - spread), ttl * (1 + spread))",
            "rng.gauss(ttl, ttl * spread)",
        ),
    ),
    case(
        "jitter-return",
        "returns the nominal ttl, not the TTL it set",
        ("return seconds", "return ttl"),
    ),
    case(
        "jitter-rng",
        "draws with the random module instead of the rng it is given",
        ("rng.uniform(", "random.uniform("),
    ),
    case(
        "jitter-one-command",
        "SET, then EXPIRE: two commands",
        (
            "r.set(key, json.dumps(value), ex=seconds)",
            "r.set(key, json.dumps(value))\n    r.expire(key, seconds)",
        ),
    ),
    # ------------------------------------------------------------------ step 7, task 8
    case(
        "swr-entry",
        "fresh_until in milliseconds",
        ("time.time() + fresh_for}", "(time.time() + fresh_for) * 1000}"),
    ),
    case(
        "swr-ttl",
        "the entry expires when it goes stale: nothing stale is ever served",
        ("ex=fresh_for + stale_for)", "ex=fresh_for)"),
    ),
    case(
        "swr-miss",
        "a miss returns the stored entry, not the value",
        answer="""REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock


def get_swr(r, key: str, load, fresh_for: int, stale_for: int):
    cached = r.get(key)
    if cached is None:
        entry = {"value": load(), "fresh_until": time.time() + fresh_for}
        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)
        return entry
    entry = json.loads(cached)
    if time.time() < entry["fresh_until"]:
        return entry["value"]
    if not r.set(key + ":refresh", 1, nx=True, ex=REFRESH_LOCK_SECONDS):
        return entry["value"]
    try:
        value = load()
        r.set(key, json.dumps({"value": value, "fresh_until": time.time() + fresh_for}),
              ex=fresh_for + stale_for)
        return value
    finally:
        r.delete(key + ":refresh")""",
    ),
    case(
        "swr-fresh",
        "compares fresh_until the wrong way: fresh entries are reloaded, stale ones served",
        ('if time.time() < entry["fresh_until"]:', 'if time.time() > entry["fresh_until"]:'),
    ),
    case(
        "swr-one-refresh",
        "no lock: every reader of a stale entry refreshes it",
        (
            '        if not r.set(key + ":refresh", "refreshing", nx=True, ex=REFRESH_LOCK_SECONDS):\n'
            '            return entry["value"]  # another reader refreshes it: serve the stale value\n',
            "",
        ),
    ),
    case(
        "swr-lock-expiry",
        "a refresh lock without an expiry",
        (", nx=True, ex=REFRESH_LOCK_SECONDS)", ", nx=True)"),
    ),
    case(
        "swr-new-value",
        "the refreshing reader returns the stale value too",
        (
            "        return value\n    finally:",
            '        return json.loads(cached)["value"] if cached is not None else value\n'
            "    finally:",
        ),
    ),
    case(
        "swr-serve-stale",
        "the other readers wait for the refresh, then read the new entry",
        (
            '            return entry["value"]  # another reader refreshes it: serve the stale value\n',
            '            while r.exists(key + ":refresh"):\n'
            "                time.sleep(0.01)\n"
            '            return json.loads(r.get(key))["value"]\n',
        ),
    ),
    case(
        "swr-release",
        "never releases the lock: it waits for the lock to expire",
        (
            SWR_REFRESH,
            SWR_REFRESH.replace("    try:\n", "")
            .replace("        ", "    ")
            .split("    finally:")[0],
        ),
    ),
    case(
        "swr-release-error",
        "releases the lock after a successful refresh only",
        (
            SWR_REFRESH,
            "    value = load()\n"
            '    entry = {"value": value, "fresh_until": time.time() + fresh_for}\n'
            "    r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n"
            "    if cached is not None:\n"
            '        r.delete(key + ":refresh")\n'
            "    return value\n",
        ),
    ),
]

# Written by an outside reviewer from the student version and the task text only (they never
# saw the tests); kept as they wrote them.
CASES += [
    {
        "name": "listens on the Engine class: every engine writes to this log",
        "breaks": "log-this-engine",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "query_log": "def install_query_log(engine: Engine, log: list) -> None:\n"
            '    """Append (sql, duration_ms) to `log` for every statement `engine` '
            'executes."""\n'
            "\n"
            "    def before(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        conn.info.setdefault("query_start", '
            "[]).append(time.perf_counter())\n"
            "\n"
            "    def after(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        started = conn.info["query_start"].pop()\n'
            "        log.append((statement, (time.perf_counter() - started) * "
            "1000.0))\n"
            "\n"
            '    event.listen(Engine, "before_cursor_execute", before)\n'
            '    event.listen(Engine, "after_cursor_execute", after)'
        },
        "loses": ["test_query_log"],
        "source": "outside review",
    },
    {
        "name": "start time kept in one shared closure variable, not per connection (threads clobber it)",
        "breaks": "log-duration",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "query_log": "def install_query_log(engine: Engine, log: list) -> None:\n"
            '    """Append (sql, duration_ms) to `log` for every statement `engine` '
            'executes."""\n'
            '    started = {"t": 0.0}\n'
            "\n"
            "    def before(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        started["t"] = time.perf_counter()\n'
            "\n"
            "    def after(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        log.append((statement, (time.perf_counter() - started["t"]) * '
            "1000.0))\n"
            "\n"
            '    event.listen(engine, "before_cursor_execute", before)\n'
            '    event.listen(engine, "after_cursor_execute", after)'
        },
        "loses": ["test_query_log"],
        "source": "outside review",
    },
    {
        "name": "logs microseconds",
        "breaks": "log-ms",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "query_log": "def install_query_log(engine: Engine, log: list) -> None:\n"
            '    """Append (sql, duration_ms) to `log` for every statement `engine` '
            'executes."""\n'
            "\n"
            "    def before(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        conn.info.setdefault("query_start", '
            "[]).append(time.perf_counter())\n"
            "\n"
            "    def after(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        started = conn.info["query_start"].pop()\n'
            "        log.append((statement, (time.perf_counter() - started) * "
            "1_000_000.0))\n"
            "\n"
            '    event.listen(engine, "before_cursor_execute", before)\n'
            '    event.listen(engine, "after_cursor_execute", after)'
        },
        "loses": ["test_query_log"],
        "source": "outside review",
    },
    {
        "name": "logs the SQLAlchemy-compiled SQL (:name params) instead of what the driver received",
        "breaks": "log-sql",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "query_log": "def install_query_log(engine: Engine, log: list) -> None:\n"
            '    """Append (sql, duration_ms) to `log` for every statement `engine` '
            'executes."""\n'
            "\n"
            "    def before(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        conn.info.setdefault("query_start", '
            "[]).append(time.perf_counter())\n"
            "\n"
            "    def after(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        started = conn.info["query_start"].pop()\n'
            "        log.append((str(context.compiled) if context.compiled is not "
            "None else statement, (time.perf_counter() - started) * 1000.0))\n"
            "\n"
            '    event.listen(engine, "before_cursor_execute", before)\n'
            '    event.listen(engine, "after_cursor_execute", after)'
        },
        "loses": ["test_query_log"],
        "source": "outside review",
    },
    {
        "name": "appends a list [sql, ms] instead of a tuple",
        "breaks": "log-each",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "query_log": "def install_query_log(engine: Engine, log: list) -> None:\n"
            '    """Append (sql, duration_ms) to `log` for every statement `engine` '
            'executes."""\n'
            "\n"
            "    def before(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        conn.info.setdefault("query_start", '
            "[]).append(time.perf_counter())\n"
            "\n"
            "    def after(conn, cursor, statement, parameters, context, "
            "executemany):\n"
            '        started = conn.info["query_start"].pop()\n'
            "        log.append([statement, (time.perf_counter() - started) * "
            "1000.0])\n"
            "\n"
            '    event.listen(engine, "before_cursor_execute", before)\n'
            '    event.listen(engine, "after_cursor_execute", after)'
        },
        "loses": ["test_query_log"],
        "source": "outside review",
    },
    {
        "name": "orders by mean time instead of total",
        "breaks": "slow-total",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "slowest_queries": "def slowest_queries(conn, limit: int = 5) -> list:\n"
            '    """This database\'s statements that took the most total '
            'time, most first."""\n'
            "    statement = text(\n"
            '        "SELECT query, calls, total_exec_time AS total_ms, '
            'mean_exec_time AS mean_ms "\n'
            '        "FROM pg_stat_statements "\n'
            '        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname '
            '= current_database()) "\n'
            '        "ORDER BY mean_exec_time DESC LIMIT :limit"\n'
            "    )\n"
            '    return conn.execute(statement, {"limit": limit}).all()'
        },
        "loses": ["test_slowest_queries"],
        "source": "outside review",
    },
    {
        "name": "total_ms and mean_ms converted to seconds",
        "breaks": "slow-columns",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "slowest_queries": "def slowest_queries(conn, limit: int = 5) -> list:\n"
            '    """This database\'s statements that took the most total '
            'time, most first."""\n'
            "    statement = text(\n"
            '        "SELECT query, calls, total_exec_time / 1000 AS '
            'total_ms, mean_exec_time / 1000 AS mean_ms "\n'
            '        "FROM pg_stat_statements "\n'
            '        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname '
            '= current_database()) "\n'
            '        "ORDER BY total_exec_time DESC LIMIT :limit"\n'
            "    )\n"
            '    return conn.execute(statement, {"limit": limit}).all()'
        },
        "loses": ["test_slowest_queries"],
        "source": "outside review",
    },
    {
        "name": "no dbid filter (cluster-wide)",
        "breaks": "slow-database",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "slowest_queries": "def slowest_queries(conn, limit: int = 5) -> list:\n"
            '    """This database\'s statements that took the most total '
            'time, most first."""\n'
            "    statement = text(\n"
            '        "SELECT query, calls, total_exec_time AS total_ms, '
            'mean_exec_time AS mean_ms "\n'
            '        "FROM pg_stat_statements "\n'
            '                "ORDER BY total_exec_time DESC LIMIT :limit"\n'
            "    )\n"
            '    return conn.execute(statement, {"limit": limit}).all()'
        },
        "loses": ["test_slowest_queries"],
        "source": "outside review",
    },
    {
        "name": "filters by current user instead of current database",
        "breaks": "slow-database",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "slowest_queries": "def slowest_queries(conn, limit: int = 5) -> list:\n"
            '    """This database\'s statements that took the most total '
            'time, most first."""\n'
            "    statement = text(\n"
            '        "SELECT query, calls, total_exec_time AS total_ms, '
            'mean_exec_time AS mean_ms "\n'
            '        "FROM pg_stat_statements "\n'
            '        "WHERE userid = (SELECT oid FROM pg_roles WHERE rolname '
            '= current_user) "\n'
            '        "ORDER BY total_exec_time DESC LIMIT :limit"\n'
            "    )\n"
            '    return conn.execute(statement, {"limit": limit}).all()'
        },
        "loses": ["test_slowest_queries"],
        "source": "outside review",
    },
    {
        "name": "orders by calls",
        "breaks": "slow-total",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "slowest_queries": "def slowest_queries(conn, limit: int = 5) -> list:\n"
            '    """This database\'s statements that took the most total '
            'time, most first."""\n'
            "    statement = text(\n"
            '        "SELECT query, calls, total_exec_time AS total_ms, '
            'mean_exec_time AS mean_ms "\n'
            '        "FROM pg_stat_statements "\n'
            '        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname '
            '= current_database()) "\n'
            '        "ORDER BY calls DESC, total_exec_time DESC LIMIT '
            ':limit"\n'
            "    )\n"
            '    return conn.execute(statement, {"limit": limit}).all()'
        },
        "loses": ["test_slowest_queries"],
        "source": "outside review",
    },
    {
        "name": "creates extra indexes besides the one needed",
        "breaks": "index-one",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "comments_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX comments_post_id_idx ON '
            'comments (post_id)"))\n'
            '    conn.execute(text("CREATE INDEX comments_author_id_idx ON '
            'comments (author_id)"))\n'
            '    conn.execute(text("CREATE INDEX comments_created_at_idx ON '
            'comments (created_at)"))'
        },
        "loses": ["test_comments_index"],
        "source": "outside review",
    },
    {
        "name": "turns sequential scans off for the database instead of indexing",
        "breaks": "index-serves",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "comments_index": "with engine.begin() as conn:\n"
            "    conn.execute(text(\"DO $$ BEGIN EXECUTE format('ALTER "
            "DATABASE %I SET enable_seqscan = off', current_database()); END "
            '$$"))'
        },
        "loses": ["test_comments_index"],
        "source": "outside review",
    },
    {
        "name": "partial index that covers only the posts the learner tried",
        "breaks": "index-serves",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "comments_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX comments_post_id_idx ON '
            'comments (post_id) WHERE post_id <= 1000"))'
        },
        "loses": ["test_comments_index"],
        "source": "outside review",
    },
    {
        "name": "composite index with post_id second (id, post_id)",
        "breaks": "index-serves",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "comments_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX comments_post_id_idx ON '
            'comments (id, post_id)"))'
        },
        "loses": ["test_comments_index"],
        "source": "outside review",
    },
    {
        "name": "creates the index and runs a clean-up DELETE of one post's comments while at it "
        "(changes data)",
        "breaks": "index-unchanged",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "comments_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX comments_post_id_idx ON '
            'comments (post_id)"))\n'
            '    conn.execute(text("DELETE FROM comments WHERE post_id = 3"))'
        },
        "loses": ["test_comments_index"],
        "source": "outside review",
    },
    {
        "name": "wrong column order (created_at, author_id)",
        "breaks": "composite-entries",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "composite_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX posts_author_created_idx ON '
            'posts (created_at, author_id)"))'
        },
        "loses": ["test_composite_index"],
        "source": "outside review",
    },
    {
        "name": "two single-column indexes instead of one composite",
        "breaks": "composite-one",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "composite_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX posts_author_idx ON posts '
            '(author_id)"))\n'
            '    conn.execute(text("CREATE INDEX posts_created_idx ON posts '
            '(created_at)"))'
        },
        "loses": ["test_composite_index"],
        "source": "outside review",
    },
    {
        "name": "tried both orders and kept both indexes",
        "breaks": "composite-one",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "composite_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX posts_author_created_idx ON '
            'posts (author_id, created_at)"))\n'
            '    conn.execute(text("CREATE INDEX posts_created_author_idx ON '
            'posts (created_at, author_id)"))'
        },
        "loses": ["test_composite_index"],
        "source": "outside review",
    },
    {
        "name": "composite index plus an extra single-column index on author_id",
        "breaks": "composite-one",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "composite_index": "with engine.begin() as conn:\n"
            '    conn.execute(text("CREATE INDEX posts_author_created_idx ON '
            'posts (author_id, created_at)"))\n'
            '    conn.execute(text("CREATE INDEX posts_author_idx ON posts '
            '(author_id)"))'
        },
        "loses": ["test_composite_index"],
        "source": "outside review",
    },
    {
        "name": "inner-join eager load of comments drops posts without comments",
        "breaks": "summaries-zero",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "post_summaries": "def post_summaries(session: Session, post_ids: list[int]) -> "
            "list[tuple[int, str, str, int]]:\n"
            "    posts = session.scalars(\n"
            "        select(Post)\n"
            "        .where(Post.id.in_(post_ids))\n"
            "        .options(joinedload(Post.author), "
            "joinedload(Post.comments, innerjoin=True))\n"
            "        .order_by(Post.id)\n"
            "    ).unique().all()\n"
            "    return [(post.id, post.title, post.author.name, "
            "len(post.comments)) for post in posts]"
        },
        "loses": ["test_post_summaries"],
        "source": "outside review",
    },
    {
        "name": "assumes contiguous ids (BETWEEN min and max)",
        "breaks": "summaries-same",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "post_summaries": "def post_summaries(session: Session, post_ids: list[int]) -> "
            "list[tuple[int, str, str, int]]:\n"
            "    posts = session.scalars(\n"
            "        select(Post)\n"
            "        .where(Post.id.between(min(post_ids), max(post_ids)))\n"
            "        .options(joinedload(Post.author), "
            "joinedload(Post.comments))\n"
            "        .order_by(Post.id)\n"
            "    ).unique().all()\n"
            "    return [(post.id, post.title, post.author.name, "
            "len(post.comments)) for post in posts]"
        },
        "loses": ["test_post_summaries"],
        "source": "outside review",
    },
    {
        "name": "drops the ORDER BY",
        "breaks": "summaries-order",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "post_summaries": "def post_summaries(session: Session, post_ids: list[int]) -> "
            "list[tuple[int, str, str, int]]:\n"
            "    posts = session.scalars(\n"
            "        select(Post)\n"
            "        .where(Post.id.in_(post_ids))\n"
            "        .options(joinedload(Post.author), "
            "joinedload(Post.comments))\n"
            "    ).unique().all()\n"
            "    return [(post.id, post.title, post.author.name, "
            "len(post.comments)) for post in posts]"
        },
        "loses": ["test_post_summaries"],
        "source": "outside review",
    },
    {
        "name": "caches one module-level engine across calls, ignoring a different url",
        "breaks": "function-url",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "function_engine": "_FUNCTION_ENGINE = None\n"
            "\n"
            "\n"
            "def function_engine(url: str) -> Engine:\n"
            '    """An engine for a short-lived process: no connection '
            'survives its checkout."""\n'
            "    global _FUNCTION_ENGINE\n"
            "    if _FUNCTION_ENGINE is None:\n"
            "        _FUNCTION_ENGINE = create_engine(url, "
            "poolclass=NullPool)\n"
            "    return _FUNCTION_ENGINE"
        },
        "loses": ["test_function_engine"],
        "source": "outside review",
    },
    {
        "name": "ignores the url argument (uses demo.sqlalchemy_url)",
        "breaks": "function-url",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "function_engine": "def function_engine(url: str) -> Engine:\n"
            '    """An engine for a short-lived process: no connection '
            'survives its checkout."""\n'
            "    return create_engine(demo.sqlalchemy_url, "
            "poolclass=NullPool)"
        },
        "loses": ["test_function_engine"],
        "source": "outside review",
    },
    {
        "name": "default pool_timeout (30 s)",
        "breaks": "web-timeout",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=10,\n"
            "        max_overflow=10,\n"
            "        pool_recycle=1800,\n"
            "        pool_pre_ping=True,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "pool_timeout in milliseconds",
        "breaks": "web-timeout",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=10,\n"
            "        max_overflow=10,\n"
            "        pool_timeout=10_000,\n"
            "        pool_recycle=1800,\n"
            "        pool_pre_ping=True,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "pool_recycle of one hour",
        "breaks": "web-recycle",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=10,\n"
            "        max_overflow=10,\n"
            "        pool_timeout=10,\n"
            "        pool_recycle=3600,\n"
            "        pool_pre_ping=True,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "no pool_recycle",
        "breaks": "web-recycle",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=10,\n"
            "        max_overflow=10,\n"
            "        pool_timeout=10,\n"
            "        pool_pre_ping=True,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "no pool_pre_ping",
        "breaks": "web-pre-ping",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=10,\n"
            "        max_overflow=10,\n"
            "        pool_timeout=10,\n"
            "        pool_recycle=1800,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "pool_size below 5",
        "breaks": "web-size",
        "notebook": "step06-query-optimization.ipynb",
        "answers": {
            "web_engine": "def web_engine(url: str) -> Engine:\n"
            '    """An engine for a long-running web server (see the requirements '
            'above)."""\n'
            "    return create_engine(\n"
            "        url,\n"
            "        pool_size=3,\n"
            "        max_overflow=10,\n"
            "        pool_timeout=10,\n"
            "        pool_recycle=1800,\n"
            "        pool_pre_ping=True,\n"
            "    )"
        },
        "loses": ["test_web_engine"],
        "source": "outside review",
    },
    {
        "name": "caches the miss as JSON null",
        "breaks": "get-unknown",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user": "def get_user(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value"
        },
        "loses": ["test_get_user"],
        "source": "outside review",
    },
    {
        "name": "returns {} for an unknown id",
        "breaks": "get-unknown",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user": "def get_user(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value if value is not None else {}"
        },
        "loses": ["test_get_user"],
        "source": "outside review",
    },
    {
        "name": "sliding expiry: every hit pushes the TTL back to PROFILE_TTL",
        "breaks": "get-hit-ttl",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user": "def get_user(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    cached = r.getex(key, ex=PROFILE_TTL)\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value"
        },
        "loses": ["test_get_user"],
        "source": "outside review",
    },
    {
        "name": "negative caching: an unknown id is cached as an empty marker for 30 s",
        "breaks": "get-unknown",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user": "def get_user(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    cached = r.get(key)\n"
            '    if cached == "":\n'
            "        return None\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is None:\n"
            '        r.set(key, "", ex=30)\n'
            "    else:\n"
            "        r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value"
        },
        "loses": ["test_get_user"],
        "source": "outside review",
    },
    {
        "name": "reads PROFILE_TTL as minutes and converts (ex=PROFILE_TTL // 60 = 5 s)",
        "breaks": "get-ttl",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user": "def get_user(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        r.set(key, json.dumps(value), ex=PROFILE_TTL // 60)\n"
            "    return value"
        },
        "loses": ["test_get_user"],
        "source": "outside review",
    },
    {
        "name": "deletes only the profile",
        "breaks": "update-stale",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    with engine.begin() as conn:\n"
            "        old = "
            "conn.execute(select(User.country).where(User.id == "
            "user_id)).scalar_one_or_none()\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))\n"
            "    keys = [user_key(user_id)]\n"
            "    r.delete(*keys)"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "forgets the old country's list",
        "breaks": "update-stale",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    with engine.begin() as conn:\n"
            "        old = "
            "conn.execute(select(User.country).where(User.id == "
            "user_id)).scalar_one_or_none()\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))\n"
            "    keys = [user_key(user_id), country_key(country)]\n"
            "    r.delete(*keys)"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "forgets the new country's list",
        "breaks": "update-stale",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    with engine.begin() as conn:\n"
            "        old = "
            "conn.execute(select(User.country).where(User.id == "
            "user_id)).scalar_one_or_none()\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))\n"
            "    keys = [user_key(user_id)]\n"
            "    if old is not None:\n"
            "        keys.append(country_key(old))\n"
            "    r.delete(*keys)"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "deletes the cache before the commit (inside the transaction)",
        "breaks": "update-after-commit",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    with engine.begin() as conn:\n"
            "        old = "
            "conn.execute(select(User.country).where(User.id == "
            "user_id)).scalar_one_or_none()\n"
            "        keys = [user_key(user_id), country_key(country)]\n"
            "        if old is not None:\n"
            "            keys.append(country_key(old))\n"
            "        r.delete(*keys)\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "deletes every country list",
        "breaks": "update-nothing-else",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    with engine.begin() as conn:\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))\n"
            "    r.delete(user_key(user_id))\n"
            '    stale = list(r.scan_iter(match=country_key("*")))\n'
            "    if stale:\n"
            "        r.delete(*stale)"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "takes the old country from the cached profile (fails or misses when not cached)",
        "breaks": "update-stale",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "update_user_country": "def update_user_country(r, user_id: int, country: str) -> "
            "None:\n"
            "    cached = r.get(user_key(user_id))\n"
            '    old = json.loads(cached)["country"] if cached else None\n'
            "    with engine.begin() as conn:\n"
            "        conn.execute(update(User).where(User.id == "
            "user_id).values(country=country))\n"
            "    keys = [user_key(user_id), country_key(country)]\n"
            "    if old is not None:\n"
            "        keys.append(country_key(old))\n"
            "    r.delete(*keys)"
        },
        "loses": ["test_update_user_country"],
        "source": "outside review",
    },
    {
        "name": "ties broken by highest id",
        "breaks": "warm-ties",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    post_count = func.count(Post.id)\n"
            "    statement = (\n"
            "        select(*PROFILE_COLUMNS)\n"
            "        .join(Post, Post.author_id == User.id)\n"
            "        .group_by(*PROFILE_COLUMNS)\n"
            "        .order_by(post_count.desc(), User.id.desc())\n"
            "        .limit(n)\n"
            "    )\n"
            "    with engine.connect() as conn:\n"
            "        rows = conn.execute(statement).all()\n"
            "    if not rows:\n"
            "        return\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(profile(row)), "
            "ex=PROFILE_TTL)\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "no TTL on the warmed keys",
        "breaks": "warm-as-get-user",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    post_count = func.count(Post.id)\n"
            "    statement = (\n"
            "        select(*PROFILE_COLUMNS)\n"
            "        .join(Post, Post.author_id == User.id)\n"
            "        .group_by(*PROFILE_COLUMNS)\n"
            "        .order_by(post_count.desc(), User.id)\n"
            "        .limit(n)\n"
            "    )\n"
            "    with engine.connect() as conn:\n"
            "        rows = conn.execute(statement).all()\n"
            "    if not rows:\n"
            "        return\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(profile(row)))\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "TTL given in milliseconds (px)",
        "breaks": "warm-as-get-user",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    post_count = func.count(Post.id)\n"
            "    statement = (\n"
            "        select(*PROFILE_COLUMNS)\n"
            "        .join(Post, Post.author_id == User.id)\n"
            "        .group_by(*PROFILE_COLUMNS)\n"
            "        .order_by(post_count.desc(), User.id)\n"
            "        .limit(n)\n"
            "    )\n"
            "    with engine.connect() as conn:\n"
            "        rows = conn.execute(statement).all()\n"
            "    if not rows:\n"
            "        return\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(profile(row)), "
            "px=PROFILE_TTL)\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "counts only published posts",
        "breaks": "warm-top",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    post_count = func.count(Post.id)\n"
            "    statement = (\n"
            "        select(*PROFILE_COLUMNS)\n"
            "        .join(Post, Post.author_id == User.id)\n"
            "        .where(Post.published)\n"
            "        .group_by(*PROFILE_COLUMNS)\n"
            "        .order_by(post_count.desc(), User.id)\n"
            "        .limit(n)\n"
            "    )\n"
            "    with engine.connect() as conn:\n"
            "        rows = conn.execute(statement).all()\n"
            "    if not rows:\n"
            "        return\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(profile(row)), "
            "ex=PROFILE_TTL)\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "serialises the row with default=str (created_at not isoformat)",
        "breaks": "warm-as-get-user",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    post_count = func.count(Post.id)\n"
            "    statement = (\n"
            "        select(*PROFILE_COLUMNS)\n"
            "        .join(Post, Post.author_id == User.id)\n"
            "        .group_by(*PROFILE_COLUMNS)\n"
            "        .order_by(post_count.desc(), User.id)\n"
            "        .limit(n)\n"
            "    )\n"
            "    with engine.connect() as conn:\n"
            "        rows = conn.execute(statement).all()\n"
            "    if not rows:\n"
            "        return\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(dict(row._mapping), "
            "default=str), ex=PROFILE_TTL)\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "two statements: top ids, then their profiles",
        "breaks": "warm-one-statement",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "warm_top_users": "def warm_top_users(r, n: int) -> None:\n"
            "    with engine.connect() as conn:\n"
            "        top = conn.execute(\n"
            "            select(Post.author_id).group_by(Post.author_id)\n"
            "            .order_by(func.count().desc(), "
            "Post.author_id).limit(n)\n"
            "        ).scalars().all()\n"
            "        if not top:\n"
            "            return\n"
            "        rows = "
            "conn.execute(select(*PROFILE_COLUMNS).where(User.id.in_(top))).all()\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for row in rows:\n"
            "        pipe.set(user_key(row.id), json.dumps(profile(row)), "
            "ex=PROFILE_TTL)\n"
            "    pipe.execute()"
        },
        "loses": ["test_warm_top_users"],
        "source": "outside review",
    },
    {
        "name": "counts subscribe confirmations as handled messages",
        "breaks": "consume-count",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "consume_invalidations": "def consume_invalidations(r, subscriber, max_messages: "
            "int, timeout: float = 1.0) -> int:\n"
            "    handled = 0\n"
            "    while handled < max_messages:\n"
            "        message = subscriber.get_message(timeout=timeout)\n"
            "        if message is None:\n"
            "            break\n"
            "        handled += 1\n"
            '        if message.get("type") != "message":\n'
            "            continue\n"
            '        user_id = json.loads(message["data"])["user_id"]\n'
            "        r.delete(user_key(user_id))\n"
            "    return handled"
        },
        "loses": ["test_consume_invalidations"],
        "source": "outside review",
    },
    {
        "name": "stops at the first non-message instead of skipping it",
        "breaks": "consume-skip",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "consume_invalidations": "def consume_invalidations(r, subscriber, max_messages: "
            "int, timeout: float = 1.0) -> int:\n"
            "    handled = 0\n"
            "    while handled < max_messages:\n"
            "        message = subscriber.get_message(timeout=timeout)\n"
            "        if message is None:\n"
            "            break\n"
            '        if message.get("type") != "message":\n'
            "            break\n"
            '        user_id = json.loads(message["data"])["user_id"]\n'
            "        r.delete(user_key(user_id))\n"
            "        handled += 1\n"
            "    return handled"
        },
        "loses": ["test_consume_invalidations"],
        "source": "outside review",
    },
    {
        "name": "loops max_messages times, so skipped non-messages use up the budget",
        "breaks": "consume-max",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "consume_invalidations": "def consume_invalidations(r, subscriber, max_messages: "
            "int, timeout: float = 1.0) -> int:\n"
            "    handled = 0\n"
            "    for _ in range(max_messages):\n"
            "        message = subscriber.get_message(timeout=timeout)\n"
            "        if message is None:\n"
            "            break\n"
            '        if message.get("type") != "message":\n'
            "            continue\n"
            '        user_id = json.loads(message["data"])["user_id"]\n'
            "        r.delete(user_key(user_id))\n"
            "        handled += 1\n"
            "    return handled"
        },
        "loses": ["test_consume_invalidations"],
        "source": "outside review",
    },
    {
        "name": "ignores max_messages: drains until the timeout",
        "breaks": "consume-max",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "consume_invalidations": "def consume_invalidations(r, subscriber, max_messages: "
            "int, timeout: float = 1.0) -> int:\n"
            "    handled = 0\n"
            "    while True:\n"
            "        message = subscriber.get_message(timeout=timeout)\n"
            "        if message is None:\n"
            "            break\n"
            '        if message.get("type") != "message":\n'
            "            continue\n"
            '        user_id = json.loads(message["data"])["user_id"]\n'
            "        r.delete(user_key(user_id))\n"
            "        handled += 1\n"
            "    return handled"
        },
        "loses": ["test_consume_invalidations"],
        "source": "outside review",
    },
    {
        "name": "hit_rate computed from per-process counters, not the shared Redis ones",
        "breaks": "stats-in-redis",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": '_LOCAL = {"hits": 0, "misses": 0}\n'
            "\n"
            "\n"
            "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        r.incr(stats_key("hits"))\n'
            '        _LOCAL["hits"] += 1\n'
            "        return json.loads(cached)\n"
            '    r.incr(stats_key("misses"))\n'
            '    _LOCAL["misses"] += 1\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=ttl)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    total = _LOCAL["hits"] + _LOCAL["misses"]\n'
            '    return _LOCAL["hits"] / total if total else 0.0'
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "no zero guard: ZeroDivisionError before any read",
        "breaks": "stats-float",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        r.incr(stats_key("hits"))\n'
            "        return json.loads(cached)\n"
            '    r.incr(stats_key("misses"))\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=ttl)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "returns None before any read",
        "breaks": "stats-float",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        r.incr(stats_key("hits"))\n'
            "        return json.loads(cached)\n"
            '    r.incr(stats_key("misses"))\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=ttl)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total if total else None"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": 'falsy cached JSON values (0, [], "", null) treated as misses',
        "breaks": "stats-hit",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            '    cached = json.loads(r.get(key) or "null")\n'
            "    if cached:\n"
            '        r.incr(stats_key("hits"))\n'
            "        return cached\n"
            '    r.incr(stats_key("misses"))\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=ttl)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total if total else 0.0"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "caches without a TTL",
        "breaks": "stats-ttl",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        r.incr(stats_key("hits"))\n'
            "        return json.loads(cached)\n"
            '    r.incr(stats_key("misses"))\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value))\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total if total else 0.0"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "uses PROFILE_TTL instead of the ttl argument",
        "breaks": "stats-ttl",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        r.incr(stats_key("hits"))\n'
            "        return json.loads(cached)\n"
            '    r.incr(stats_key("misses"))\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total if total else 0.0"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "read-modify-write counters (GET then SET) instead of INCR: lost updates across "
        "instances",
        "breaks": "stats-in-redis",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "hit_rate": "def _bump(r, name):\n"
            "    current = int(r.get(stats_key(name)) or 0)\n"
            "    r.set(stats_key(name), current + 1)\n"
            "\n"
            "\n"
            "def cached_with_stats(r, key: str, load, ttl: int = PROFILE_TTL):\n"
            "    cached = r.get(key)\n"
            "    if cached is not None:\n"
            '        _bump(r, "hits")\n'
            "        return json.loads(cached)\n"
            '    _bump(r, "misses")\n'
            "    value = load()\n"
            "    r.set(key, json.dumps(value), ex=ttl)\n"
            "    return value\n"
            "\n"
            "\n"
            "def hit_rate(r) -> float:\n"
            '    hits = int(r.get(stats_key("hits")) or 0)\n'
            '    misses = int(r.get(stats_key("misses")) or 0)\n'
            "    total = hits + misses\n"
            "    return hits / total if total else 0.0"
        },
        "loses": ["test_hit_rate"],
        "source": "outside review",
    },
    {
        "name": "catches only redis.ConnectionError (a Redis that stops answering raises TimeoutError)",
        "breaks": "resilient-any-error",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "    except redis.ConnectionError as exc:\n"
            '        log.warning("Redis read failed for %s: %s", key, '
            "exc)\n"
            "        cached = None\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        try:\n"
            "            r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "        except redis.ConnectionError as exc:\n"
            '            log.warning("Redis write failed for %s: %s", key, '
            "exc)\n"
            "    return value"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
    {
        "name": "guards only the read; skips write-back after a failed read, but an unguarded write can "
        "still raise",
        "breaks": "resilient-write",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "    except redis.RedisError as exc:\n"
            '        log.warning("Redis read failed for %s: %s", key, '
            "exc)\n"
            "        return load_profile(user_id)\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "    return value"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
    {
        "name": "a failed write-back is swallowed silently (no warning)",
        "breaks": "resilient-warn",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "    except redis.RedisError as exc:\n"
            '        log.warning("Redis read failed for %s: %s", key, '
            "exc)\n"
            "        cached = None\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        try:\n"
            "            r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "        except redis.RedisError:\n"
            "            pass\n"
            "    return value"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
    {
        "name": "one try around everything: a failed write-back re-reads PostgreSQL",
        "breaks": "resilient-cache-aside",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "        if cached is not None:\n"
            "            return json.loads(cached)\n"
            "        value = load_profile(user_id)\n"
            "        if value is not None:\n"
            "            r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "        return value\n"
            "    except redis.RedisError as exc:\n"
            '        log.warning("Redis failed for %s: %s", key, exc)\n'
            "        return load_profile(user_id)"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
    {
        "name": "caches JSON null for unknown ids",
        "breaks": "resilient-cache-aside",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "    except redis.RedisError as exc:\n"
            '        log.warning("Redis read failed for %s: %s", key, '
            "exc)\n"
            "        cached = None\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if True:\n"
            "        try:\n"
            "            r.set(key, json.dumps(value), ex=PROFILE_TTL)\n"
            "        except redis.RedisError as exc:\n"
            '            log.warning("Redis write failed for %s: %s", key, '
            "exc)\n"
            "    return value"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
    {
        "name": "write-back without TTL",
        "breaks": "resilient-cache-aside",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_user_resilient": "def get_user_resilient(r, user_id: int) -> dict | None:\n"
            "    key = user_key(user_id)\n"
            "    try:\n"
            "        cached = r.get(key)\n"
            "    except redis.RedisError as exc:\n"
            '        log.warning("Redis read failed for %s: %s", key, '
            "exc)\n"
            "        cached = None\n"
            "    if cached is not None:\n"
            "        return json.loads(cached)\n"
            "    value = load_profile(user_id)\n"
            "    if value is not None:\n"
            "        try:\n"
            "            r.set(key, json.dumps(value))\n"
            "        except redis.RedisError as exc:\n"
            '            log.warning("Redis write failed for %s: %s", key, '
            "exc)\n"
            "    return value"
        },
        "loses": ["test_get_user_resilient"],
        "source": "outside review",
    },
]

# Right answers written another way: each must keep full marks (the tests check behaviour,
# not one way of writing it).
ALTERNATIVES = [
    {
        "name": "invalidates with UNLINK in a pipeline",
        "notebook": STEP07,
        "answers": {
            "update_user_country": variant(
                BY_ID["update-stale"],
                (
                    "    r.delete(user_key(user_id), country_key(old), country_key(country))",
                    "    with r.pipeline() as pipe:\n"
                    "        pipe.unlink(user_key(user_id), country_key(old), country_key(country))\n"
                    "        pipe.execute()",
                ),
            )
        },
    },
    {
        "name": "loads authors and comments with selectinload",
        "notebook": STEP06,
        "answers": {
            "post_summaries": variant(
                BY_ID["summaries-statements"],
                (
                    "joinedload(Post.author), selectinload(Post.comments)",
                    "selectinload(Post.author), selectinload(Post.comments)",
                ),
            )
        },
    },
    {
        "name": "the pool settings at the edges of what the task allows",
        "notebook": STEP06,
        "answers": {
            "web_engine": variant(
                BY_ID["web-size"],
                ("pool_size=10", "pool_size=5"),
                ("max_overflow=10", "max_overflow=15"),
                ("pool_recycle=1800", "pool_recycle=1799"),
            )
        },
    },
]

# Written by a second outside reviewer, cold, for the tasks added with lesson 01's second
# edition (they saw the student version only); kept as they wrote them.
CASES += [
    {
        "name": "a bell curve around ttl (gauss, sd a third of the spread), clipped to the range",
        "breaks": "jitter-range",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    low, high = ttl * (1 - spread), ttl * (1 + spread)\n    chosen = int(min(max(rng.gauss(ttl, ttl * spread / 3), low), high))\n    r.set(key, json.dumps(value), ex=chosen)\n    return chosen\n'
        },
        "loses": ["test_set_with_jitter"],
        "source": "outside review",
    },
    {
        "name": "the mean of two uniform draws: a triangle, not uniform",
        "breaks": "jitter-range",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    half = ttl * spread\n    chosen = int(ttl + (rng.uniform(-half, half) + rng.uniform(-half, half)) / 2)\n    r.set(key, json.dumps(value), ex=chosen)\n    return chosen\n'
        },
        "loses": ["test_set_with_jitter"],
        "source": "outside review",
    },
    {
        "name": "a Random seeded with the key: every seed gives the same TTLs",
        "breaks": "jitter-rng",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    own = random.Random(key)\n    chosen = int(own.uniform(ttl * (1 - spread), ttl * (1 + spread)))\n    r.set(key, json.dumps(value), ex=chosen)\n    return chosen\n'
        },
        "loses": ["test_set_with_jitter"],
        "source": "outside review",
    },
    {
        "name": "SET NX: a key already cached keeps its old value",
        "breaks": "jitter-json",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    chosen = int(rng.uniform(ttl * (1 - spread), ttl * (1 + spread)))\n    r.set(key, json.dumps(value), ex=chosen, nx=True)\n    return chosen\n'
        },
        "loses": ["test_set_with_jitter"],
        "source": "outside review",
    },
    {
        "name": "returns the float it drew, while the key gets int() of it",
        "breaks": "jitter-return",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    chosen = rng.uniform(ttl * (1 - spread), ttl * (1 + spread))\n    r.set(key, json.dumps(value), ex=int(chosen))\n    return chosen\n'
        },
        "loses": ["test_set_with_jitter"],
        "source": "outside review",
    },
    {
        "name": "SETNX, then EXPIRE: the lock in two commands",
        "breaks": "swr-one-refresh",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    def store(value):\n        entry = {"value": value, "fresh_until": time.time() + fresh_for}\n        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n    raw = r.get(key)\n    if raw is None:\n        value = load()\n        store(value)\n        return value\n    entry = json.loads(raw)\n    if time.time() < entry["fresh_until"]:\n        return entry["value"]\n    lock = key + ":refresh"\n    if not r.setnx(lock, "1"):\n        return entry["value"]\n    r.expire(lock, REFRESH_LOCK_SECONDS)\n    try:\n        value = load()\n        store(value)\n        return value\n    finally:\n        r.delete(lock)\n'
        },
        "loses": ["test_get_swr"],
        "source": "outside review",
    },
    {
        "name": "EXISTS, then SET without NX: two readers can both refresh",
        "breaks": "swr-one-refresh",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    def store(value):\n        entry = {"value": value, "fresh_until": time.time() + fresh_for}\n        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n    raw = r.get(key)\n    if raw is None:\n        value = load()\n        store(value)\n        return value\n    entry = json.loads(raw)\n    if time.time() < entry["fresh_until"]:\n        return entry["value"]\n    lock = key + ":refresh"\n    if r.exists(lock):\n        return entry["value"]\n    r.set(lock, "1", ex=REFRESH_LOCK_SECONDS)\n    try:\n        value = load()\n        store(value)\n        return value\n    finally:\n        r.delete(lock)\n'
        },
        "loses": ["test_get_swr"],
        "source": "outside review",
    },
    {
        "name": "a failed load() is swallowed: the stale value is returned",
        "breaks": "swr-error-raised",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    def store(value):\n        entry = {"value": value, "fresh_until": time.time() + fresh_for}\n        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n    raw = r.get(key)\n    if raw is None:\n        value = load()\n        store(value)\n        return value\n    entry = json.loads(raw)\n    if time.time() < entry["fresh_until"]:\n        return entry["value"]\n    lock = key + ":refresh"\n    if not r.set(lock, "1", nx=True, ex=REFRESH_LOCK_SECONDS):\n        return entry["value"]\n    try:\n        value = load()\n        store(value)\n        return value\n    except Exception:\n        return entry["value"]\n    finally:\n        r.delete(lock)\n'
        },
        "loses": ["test_get_swr"],
        "source": "outside review",
    },
    {
        "name": "a miss stores its entry without a TTL",
        "breaks": "swr-ttl",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    def store(value):\n        entry = {"value": value, "fresh_until": time.time() + fresh_for}\n        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n    raw = r.get(key)\n    if raw is None:\n        value = load()\n        r.set(key, json.dumps({"value": value, "fresh_until": time.time() + fresh_for}))\n        return value\n    entry = json.loads(raw)\n    if time.time() < entry["fresh_until"]:\n        return entry["value"]\n    lock = key + ":refresh"\n    if not r.set(lock, "1", nx=True, ex=REFRESH_LOCK_SECONDS):\n        return entry["value"]\n    try:\n        value = load()\n        store(value)\n        return value\n    finally:\n        r.delete(lock)\n'
        },
        "loses": ["test_get_swr"],
        "source": "outside review",
    },
    {
        "name": "freshness read from the key's TTL, not from fresh_until",
        "breaks": "swr-fresh",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    def store(value):\n        entry = {"value": value, "fresh_until": time.time() + fresh_for}\n        r.set(key, json.dumps(entry), ex=fresh_for + stale_for)\n    raw = r.get(key)\n    if raw is None:\n        value = load()\n        store(value)\n        return value\n    entry = json.loads(raw)\n    if r.ttl(key) > stale_for:\n        return entry["value"]\n    lock = key + ":refresh"\n    if not r.set(lock, "1", nx=True, ex=REFRESH_LOCK_SECONDS):\n        return entry["value"]\n    try:\n        value = load()\n        store(value)\n        return value\n    finally:\n        r.delete(lock)\n'
        },
        "loses": ["test_get_swr"],
        "source": "outside review",
    },
]

ALTERNATIVES += [
    {
        "name": "jitter: SETEX (deprecated in redis-py: it prints a DeprecationWarning)",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    chosen = int(rng.uniform(ttl * (1 - spread), ttl * (1 + spread)))\n    r.setex(key, chosen, json.dumps(value))\n    return chosen\n'
        },
    },
    {
        "name": "jitter: SET and EXPIRE in one MULTI/EXEC transaction (one round trip)",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "set_with_jitter": 'def set_with_jitter(r, key: str, value, ttl: int, spread: float, rng: random.Random) -> int:\n    """Cache `value` as JSON under `key` with a TTL drawn around `ttl`; return that TTL."""\n    chosen = int(rng.uniform(ttl * (1 - spread), ttl * (1 + spread)))\n    with r.pipeline(transaction=True) as pipe:\n        pipe.set(key, json.dumps(value))\n        pipe.expire(key, chosen)\n        pipe.execute()\n    return chosen\n'
        },
    },
    {
        "name": "stale-while-revalidate with a token lock and SETEX",
        "notebook": "step07-caching.ipynb",
        "answers": {
            "get_swr": 'REFRESH_LOCK_SECONDS = 10  # the longest a refresh may hold its lock\n\n\ndef get_swr(r, key: str, load, fresh_for: int, stale_for: int):\n    """The value cached under `key`: fresh, stale while one reader refreshes it, or loaded."""\n    import os\n    raw = r.get(key)\n    now = time.time()\n    if raw is not None:\n        entry = json.loads(raw)\n        if now < entry["fresh_until"]:\n            return entry["value"]\n        token = os.urandom(8).hex()\n        if not r.set(key + ":refresh", token, nx=True, ex=REFRESH_LOCK_SECONDS):\n            return entry["value"]\n        try:\n            value = load()\n            r.setex(key, fresh_for + stale_for,\n                    json.dumps({"value": value, "fresh_until": time.time() + fresh_for}))\n            return value\n        finally:\n            if r.get(key + ":refresh") == token:\n                r.delete(key + ":refresh")\n    value = load()\n    r.setex(key, fresh_for + stale_for,\n            json.dumps({"value": value, "fresh_until": time.time() + fresh_for}))\n    return value\n'
        },
    },
]
