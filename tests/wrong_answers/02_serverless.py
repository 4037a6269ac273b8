"""02-serverless: the requirement table of each task, and one plausible wrong answer (at
least) per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step10-serverless.ipynb"
ENGINE_CELL, HANDLER, FN, COND, POLICY, SAFE, INVOKE = (
    "warm_engine", "warm_handler", "function_engine", "conditional_response", "cache_policy",
    "safe_concurrency", "invoke_all",
)  # fmt: skip
T1, T2, T3, T4, T5 = (
    "test_warm_handler", "test_function_engine", "test_conditional_response", "test_cache_policy",
    "test_bounded_invocations",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("engine-new-engine", NB, ENGINE_CELL, "creates the engine with `new_engine(...)`", T1),
    Requirement("engine-once", NB, ENGINE_CELL, "on its first call only", T1),
    Requirement("engine-lazy", NB, ENGINE_CELL, "running the cell creates no engine", T1),
    Requirement("engine-module", NB, ENGINE_CELL, "keeps it in the module-level variable `ENGINE`", T1),
    Requirement("engine-pool-one", NB, ENGINE_CELL, "its pool holds one connection (`pool_size=1`)", T1),
    Requirement("handler-path", NB, HANDLER, 'the id is in `event["pathParameters"]["id"]`', T1),
    Requirement("handler-get-engine", NB, HANDLER, "Read the item with the engine from `get_engine()`", T1),
    Requirement("handler-bound", NB, HANDLER, "passing the id as a bound parameter", T1),
    Requirement("handler-found", NB, HANDLER, 'For an item that exists, return `json_response(HTTPStatus.OK, {"id": ..., "title": ...})`', T1),
    Requirement("handler-404", NB, HANDLER, "for an id with no item, return status 404", T1),
    Requirement("handler-error", NB, HANDLER, 'with a payload `{"error": ...}`', T1),
    Requirement("handler-reuse", NB, HANDLER, "Warm invocations must reuse the engine and its connection", T1),
    # Task 2
    Requirement("fn-nullpool", NB, FN, "keeps no connection between uses", T2),
    Requirement("fn-new-engine", NB, FN, "return an engine made with `new_engine(url, ...)`", T2),
    Requirement("fn-url", NB, FN, "Complete `function_engine(url)`", T2),
    Requirement("fn-no-prepare", NB, FN, "tell psycopg never to prepare statements", T2),
    # Task 3
    Requirement("etag-header", NB, COND, 'Every response has the header `"etag"` set to `make_etag(body)`', T3),
    Requirement("etag-304", NB, COND, "answer 304 with an empty body", T3),
    Requirement("etag-list", NB, COND, "`if-none-match` may list several tags separated by commas; it matches when any of them does", T3),
    Requirement("etag-star", NB, COND, "or when it is `*`", T3),
    Requirement("etag-spaces", NB, COND, "There may be any number of spaces around each comma, or none", T3),
    Requirement("etag-whole", NB, COND, "Tags are compared whole", T3),
    Requirement("etag-weak", NB, COND, "It uses the weak comparison", T3),
    Requirement("etag-200", NB, COND, "Otherwise (no header, or only other tags) answer 200 with the body", T3),
    # Task 4
    Requirement("cc-s-maxage", NB, POLICY, "shared caches (a CDN) may reuse it for 60 seconds (`s-maxage`)", T4),
    Requirement("cc-swr", NB, POLICY, "serve it stale for 30 more seconds while they revalidate in the background (`stale-while-revalidate`)", T4),
    Requirement("cc-max-age-0", NB, POLICY, "browsers must revalidate it every time (`max-age=0`)", T4),
    Requirement("cc-public", NB, POLICY, "mark it `public`", T4),
    Requirement("cc-private", NB, POLICY, "only that user's browser may store it (`private`), for 60 seconds (`max-age`)", T4),
    Requirement("cc-no-store", NB, POLICY, "no cache may store it (`no-store`)", T4),
    Requirement("cc-unknown", NB, POLICY, "Any other kind raises `ValueError`", T4),
    # Task 5
    Requirement("safe-reserved", NB, SAFE, "how many invocations may run at once when `reserved` of the server's `max_connections` are kept for other clients", T5),
    Requirement("safe-raise", NB, SAFE, "When no connection is left for invocations, raise `ValueError`", T5),
    Requirement("invoke-context", NB, INVOKE, "call `handler(event, LambdaContext())` for every event", T5),
    Requirement("invoke-bound", NB, INVOKE, "running up to `limit` invocations at once (never more", T5),
    Requirement("invoke-use-limit", NB, INVOKE, "and use that many", T5),
    Requirement("invoke-order", NB, INVOKE, "return the results in the order of `events`", T5),
    Requirement("invoke-refill", NB, INVOKE, "As soon as an invocation finishes, the next event starts", T5),
    Requirement("invoke-error", NB, INVOKE, "If a handler raises, `invoke_all` raises that error once the invocations already running have finished; it must never hang", T5),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "A Lambda instance imports your module once",
        "Complete `get_engine()` and `handler(event, context)`.",
        "`json_response` is in the setup cell",
        "Creating the engine at import time, outside any function, is common advice too",
    ],
    (NB, "task2"): ["Where instances come and go by the hundred"],
    (NB, "task3"): [
        "for an origin server",
        "`request_headers` is a dict with lower-case names",
        "Return a tuple `(status, headers, body)`",
    ],
    (NB, "task4"): [
        "Complete `cache_policy(kind)`",
        "The order of the directives does not matter.",
    ],
    (NB, "task5"): [
        "A burst of invocations must not open more connections than PostgreSQL accepts.",
        "Each invocation uses one connection",
    ],
}


def engine_cell(body: str) -> str:
    return "ENGINE = None\n\n\ndef get_engine():\n" + body


RIGHT_ENGINE = """    global ENGINE
    if ENGINE is None:
        ENGINE = new_engine(pool_size=1)
    return ENGINE
"""


def handler_cell(
    item_id='int(event["pathParameters"]["id"])',
    engine="get_engine()",
    query='conn.execute(text("SELECT id, title FROM items WHERE id = :id"), {"id": item_id}).first()',
    missing='json_response(HTTPStatus.NOT_FOUND, {"error": f"no item {item_id}"})',
    found='json_response(HTTPStatus.OK, {"id": row.id, "title": row.title})',
    after="",
) -> str:
    return (
        "def handler(event, context):\n"
        f"    item_id = {item_id}\n"
        f"    engine = {engine}\n"
        "    with engine.connect() as conn:\n"
        f"        row = {query}\n"
        f"{after}"
        "    if row is None:\n"
        f"        return {missing}\n"
        f"    return {found}\n"
    )


def fn_cell(call: str) -> str:
    return f"def function_engine(url):\n    return {call}\n"


def cond_cell(sent: str = 'tag.strip().removeprefix("W/") for tag in request_headers.get("if-none-match", "").split(",")',
              match: str = 'etag in sent or "*" in sent',
              not_modified: str = 'HTTPStatus.NOT_MODIFIED, {"etag": etag}, b""',
              ok: str = 'HTTPStatus.OK, {"etag": etag}, body') -> str:  # fmt: skip
    return (
        "def conditional_response(request_headers, body):\n"
        "    etag = make_etag(body)\n"
        f"    sent = [{sent}]\n"
        f"    if {match}:\n"
        f"        return {not_modified}\n"
        f"    return {ok}\n"
    )


ARTICLE = "public, max-age=0, s-maxage=60, stale-while-revalidate=30"


def policy_cell(article=ARTICLE, profile="private, max-age=60", receipt="no-store", unknown="raise ValueError(f'unknown kind {kind!r}')"):  # fmt: skip
    return (
        "def cache_policy(kind):\n"
        "    policies = {\n"
        f"        'article': {article!r},\n"
        f"        'profile': {profile!r},\n"
        f"        'receipt': {receipt!r},\n"
        "    }\n"
        "    if kind not in policies:\n"
        f"        {unknown}\n"
        "    return policies[kind]\n"
    )


def safe_cell(limit="max_connections - reserved", below="limit < 1") -> str:
    return (
        "def safe_concurrency(max_connections, reserved):\n"
        f"    limit = {limit}\n"
        f"    if {below}:\n"
        "        raise ValueError('no connection left for invocations')\n"
        "    return limit\n"
    )


def invoke_cell(workers="limit", call="handler(event, LambdaContext())") -> str:
    return (
        "def invoke_all(handler, events, limit):\n"
        f"    with ThreadPoolExecutor(max_workers={workers}) as pool:\n"
        f"        return list(pool.map(lambda event: {call}, events))\n"
    )


def case(name, breaks, answer, source, loses, **_):
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": {answer: source},
            "loses": [loses], "source": "course"}  # fmt: skip


CASES = [
    # ------------------------------------------------------------------ task 1
    case("creates a new engine at every call", "engine-once", ENGINE_CELL,
         engine_cell("    global ENGINE\n    ENGINE = new_engine(pool_size=1)\n    return ENGINE\n"), T1),
    case("keeps the engine in a private global of another name", "engine-module", ENGINE_CELL,
         engine_cell("    global _engine\n    if '_engine' not in globals():\n"
                     "        _engine = new_engine(pool_size=1)\n    return _engine\n"), T1),
    case("keeps the default pool of five connections", "engine-pool-one", ENGINE_CELL,
         engine_cell("    global ENGINE\n    if ENGINE is None:\n        ENGINE = new_engine()\n"
                     "    return ENGINE\n"), T1),
    case("reads the id from the query string", "handler-path", HANDLER,
         handler_cell(item_id='int(event["queryStringParameters"]["id"])'), T1),
    case("creates an engine inside the handler", "handler-get-engine", HANDLER,
         handler_cell(engine="new_engine(pool_size=1)"), T1),
    case("formats the id into the SQL", "handler-bound", HANDLER,
         handler_cell(query='conn.execute(text(f"SELECT id, title FROM items WHERE id = {item_id}")).first()'), T1),
    case("returns the title alone", "handler-found", HANDLER,
         handler_cell(found='json_response(HTTPStatus.OK, {"title": row.title})'), T1),
    case("answers 200 with null for a missing item", "handler-404", HANDLER,
         handler_cell(missing="json_response(HTTPStatus.OK, None)"), T1),
    case("a 404 whose payload says message, not error", "handler-error", HANDLER,
         handler_cell(missing='json_response(HTTPStatus.NOT_FOUND, {"message": "not found"})'), T1),
    case("disposes of the engine after each invocation", "handler-reuse", HANDLER,
         handler_cell(after="    engine.dispose()\n"), T1),
    # ------------------------------------------------------------------ task 2
    case("a pool of one instead of NullPool", "fn-nullpool", FN,
         fn_cell('new_engine(url, pool_size=1, connect_args={"prepare_threshold": None})'), T2),
    case("create_engine instead of new_engine", "fn-new-engine", FN,
         fn_cell('create_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None})'), T2),
    case("ignores the url it is given", "fn-url", FN,
         fn_cell('new_engine(DATABASE_URL, poolclass=NullPool, connect_args={"prepare_threshold": None})'), T2),
    case("leaves psycopg's prepared statements on", "fn-no-prepare", FN,
         fn_cell("new_engine(url, poolclass=NullPool)"), T2),
    # ------------------------------------------------------------------ task 3
    case("a 304 without the etag header", "etag-header", COND,
         cond_cell(not_modified='HTTPStatus.NOT_MODIFIED, {}, b""'), T3),
    case("a 304 that still sends the body", "etag-304", COND,
         cond_cell(not_modified='HTTPStatus.NOT_MODIFIED, {"etag": etag}, body'), T3),
    case("compares the whole header with the tag", "etag-list", COND,
         cond_cell(sent='request_headers.get("if-none-match", "").removeprefix("W/")'), T3),
    case("forgets the * wildcard", "etag-star", COND, cond_cell(match="etag in sent"), T3),
    case("strong comparison: W/ tags never match", "etag-weak", COND,
         cond_cell(sent='tag.strip() for tag in request_headers.get("if-none-match", "").split(",")'), T3),
    case("any if-none-match header gets a 304", "etag-200", COND,
         cond_cell(match='etag in sent or "*" in sent or "if-none-match" in request_headers'), T3),
    # ------------------------------------------------------------------ task 4
    case("max-age=60 where s-maxage=60 is meant", "cc-s-maxage", POLICY,
         policy_cell(article="public, max-age=60, stale-while-revalidate=30"), T4),
    case("no stale-while-revalidate", "cc-swr", POLICY,
         policy_cell(article="public, max-age=0, s-maxage=60"), T4),
    case("browsers may keep the article", "cc-max-age-0", POLICY,
         policy_cell(article="public, s-maxage=60, stale-while-revalidate=30"), T4),
    case("the article is not marked public", "cc-public", POLICY,
         policy_cell(article="max-age=0, s-maxage=60, stale-while-revalidate=30"), T4),
    case("a profile that a CDN may store", "cc-private", POLICY,
         policy_cell(profile="public, max-age=60"), T4),
    case("no-cache where no-store is meant", "cc-no-store", POLICY,
         policy_cell(receipt="no-cache"), T4),
    case("unknown kinds are not cached instead of refused", "cc-unknown", POLICY,
         policy_cell(unknown="return 'no-store'"), T4),
    # ------------------------------------------------------------------ task 5
    case("forgets the reserved connections", "safe-reserved", SAFE,
         safe_cell(limit="max_connections"), T5),
    case("allows a limit of zero", "safe-raise", SAFE, safe_cell(below="limit < 0"), T5),
    case("one context shared by every invocation", "invoke-context", INVOKE,
         "def invoke_all(handler, events, limit):\n    context = LambdaContext()\n"
         "    with ThreadPoolExecutor(max_workers=limit) as pool:\n"
         "        return list(pool.map(lambda event: handler(event, context), events))\n", T5),
    case("the executor's default number of workers", "invoke-bound", INVOKE,
         invoke_cell(workers="None"), T5),
    case("one worker fewer than the limit, to be safe", "invoke-use-limit", INVOKE,
         invoke_cell(workers="max(1, limit - 1)"), T5),
    case("results in the order they complete", "invoke-order", INVOKE,
         "def invoke_all(handler, events, limit):\n"
         "    with ThreadPoolExecutor(max_workers=limit) as pool:\n"
         "        futures = [pool.submit(handler, event, LambdaContext()) for event in events]\n"
         "        return [f.result() for f in as_completed(futures)]\n"
         "\n\nfrom concurrent.futures import as_completed\n", T5),
    case("raises a handler's error while the others still run", "invoke-error", INVOKE,
         "def invoke_all(handler, events, limit):\n"
         "    pool = ThreadPoolExecutor(max_workers=limit)\n"
         "    futures = [pool.submit(handler, event, LambdaContext()) for event in events]\n"
         "    try:\n"
         "        return [f.result() for f in futures]\n"
         "    finally:\n"
         "        pool.shutdown(wait=False, cancel_futures=True)\n", T5),
]  # fmt: skip


def reviewed(name, breaks, answer, source):
    """A wrong answer written by an outside reviewer, kept as they wrote it."""
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": {answer: source},
            "loses": [TASK_TEST[answer]], "source": "outside review"}  # fmt: skip


TASK_TEST = {ENGINE_CELL: T1, HANDLER: T1, FN: T2, COND: T3, POLICY: T4, SAFE: T5, INVOKE: T5}

# Written by an outside reviewer from the student version and the task text only (they never
# saw the tests). Each of these once earned full marks (or misleading feedback); kept as they
# wrote them.
CASES += [
    reviewed("engine created when the module is imported", "engine-lazy", ENGINE_CELL,
             "ENGINE = new_engine(DATABASE_URL, pool_size=1)  # created when the module is imported\n"
             "\n\ndef get_engine():\n    return ENGINE\n"),
    reviewed("create_engine instead of new_engine", "engine-new-engine", ENGINE_CELL,
             "ENGINE = None\n\n\ndef get_engine():\n    global ENGINE\n    if ENGINE is None:\n"
             "        ENGINE = create_engine(DATABASE_URL, pool_size=1)\n    return ENGINE\n"),
    reviewed("NullPool for the warm engine", "engine-pool-one", ENGINE_CELL,
             "ENGINE = None\n\n\ndef get_engine():\n    global ENGINE\n    if ENGINE is None:\n"
             "        ENGINE = new_engine(DATABASE_URL, poolclass=NullPool)\n    return ENGINE\n"),
    reviewed("splits if-none-match on comma-space only", "etag-spaces", COND,
             "def conditional_response(request_headers, body):\n"
             "    etag = make_etag(body)\n"
             '    headers = {"etag": etag}\n'
             '    if_none_match = request_headers.get("if-none-match")\n'
             "    if if_none_match is not None:\n"
             '        tags = [tag.removeprefix("W/") for tag in if_none_match.split(", ")]\n'
             '        if "*" in tags or etag in tags:\n'
             '            return HTTPStatus.NOT_MODIFIED, headers, b""\n'
             "    return HTTPStatus.OK, headers, body\n"),
    reviewed("looks for the digest as a substring of the header", "etag-whole", COND,
             "def conditional_response(request_headers, body):\n"
             "    etag = make_etag(body)\n"
             '    headers = {"etag": etag}\n'
             '    if_none_match = request_headers.get("if-none-match", "")\n'
             "    if if_none_match.strip() == \"*\" or etag.strip('\"') in if_none_match:\n"
             '        return HTTPStatus.NOT_MODIFIED, headers, b""\n'
             "    return HTTPStatus.OK, headers, body\n"),
    reviewed("at most four workers, whatever the limit", "invoke-use-limit", INVOKE,
             "def invoke_all(handler, events, limit):\n"
             "    with ThreadPoolExecutor(max_workers=min(limit, 4)) as pool:\n"
             "        return list(pool.map(lambda event: handler(event, LambdaContext()), events))\n"),
    reviewed("a semaphore released outside finally", "invoke-error", INVOKE,
             "def invoke_all(handler, events, limit):\n"
             "    slots = threading.Semaphore(limit)\n"
             "    results = [None] * len(events)\n"
             "\n"
             "    def run(i, event):\n"
             "        slots.acquire()\n"
             "        results[i] = handler(event, LambdaContext())\n"
             "        slots.release()\n"
             "\n"
             "    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(events)]\n"
             "    for t in threads:\n"
             "        t.start()\n"
             "    for t in threads:\n"
             "        t.join()\n"
             "    return results\n"),
    reviewed("chunks of limit events, each waited for", "invoke-refill", INVOKE,
             "def invoke_all(handler, events, limit):\n"
             "    results = []\n"
             "    with ThreadPoolExecutor(max_workers=limit) as pool:\n"
             "        for start in range(0, len(events), limit):\n"
             "            chunk = events[start : start + limit]\n"
             "            results.extend(pool.map(lambda event: handler(event, LambdaContext()), chunk))\n"
             "    return results\n"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "engine with `or`, a bounded overflow too",
        "notebook": NB,
        "answers": {
            ENGINE_CELL: engine_cell(
                "    global ENGINE\n    ENGINE = ENGINE or new_engine(pool_size=1, max_overflow=0)\n"
                "    return ENGINE\n"
            ),
            HANDLER: handler_cell(
                item_id='int(event["rawPath"].rsplit("/", 1)[1])',
                query='conn.execute(text("SELECT id, title FROM items WHERE id = :i"), {"i": item_id}).one_or_none()',
            ),
            FN: fn_cell(
                "new_engine(url, connect_args=dict(prepare_threshold=None), poolclass=NullPool)"
            ),
            COND: (
                "def conditional_response(request_headers, body):\n"
                "    etag = make_etag(body)\n"
                "    header = request_headers.get('if-none-match')\n"
                "    if header is not None:\n"
                "        tags = {t.strip()[2:] if t.strip().startswith('W/') else t.strip()\n"
                "                for t in header.split(',')}\n"
                "        if '*' in tags or etag in tags:\n"
                "            return 304, {'etag': etag}, b''\n"
                "    return 200, {'etag': etag, 'content-type': 'application/json'}, body\n"
            ),
            POLICY: (
                "def cache_policy(kind):\n"
                "    if kind == 'article':\n"
                "        return 's-maxage=60, stale-while-revalidate=30, max-age=0, public'\n"
                "    elif kind == 'profile':\n"
                "        return 'max-age=60, private'\n"
                "    elif kind == 'receipt':\n"
                "        return 'no-store'\n"
                "    raise ValueError(kind)\n"
            ),
            SAFE: (
                "def safe_concurrency(max_connections, reserved):\n"
                "    if max_connections - reserved <= 0:\n"
                "        raise ValueError('nothing left')\n"
                "    return max_connections - reserved\n"
            ),
            INVOKE: (
                "def invoke_all(handler, events, limit):\n"
                "    gate = threading.BoundedSemaphore(limit)\n"
                "    results, errors = [None] * len(events), []\n"
                "    def run(i, event):\n"
                "        with gate:\n"
                "            try:\n"
                "                results[i] = handler(event, LambdaContext())\n"
                "            except Exception as error:\n"
                "                errors.append(error)\n"
                "    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(events)]\n"
                "    for t in threads:\n"
                "        t.start()\n"
                "    for t in threads:\n"
                "        t.join()\n"
                "    if errors:\n"
                "        raise errors[0]\n"
                "    return results\n"
            ),
        },
    },
    {
        "name": "an outside reviewer's: a worker per event, a semaphore of limit slots",
        "notebook": NB,
        "answers": {
            INVOKE: (
                "def invoke_all(handler, events, limit):\n"
                "    with ThreadPoolExecutor(max_workers=len(events) or 1) as pool:\n"
                "        slots = threading.BoundedSemaphore(limit)\n"
                "\n"
                "        def run(event):\n"
                "            with slots:\n"
                "                return handler(event, LambdaContext())\n"
                "\n"
                "        return list(pool.map(run, events))\n"
            ),
        },
    },
]
