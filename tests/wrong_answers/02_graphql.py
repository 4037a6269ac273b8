"""02-graphql: the requirement table of each task of Step 8's exercises, and at least one
plausible wrong answer per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step08-graphql.ipynb"

LOADER = "load_posts_by_author"
CONTEXT_CELL = "make_context"
EMAIL = "email_for"
EDIT = "edit_post"
SCHEMA = "build_schema"
SUBSCRIPTION = "post_created"

REQUIREMENTS = [
    # Task 1
    Requirement("t1-authors", NB, LOADER, "Read the posts of all the authors in `author_ids`", "test_load_posts_by_author"),
    Requirement("t1-one-statement", NB, LOADER, "with one statement", "test_load_posts_by_author"),
    Requirement("t1-columns", NB, LOADER, "that selects only `POST_COLUMNS`", "test_load_posts_by_author"),
    Requirement("t1-key-order", NB, LOADER, "return one list per author, in the order of `author_ids`", "test_load_posts_by_author"),
    Requirement("t1-id-order", NB, LOADER, "ordered by post id", "test_load_posts_by_author"),
    Requirement("t1-empty", NB, LOADER, "An author without posts gets an empty list.", "test_load_posts_by_author"),
    # Task 2
    Requirement("t2-new-loader", NB, CONTEXT_CELL, "give it a new `DataLoader`", "test_make_context"),
    Requirement("t2-through-loader", NB, CONTEXT_CELL, "it returns the user's posts through the request's loader", "test_make_context"),
    Requirement("t2-two-statements", NB, CONTEXT_CELL, "must then send 2 statements, whatever the number of users", "test_make_context"),
    # Task 3
    Requirement("t3-owner", NB, EMAIL, "return the user's e-mail (`user.private_email`) only when the request's viewer is that user", "test_email_for"),
    Requirement("t3-anonymous", NB, EMAIL, "and `None` (not an error) for every other viewer and without a token", "test_email_for"),
    Requirement("t3-bad-token", NB, EMAIL, "A bad token (forged or expired) must fail with `viewer()`'s error, never be read as no token.", "test_email_for"),
    # Task 4
    Requirement("t4-auth", NB, EDIT, "Without a valid token, fail with `info.context.require_viewer()`'s error", "test_edit_post"),
    Requirement("t4-auth-first", NB, EDIT, "before sending any statement", "test_edit_post"),
    Requirement("t4-missing", NB, EDIT, "For a post that does not exist, raise `GraphQLError` with a message containing `no post`.", "test_edit_post"),
    Requirement("t4-author-only", NB, EDIT, "When the viewer is not the post's author, raise `GraphQLError` with a message containing `forbidden` and change nothing.", "test_edit_post"),
    Requirement("t4-that-post", NB, EDIT, "Otherwise set the title of that post only", "test_edit_post"),
    # Task 5
    Requirement("t5-refused", NB, SCHEMA, "so that a query nested deeper is refused while it is validated, before any statement", "test_build_schema"),
    Requirement("t5-max-depth", NB, SCHEMA, "plus strawberry's `QueryDepthLimiter` extension with the given `max_depth`", "test_build_schema"),
    Requirement("t5-same-schema", NB, SCHEMA, "the same schema as `schema` (`Query` and `Mutation`)", "test_build_schema"),
    Requirement("t5-within", NB, SCHEMA, "and a query within the limit runs as before", "test_build_schema"),
    # Task 6
    Requirement("t6-announce", NB, SUBSCRIPTION, "publish the post on `CHANNEL` as JSON with exactly the keys `id`, `title` and `author_id`", "test_post_created"),
    Requirement("t6-types", NB, SUBSCRIPTION, "(`id` and `author_id` as JSON numbers, `title` as a string)", "test_post_created"),
    Requirement("t6-messages", NB, SUBSCRIPTION, "yield a `PostType` for each message (its `\"type\"` is `\"message\"`; skip the subscription confirmations), decoded from the JSON", "test_post_created"),
    Requirement("t6-channel", NB, SUBSCRIPTION, "subscribe to `CHANNEL` (with `r.pubsub()`)", "test_post_created"),
    Requirement("t6-close", NB, SUBSCRIPTION, "When the generator is closed, the subscription must end", "test_post_created"),
    Requirement("t6-connection", NB, SUBSCRIPTION, "and its Redis connection must be closed, not left open and idle", "test_post_created"),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "A DataLoader collects the keys that resolvers ask for during one tick of the event loop",
        "The result must equal what `naive_posts` returns for each author.",
    ],
    (NB, "task2"): [
        "`execute` builds each request's context with your `make_context(authorization)`.",
        "A loader caches what it has loaded, so a loader shared between requests would serve old rows.",
    ],
    (NB, "task4"): [
        "Complete `edit_post(info, post_id, title)`, behind the `updatePost` mutation."
    ],
    (NB, "task5"): [
        "Posts have authors and authors have posts, so a client can nest a query as deep as it likes.",
    ],
    (NB, "task6"): [
        "Each server instance has its own Redis client; a post created on instance A must reach "
        "a subscriber of instance B, so both go through the channel `CHANNEL`.",
    ],
}

# ---------------------------------------------------------------------- answers, by task


def loader(statement: str, group: str | None = None, result: str | None = None) -> str:
    group = group or (
        "    posts = {author_id: [] for author_id in author_ids}\n"
        "    for row in rows:\n"
        "        posts[row.author_id].append(post_from(row))\n"
    )
    result = result or "    return [posts[author_id] for author_id in author_ids]\n"
    return (
        "async def load_posts_by_author(context, author_ids: list[int]) -> list[list[PostType]]:\n"
        f"    rows = await context.fetch(\n        {statement}\n    )\n" + group + result
    )


RIGHT_SELECT = "select(*POST_COLUMNS).where(Post.author_id.in_(author_ids)).order_by(Post.id)"

RIGHT_CONTEXT = (
    "def make_context(authorization=None):\n"
    "    context = new_context(authorization)\n"
    "    context.loaders = {\n"
    '        "posts_by_author": DataLoader(load_fn=lambda ids: load_posts_by_author(context, ids))\n'
    "    }\n"
    "    return context\n"
)
RIGHT_RESOLVER = (
    "async def user_posts(info: Info, user: UserType) -> list[PostType]:\n"
    '    return await info.context.loaders["posts_by_author"].load(user.id)\n'
)


def email(body: str) -> str:
    return "def email_for(info: Info, user: UserType) -> str | None:\n" + body


def edit(auth: str, missing: str, forbidden: str, write: str) -> str:
    return (
        "async def edit_post(info: Info, post_id: int, title: str) -> PostType:\n"
        + auth
        + "    rows = await info.context.fetch(select(Post.author_id).where(Post.id == post_id))\n"
        + missing
        + forbidden
        + f"    row = await info.context.write(\n        {write}\n    )\n"
        "    return post_from(row)\n"
    )


AUTH = "    viewer = info.context.require_viewer()\n"
MISSING = '    if not rows:\n        raise GraphQLError(f"no post {post_id}")\n'
FORBIDDEN = (
    "    if rows[0].author_id != viewer:\n"
    '        raise GraphQLError(f"forbidden: only the author of post {post_id} may edit it")\n'
)
WRITE = "update(Post).where(Post.id == post_id).values(title=title).returning(*POST_COLUMNS)"


def schema(body: str) -> str:
    return "def build_schema(max_depth: int = MAX_DEPTH) -> strawberry.Schema:\n" + body


ANNOUNCE = (
    "async def announce(r, post: PostType) -> None:\n"
    '    await r.publish(CHANNEL, json.dumps({"id": post.id, "title": post.title, '
    '"author_id": post.author_id}))\n'
)


def stream(body: str, announce: str = ANNOUNCE) -> str:
    return announce + "\n\nasync def post_created(r):\n" + body


RIGHT_STREAM = (
    "    async with r.pubsub() as pubsub:\n"
    "        await pubsub.subscribe(CHANNEL)\n"
    "        async for message in pubsub.listen():\n"
    '            if message["type"] == "message":\n'
    '                yield PostType(**json.loads(message["data"]))\n'
)


def case(name, breaks, answer, source, loses):
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": answer,
            "loses": [loses], "source": source}  # fmt: skip


CASES = [
    # ------------------------------------------------------------------ task 1
    case("filters posts by post id instead of author id", "t1-authors",
         {LOADER: loader("select(*POST_COLUMNS).where(Post.id.in_(author_ids)).order_by(Post.id)")},
         "course", "test_load_posts_by_author"),
    case("one statement per author (the N+1 inside the loader)", "t1-one-statement",
         {LOADER: "async def load_posts_by_author(context, author_ids):\n"
                  "    result = []\n"
                  "    for author_id in author_ids:\n"
                  "        rows = await context.fetch(select(*POST_COLUMNS).where(Post.author_id == author_id).order_by(Post.id))\n"
                  "        result.append([post_from(row) for row in rows])\n"
                  "    return result\n"},
         "course", "test_load_posts_by_author"),
    case("selects every column of the posts table, bodies too", "t1-columns",
         {LOADER: "async def load_posts_by_author(context, author_ids: list[int]) -> list[list[PostType]]:\n"
                  "    rows = await context.fetch(\n"
                  "        select(Post.__table__).where(Post.author_id.in_(author_ids)).order_by(Post.id)\n"
                  "    )\n"
                  "    grouped = {author_id: [] for author_id in author_ids}\n"
                  "    for row in rows:\n"
                  "        grouped[row.author_id].append(post_from(row))\n"
                  "    return [grouped[author_id] for author_id in author_ids]\n"},
         "outside review", "test_load_posts_by_author"),
    case("returns the lists in the order of sorted ids", "t1-key-order",
         {LOADER: loader(RIGHT_SELECT, result="    return [posts[author_id] for author_id in sorted(author_ids)]\n")},
         "course", "test_load_posts_by_author"),
    case("no ORDER BY: posts in the order the table scan meets them", "t1-id-order",
         {LOADER: loader("select(*POST_COLUMNS).where(Post.author_id.in_(author_ids))")},
         "course", "test_load_posts_by_author"),
    case("groups only the rows it got: None for an author without posts", "t1-empty",
         {LOADER: loader(RIGHT_SELECT,
                         group="    posts = {}\n    for row in rows:\n"
                               "        posts.setdefault(row.author_id, []).append(post_from(row))\n",
                         result="    return [posts.get(author_id) for author_id in author_ids]\n")},
         "course", "test_load_posts_by_author"),
    case("drops authors without posts from the result", "t1-empty",
         {LOADER: loader(RIGHT_SELECT,
                         group="    posts = {}\n    for row in rows:\n"
                               "        posts.setdefault(row.author_id, []).append(post_from(row))\n",
                         result="    return [posts[author_id] for author_id in author_ids if author_id in posts]\n")},
         "course", "test_load_posts_by_author"),
    # ------------------------------------------------------------------ task 2
    case("one loader for the whole process, built on the first request", "t2-new-loader",
         {CONTEXT_CELL: "LOADERS = {}\n\n\n"
                        "def make_context(authorization=None):\n"
                        "    context = new_context(authorization)\n"
                        "    if not LOADERS:\n"
                        '        LOADERS["posts_by_author"] = DataLoader(load_fn=lambda ids: load_posts_by_author(context, ids))\n'
                        "    context.loaders = LOADERS\n"
                        "    return context\n\n\n" + RIGHT_RESOLVER},
         "course", "test_make_context"),
    case("the resolver queries the database itself (naive)", "t2-through-loader",
         {CONTEXT_CELL: RIGHT_CONTEXT + "\n\n"
                        "async def user_posts(info: Info, user: UserType) -> list[PostType]:\n"
                        "    return (await load_posts_by_author(info.context, [user.id]))[0]\n"},
         "course", "test_make_context"),
    case("a new DataLoader inside the resolver, one per user", "t2-two-statements",
         {CONTEXT_CELL: RIGHT_CONTEXT + "\n\n"
                        "async def user_posts(info: Info, user: UserType) -> list[PostType]:\n"
                        "    loader = DataLoader(load_fn=lambda ids: load_posts_by_author(info.context, ids))\n"
                        "    return await loader.load(user.id)\n"},
         "course", "test_make_context"),
    # ------------------------------------------------------------------ task 3
    case("any signed-in viewer sees every e-mail", "t3-owner",
         {EMAIL: email("    return user.private_email if info.context.viewer() else None\n")},
         "course", "test_email_for"),
    case("hides the e-mail from everyone, its owner too", "t3-owner",
         {EMAIL: email("    return None\n")}, "course", "test_email_for"),
    case("hides e-mails from other signed-in users only, not from anonymous requests", "t3-anonymous",
         {EMAIL: email("    viewer = info.context.viewer()\n"
                       "    if viewer is not None and viewer != user.id:\n"
                       "        return None\n"
                       "    return user.private_email\n")},
         "course", "test_email_for"),
    case("require_viewer(): an anonymous request gets one error per user", "t3-anonymous",
         {EMAIL: email("    if info.context.require_viewer() == user.id:\n"
                       "        return user.private_email\n"
                       "    return None\n")},
         "outside review", "test_email_for"),
    case("a bad token is read as no token", "t3-bad-token",
         {EMAIL: email("    try:\n"
                       "        viewer = info.context.viewer()\n"
                       "    except GraphQLError:\n"
                       "        viewer = None\n"
                       "    return user.private_email if viewer == user.id else None\n")},
         "outside review", "test_email_for"),
    # ------------------------------------------------------------------ task 4
    case("reads the viewer without requiring one: anonymous gets 'forbidden'", "t4-auth",
         {EDIT: edit("    viewer = info.context.viewer()\n", MISSING, FORBIDDEN, WRITE)},
         "course", "test_edit_post"),
    case("reads the post before checking the token", "t4-auth-first",
         {EDIT: "async def edit_post(info: Info, post_id: int, title: str) -> PostType:\n"
                "    rows = await info.context.fetch(select(Post.author_id).where(Post.id == post_id))\n"
                + AUTH + MISSING + FORBIDDEN
                + f"    row = await info.context.write(\n        {WRITE}\n    )\n"
                "    return post_from(row)\n"},
         "course", "test_edit_post"),
    case("no check for a missing post (an IndexError)", "t4-missing",
         {EDIT: edit(AUTH, "", FORBIDDEN, WRITE)}, "course", "test_edit_post"),
    case("no author check: anyone signed in edits any post", "t4-author-only",
         {EDIT: edit(AUTH, MISSING, "", WRITE)}, "course", "test_edit_post"),
    case("checks the author after writing", "t4-author-only",
         {EDIT: "async def edit_post(info: Info, post_id: int, title: str) -> PostType:\n" + AUTH
                + "    rows = await info.context.fetch(select(Post.author_id).where(Post.id == post_id))\n"
                + MISSING
                + f"    row = await info.context.write(\n        {WRITE}\n    )\n"
                + FORBIDDEN + "    return post_from(row)\n"},
         "course", "test_edit_post"),
    case("lets the viewer whose id is the post's id edit it too", "t4-author-only",
         {EDIT: "async def edit_post(info: Info, post_id: int, title: str) -> PostType:\n"
                "    viewer = info.context.require_viewer()\n"
                "    rows = await info.context.fetch(select(*POST_COLUMNS).where(Post.id == post_id))\n"
                "    if not rows:\n"
                '        raise GraphQLError(f"no post with id {post_id}")\n'
                "    if viewer not in (rows[0].author_id, rows[0].id):\n"
                '        raise GraphQLError(f"forbidden: post {post_id} is not yours")\n'
                "    row = await info.context.write(\n"
                "        update(Post).where(Post.id == post_id).values(title=title).returning(*POST_COLUMNS)\n"
                "    )\n"
                "    return post_from(row)\n"},
         "outside review", "test_edit_post"),
    case("an UPDATE without WHERE: every post gets the title", "t4-that-post",
         {EDIT: edit(AUTH, MISSING, FORBIDDEN,
                     "update(Post).values(title=title).returning(*POST_COLUMNS)")},
         "course", "test_edit_post"),
    # ------------------------------------------------------------------ task 5
    case("no depth limit", "t5-refused",
         {SCHEMA: schema("    return strawberry.Schema(query=Query, mutation=Mutation)\n")},
         "course", "test_build_schema"),
    case("the depth limit of the setup cell, whatever max_depth says", "t5-max-depth",
         {SCHEMA: schema("    return strawberry.Schema(query=Query, mutation=Mutation, "
                         "extensions=[lambda: QueryDepthLimiter(max_depth=MAX_DEPTH)])\n")},
         "course", "test_build_schema"),
    case("leaves the mutations out", "t5-same-schema",
         {SCHEMA: schema("    return strawberry.Schema(query=Query, "
                         "extensions=[lambda: QueryDepthLimiter(max_depth=max_depth)])\n")},
         "course", "test_build_schema"),
    case("off by one: refuses a query at exactly max_depth", "t5-within",
         {SCHEMA: schema("    return strawberry.Schema(query=Query, mutation=Mutation, "
                         "extensions=[lambda: QueryDepthLimiter(max_depth=max_depth - 1)])\n")},
         "course", "test_build_schema"),
    # ------------------------------------------------------------------ task 6
    case("announces the author under the key 'author'", "t6-announce",
         {SUBSCRIPTION: stream(RIGHT_STREAM, announce=(
             "async def announce(r, post: PostType) -> None:\n"
             '    await r.publish(CHANNEL, json.dumps({"id": post.id, "title": post.title, "author": post.author_id}))\n'))},
         "course", "test_post_created"),
    case("announces the ids as strings (and reads them back with int())", "t6-types",
         {SUBSCRIPTION: stream(
             "    async with r.pubsub() as pubsub:\n"
             "        await pubsub.subscribe(CHANNEL)\n"
             "        async for message in pubsub.listen():\n"
             '            if message["type"] != "message":\n'
             "                continue\n"
             '            data = json.loads(message["data"])\n'
             '            yield PostType(id=int(data["id"]), title=data["title"], author_id=int(data["author_id"]))\n',
             announce=(
                 "async def announce(r, post: PostType) -> None:\n"
                 '    payload = {"id": str(post.id), "title": post.title, "author_id": str(post.author_id)}\n'
                 "    await r.publish(CHANNEL, json.dumps(payload))\n"))},
         "outside review", "test_post_created"),
    case("yields the subscription confirmation too", "t6-messages",
         {SUBSCRIPTION: stream("    async with r.pubsub() as pubsub:\n"
                               "        await pubsub.subscribe(CHANNEL)\n"
                               "        async for message in pubsub.listen():\n"
                               '            yield PostType(**json.loads(message["data"]))\n')},
         "course", "test_post_created"),
    case("subscribes to every channel of the namespace with a pattern", "t6-channel",
         {SUBSCRIPTION: stream("    async with r.pubsub() as pubsub:\n"
                               '        await pubsub.psubscribe(ns.key("*"))\n'
                               "        async for message in pubsub.listen():\n"
                               '            if message["type"] == "pmessage":\n'
                               '                yield PostType(**json.loads(message["data"]))\n')},
         "course", "test_post_created"),
    case("never closes its pub/sub connection", "t6-close",
         {SUBSCRIPTION: stream("    pubsub = r.pubsub()\n"
                               "    await pubsub.subscribe(CHANNEL)\n"
                               "    async for message in pubsub.listen():\n"
                               '        if message["type"] == "message":\n'
                               '            yield PostType(**json.loads(message["data"]))\n')},
         "course", "test_post_created"),
    case("unsubscribes when closed, but never closes the pub/sub's connection", "t6-connection",
         {SUBSCRIPTION: stream("    pubsub = r.pubsub()\n"
                               "    await pubsub.subscribe(CHANNEL)\n"
                               "    try:\n"
                               "        async for message in pubsub.listen():\n"
                               '            if message["type"] != "message":\n'
                               "                continue\n"
                               '            data = json.loads(message["data"])\n'
                               '            yield PostType(id=data["id"], title=data["title"], author_id=data["author_id"])\n'
                               "    finally:\n"
                               "        await pubsub.unsubscribe(CHANNEL)\n",
                               announce=(
                                   "async def announce(r, post: PostType) -> None:\n"
                                   '    payload = {"id": post.id, "title": post.title, "author_id": post.author_id}\n'
                                   "    await r.publish(CHANNEL, json.dumps(payload))\n"))},
         "outside review", "test_post_created"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "a defaultdict, and the keys read back in order",
        "notebook": NB,
        "answers": {
            LOADER: "from collections import defaultdict\n\n\n"
            "async def load_posts_by_author(context, author_ids):\n"
            "    statement = select(*POST_COLUMNS).where(Post.author_id.in_(author_ids)).order_by(Post.id.asc())\n"
            "    by_author = defaultdict(list)\n"
            "    for row in await context.fetch(statement):\n"
            "        by_author[row.author_id].append(post_from(row))\n"
            "    return [list(by_author[key]) for key in author_ids]\n"
        },
    },
    {
        "name": "an if statement for the e-mail rule",
        "notebook": NB,
        "answers": {
            EMAIL: email(
                "    if info.context.viewer() == user.id:\n"
                "        return user.private_email\n"
                "    return None\n"
            )
        },
    },
    {
        "name": "the extension as an instance (deprecated, still works)",
        "notebook": NB,
        "answers": {
            SCHEMA: schema(
                "    limiter = QueryDepthLimiter(max_depth=max_depth)\n"
                "    return strawberry.Schema(Query, Mutation, extensions=[limiter])\n"
            )
        },
    },
    {
        "name": "explicit try/finally instead of async with",
        "notebook": NB,
        "answers": {
            SUBSCRIPTION: stream(
                "    pubsub = r.pubsub()\n"
                "    await pubsub.subscribe(CHANNEL)\n"
                "    try:\n"
                "        async for message in pubsub.listen():\n"
                '            if message["type"] != "message":\n'
                "                continue\n"
                '            fields = json.loads(message["data"])\n'
                '            yield PostType(id=fields["id"], title=fields["title"], author_id=fields["author_id"])\n'
                "    finally:\n"
                "        await pubsub.aclose()\n"
            )
        },
    },
]
