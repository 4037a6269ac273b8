"""Plausible wrong answers for 01-performance, and the test cells each one must fail.

Each case replaces answer cells of one notebook (grade_id → source); the other answers
stay correct, so a case also proves that the other tasks' tests do not depend on it.
Every answer cell has at least one case that targets it alone."""

STEP06 = "step06-query-optimization.ipynb"
STEP07 = "step07-caching.ipynb"

CASES = [
    # ------------------------------------------------------------------ step 6
    {
        "name": "logs durations in seconds, not milliseconds",
        "notebook": STEP06,
        "answers": {
            "query_log": """def install_query_log(engine: Engine, log: list) -> None:
    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["started"] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        log.append((statement, time.perf_counter() - conn.info["started"]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)""",
        },
        "loses": ["test_query_log"],
    },
    {
        "name": "ranks statements by how often they ran, not by total time",
        "notebook": STEP06,
        "answers": {
            "slowest_queries": '''def slowest_queries(conn, limit: int = 5) -> list:
    return conn.execute(text("""
        SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY calls DESC
        LIMIT :limit
    """), {"limit": limit}).all()''',
        },
        "loses": ["test_slowest_queries"],
    },
    {
        "name": "indexes the wrong column (comments.author_id)",
        "notebook": STEP06,
        "answers": {
            "comments_index": """with engine.begin() as conn:
    conn.execute(text("CREATE INDEX ix_comments_author_id ON comments (author_id)"))""",
        },
        "loses": ["test_comments_index"],
    },
    {
        "name": "puts the range column first in the composite index",
        "notebook": STEP06,
        "answers": {
            "composite_index": """with engine.begin() as conn:
    conn.execute(text("CREATE INDEX ix_posts_created_author ON posts (created_at, author_id)"))""",
        },
        "loses": ["test_composite_index"],
    },
    {
        "name": "eager-loads the comments' authors instead of the post's author",
        "notebook": STEP06,
        "answers": {
            "post_summaries": """def post_summaries(session: Session, post_ids: list[int]) -> list[tuple[int, str, str, int]]:
    posts = session.scalars(
        select(Post)
        .where(Post.id.in_(post_ids))
        .options(selectinload(Post.comments).joinedload(Comment.author))
        .order_by(Post.id)
    ).all()
    return [(post.id, post.title, post.author.name, len(post.comments)) for post in posts]""",
        },
        "loses": ["test_post_summaries"],
    },
    {
        "name": "a pool of one connection for the short-lived function (connection_limit=1)",
        "notebook": STEP06,
        "answers": {
            "function_engine": """def function_engine(url: str) -> Engine:
    return create_engine(url, pool_size=1, max_overflow=0)""",
        },
        "loses": ["test_function_engine"],
    },
    {
        "name": "a web pool without pre-ping: a connection the server closed fails a request",
        "notebook": STEP06,
        "answers": {
            "web_engine": """def web_engine(url: str) -> Engine:
    return create_engine(url, pool_size=10, max_overflow=10, pool_timeout=10, pool_recycle=1800)""",
        },
        "loses": ["test_web_engine"],
    },
    # Second slips for the same cells, two per simulated student to keep the round trip
    # short (each answer cell above already has a case of its own that loses only its test).
    {
        "name": "two slips: a log on every Engine, and pg_stat_statements read cluster-wide",
        "notebook": STEP06,
        "answers": {
            "query_log": """def install_query_log(engine: Engine, log: list) -> None:
    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["started"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):
        log.append((statement, (time.perf_counter() - conn.info["started"]) * 1000))""",
            "slowest_queries": '''def slowest_queries(conn, limit: int = 5) -> list:
    return conn.execute(text("""
        SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms
        FROM pg_stat_statements
        ORDER BY total_exec_time DESC
        LIMIT :limit
    """), {"limit": limit}).all()''',
        },
        "loses": ["test_query_log", "test_slowest_queries"],
    },
    {
        "name": "two slips: author_id alone in the index, and a web pool that never recycles",
        "notebook": STEP06,
        "answers": {
            "composite_index": """with engine.begin() as conn:
    conn.execute(text("CREATE INDEX ix_posts_author_id ON posts (author_id)"))""",
            "web_engine": """def web_engine(url: str) -> Engine:
    return create_engine(url, pool_size=10, max_overflow=10, pool_timeout=10, pool_pre_ping=True)""",
        },
        "loses": ["test_composite_index", "test_web_engine"],
    },
    {
        "name": "ranks statements by their mean time per call, not by their total time",
        "notebook": STEP06,
        "answers": {
            "slowest_queries": '''def slowest_queries(conn, limit: int = 5) -> list:
    return conn.execute(text("""
        SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY mean_exec_time DESC
        LIMIT :limit
    """), {"limit": limit}).all()''',
        },
        "loses": ["test_slowest_queries"],
    },
    # ------------------------------------------------------------------ step 7
    {
        "name": "a cache that never expires",
        "notebook": STEP07,
        "answers": {
            "get_user": """def get_user(r, user_id: int) -> dict | None:
    cached = r.get(user_key(user_id))
    if cached is not None:
        return json.loads(cached)
    found = load_profile(user_id)
    if found is not None:
        r.set(user_key(user_id), json.dumps(found))
    return found""",
        },
        "loses": ["test_get_user"],
    },
    {
        "name": "invalidates the new country's list but not the old one's",
        "notebook": STEP07,
        "answers": {
            "update_user_country": """def update_user_country(r, user_id: int, country: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(country=country))
    r.delete(user_key(user_id), country_key(country))""",
        },
        "loses": ["test_update_user_country"],
    },
    {
        "name": "warms the cache with one SET per user (no pipeline)",
        "notebook": STEP07,
        "answers": {
            "warm_top_users": """def warm_top_users(r, n: int) -> None:
    statement = (
        select(*PROFILE_COLUMNS)
        .join(Post, Post.author_id == User.id)
        .group_by(*PROFILE_COLUMNS)
        .order_by(func.count(Post.id).desc(), User.id)
        .limit(n)
    )
    with engine.connect() as conn:
        for row in conn.execute(statement):
            r.set(user_key(row.id), json.dumps(profile(row)), ex=PROFILE_TTL)""",
        },
        "loses": ["test_warm_top_users"],
    },
    {
        "name": "handles a single message per call",
        "notebook": STEP07,
        "answers": {
            "consume_invalidations": """def consume_invalidations(r, subscriber, max_messages: int, timeout: float = 1.0) -> int:
    message = subscriber.get_message(timeout=timeout)
    if message is None or message["type"] != "message":
        return 0
    r.delete(user_key(json.loads(message["data"])["user_id"]))
    return 1""",
        },
        "loses": ["test_consume_invalidations"],
    },
    {
        "name": "deletes a key built from the raw message instead of the user id",
        "notebook": STEP07,
        "answers": {
            "consume_invalidations": """def consume_invalidations(r, subscriber, max_messages: int, timeout: float = 1.0) -> int:
    handled = 0
    while handled < max_messages:
        message = subscriber.get_message(timeout=timeout)
        if message is None:
            break
        if message["type"] == "message":
            r.delete(user_key(message["data"]))
            handled += 1
    return handled""",
        },
        "loses": ["test_consume_invalidations"],
    },
    {
        "name": "counts hits and misses in the process, not in Redis",
        "notebook": STEP07,
        "answers": {
            "hit_rate": """counters = {"hits": 0, "misses": 0}


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
        },
        "loses": ["test_hit_rate"],
    },
    {
        "name": "guards the cache read but not the write-back",
        "notebook": STEP07,
        "answers": {
            "get_user_resilient": """def get_user_resilient(r, user_id: int) -> dict | None:
    try:
        cached = r.get(user_key(user_id))
    except redis.ConnectionError:
        log.warning("Redis is down: reading PostgreSQL")
        cached = None
    if cached is not None:
        return json.loads(cached)
    found = load_profile(user_id)
    if found is not None:
        r.set(user_key(user_id), json.dumps(found), ex=PROFILE_TTL)
    return found""",
        },
        "loses": ["test_get_user_resilient"],
    },
    {
        "name": "three slips: warming without the id tie-break, every pub/sub message taken "
        "for an invalidation, and only ConnectionError caught (a hung Redis raises TimeoutError)",
        "notebook": STEP07,
        "answers": {
            "warm_top_users": """def warm_top_users(r, n: int) -> None:
    statement = (
        select(*PROFILE_COLUMNS)
        .join(Post, Post.author_id == User.id)
        .group_by(*PROFILE_COLUMNS)
        .order_by(func.count(Post.id).desc())
        .limit(n)
    )
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    with r.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.set(user_key(row.id), json.dumps(profile(row)), ex=PROFILE_TTL)
        pipe.execute()""",
            "consume_invalidations": """def consume_invalidations(r, subscriber, max_messages: int, timeout: float = 1.0) -> int:
    handled = 0
    while handled < max_messages:
        message = subscriber.get_message(timeout=timeout)
        if message is None:
            break
        r.delete(user_key(json.loads(message["data"])["user_id"]))
        handled += 1
    return handled""",
            "get_user_resilient": """def get_user_resilient(r, user_id: int) -> dict | None:
    try:
        cached = r.get(user_key(user_id))
    except redis.ConnectionError:
        log.warning("Redis is down: reading PostgreSQL")
        cached = None
    if cached is not None:
        return json.loads(cached)
    found = load_profile(user_id)
    if found is not None:
        try:
            r.set(user_key(user_id), json.dumps(found), ex=PROFILE_TTL)
        except redis.ConnectionError:
            log.warning("Redis is down: not caching")
    return found""",
        },
        "loses": ["test_warm_top_users", "test_consume_invalidations", "test_get_user_resilient"],
    },
]
