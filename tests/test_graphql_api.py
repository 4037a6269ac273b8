"""The GraphQL API (labkit.graphql_api, labkit.gql_auth) against the course's real PostgreSQL
and Redis, served by real uvicorn processes through the supervisor."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time

import jwt
import pytest

from labkit import config, data, db, gql_auth, graphql_api
from labkit.supervisor import Supervisor

NESTED = (
    "{ users(limit: 1000) { id name posts { id title comments { id body author { id name } } } } }"
)


@pytest.fixture(scope="module")
def blog():
    database = data.blog_database("test_graphql_api", users=30, posts=60, comments=120)
    graphql_api.prepare_database(database.url)
    graphql_api.set_password(database.url, 1, "pw-one")
    graphql_api.set_password(database.url, 2, "pw-two")
    yield database
    db.drop_database("test_graphql_api")


@pytest.fixture(scope="module")
def servers(blog):
    key = secrets.token_urlsafe(48)
    channel = f"labkit:test:{secrets.token_hex(4)}"
    with Supervisor(say=lambda message: None) as supervisor:
        a = graphql_api.start(supervisor, database_url=blog.url, key=key, name="gql-a",
                              redis_url=config.redis_url(), channel=channel)  # fmt: skip
        b = graphql_api.start(supervisor, database_url=blog.url, key=key, name="gql-b",
                              redis_url=config.redis_url(), channel=channel)  # fmt: skip
        yield {"a": a, "b": b, "key": key, "channel": channel}
        for server in (a, b):
            graphql_api.stop(supervisor, server)


def login(url, email, password):
    with graphql_api.Client(url) as client:
        outcome = client.call(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) }",
            {"e": email, "p": password},
        )
    assert outcome.errors is None, outcome.errors
    return outcome.data["login"]


def email_of(user_id: int, database) -> str:
    with database.connect() as conn:
        return conn.execute("SELECT email FROM users WHERE id = %s", (user_id,)).fetchone()[0]


def test_dataloaders_send_three_statements_with_the_same_json_as_naive(servers):
    """Over HTTP: naive resolvers send 1 + users + posts + comments statements; the
    DataLoader endpoint sends 3, and both return the same data."""
    with (
        graphql_api.Client(servers["a"].naive_url) as naive,
        graphql_api.Client(servers["a"].url) as batched,
    ):
        slow, fast = naive.call(NESTED), batched.call(NESTED)
    assert slow.errors is None and fast.errors is None
    assert slow.data == fast.data
    users = slow.data["users"]
    posts = [p for u in users for p in u["posts"]]
    comments = [c for p in posts for c in p["comments"]]
    assert (len(users), len(posts), len(comments)) == (30, 60, 120)
    assert slow.statements == 1 + len(users) + len(posts) + len(comments)
    assert fast.statements == 3


def test_loaders_are_per_request(blog):
    """A loader caches: two requests through one Api each send their own statements."""
    api = graphql_api.Api(blog.url)
    first = asyncio.run(api.run(NESTED))
    second = asyncio.run(api.run(NESTED))
    assert first.statements == second.statements == 3


def test_depth_limit_rejects_before_any_sql(servers):
    """A deeply nested query is refused while validating: an error, no data, 0 statements."""
    hostile = "{ users(limit: 1000) " + "{ posts { author " * 5 + "{ id }" + " } }" * 5 + " }"
    with graphql_api.Client(servers["a"].naive_url) as client:
        outcome = client.call(hostile)
    assert outcome.data is None
    assert "exceeds maximum operation depth" in outcome.errors[0]["message"]
    assert outcome.statements == 0


def test_page_size_cap(blog):
    """A page over the cap, or a negative offset, is an input error before any SQL."""
    api = graphql_api.Api(blog.url, max_page=10)
    too_big = asyncio.run(api.run("{ users(limit: 11) { id } }"))
    assert too_big.data is None and too_big.statements == 0
    assert "limit must be between 1 and 10" in too_big.errors[0].message
    negative = asyncio.run(api.run("{ posts(limit: 5, offset: -1) { id } }"))
    assert "offset must be 0 or more" in negative.errors[0].message
    page = asyncio.run(api.run("{ users(limit: 10, offset: 10) { id } }"))
    assert [u["id"] for u in page.data["users"]] == list(range(11, 21))


def test_login_checks_argon2_hashes(blog, servers):
    """The right password gets a token for that user; a wrong one or an unknown e-mail get
    the same error; the stored value is an argon2 hash, never the password."""
    token = login(servers["a"].url, email_of(1, blog), "pw-one")
    assert jwt.decode(token, servers["key"].encode(), algorithms=["HS256"])["sub"] == "1"
    with graphql_api.Client(servers["a"].url) as client:
        query = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) }"
        wrong = client.call(query, {"e": email_of(1, blog), "p": "pw-two"})
        unknown = client.call(query, {"e": "nobody@example.com", "p": "pw-one"})
    assert wrong.data is None and unknown.data is None
    assert wrong.errors[0]["message"] == unknown.errors[0]["message"] == "wrong e-mail or password"
    with blog.connect() as conn:
        stored = conn.execute("SELECT password_hash FROM user_credentials WHERE user_id = 1")
        assert stored.fetchone()[0].startswith("$argon2id$")


def forged(claims: dict, header: dict) -> str:
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def test_token_attacks_get_errors_and_no_data(blog, servers):
    """Tampered, expired, alg-none and missing tokens: a clear error each, data null; a
    valid token gets the viewer's own e-mail."""
    key = servers["key"].encode()
    good = login(servers["a"].url, email_of(1, blog), "pw-one")
    header, claims, signature = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    tampered = ".".join([header, forged({**payload, "sub": "2"}, {}).split(".")[1], signature])
    expired = gql_auth.issue_token(1, key, minutes=1, now=time.time() - 3600)
    none = forged({**payload, "sub": "2"}, {"alg": "none", "typ": "JWT"})
    query = "{ me { id email } }"
    expected = {
        "tampered": (tampered, "signature does not match"),
        "expired": (expired, "token expired"),
        "alg none": (none, "algorithm is not allowed"),
        "missing": (None, "not authenticated"),
    }
    with graphql_api.Client(servers["a"].url) as client:
        for name, (token, message) in expected.items():
            outcome = client.call(query, token=token)
            assert outcome.data is None, name
            assert message in outcome.errors[0]["message"], (name, outcome.errors)
        ok = client.call(query, token=good)
    assert ok.data == {"me": {"id": 1, "email": email_of(1, blog)}}


def test_email_is_visible_to_its_owner_only(blog, servers):
    """users { email }: the viewer's own e-mail, null for every other user."""
    token = login(servers["a"].url, email_of(2, blog), "pw-two")
    with graphql_api.Client(servers["a"].url) as client:
        outcome = client.call("{ users(limit: 5) { id email } }", token=token)
        anonymous = client.call("{ users(limit: 5) { id email } }")
    shown = {u["id"]: u["email"] for u in outcome.data["users"]}
    assert shown == {1: None, 2: email_of(2, blog), 3: None, 4: None, 5: None}
    assert all(u["email"] is None for u in anonymous.data["users"])


def test_only_the_author_edits_a_post_and_inputs_are_checked(blog, servers):
    """Create a post as user 1, add a comment as user 2; user 2 may not edit it, user 1
    may; blank input and unknown posts are GraphQL errors."""
    one = login(servers["a"].url, email_of(1, blog), "pw-one")
    two = login(servers["a"].url, email_of(2, blog), "pw-two")
    create = 'mutation($t: String!) { createPost(input: {title: $t, body: "b"}) { id title } }'
    edit = 'mutation($id: Int!) { updatePost(id: $id, title: "changed") { id title } }'
    with graphql_api.Client(servers["a"].url) as client:
        post = client.call(create, {"t": "mine"}, token=one).data["createPost"]
        blank = client.call(create, {"t": "   "}, token=one)
        comment = client.call(
            "mutation($p: Int!) { addComment(postId: $p, body: \"hi\") { id body } }",
            {"p": post["id"]}, token=two,
        )  # fmt: skip
        orphan = client.call("mutation { addComment(postId: 999999, body: \"x\") { id } }",
                             token=two)  # fmt: skip
        refused = client.call(edit, {"id": post["id"]}, token=two)
        allowed = client.call(edit, {"id": post["id"]}, token=one)
    assert blank.data is None and "title must be 1 to 200 characters" in blank.errors[0]["message"]
    assert comment.data["addComment"]["body"] == "hi"
    assert orphan.data is None and "no post 999999" in orphan.errors[0]["message"]
    assert refused.data is None and "only the author" in refused.errors[0]["message"]
    assert allowed.data == {"updatePost": {"id": post["id"], "title": "changed"}}
    with blog.connect() as conn:
        title = conn.execute("SELECT title FROM posts WHERE id = %s", (post["id"],)).fetchone()
    assert title == ("changed",)


def test_a_post_created_on_a_reaches_a_subscriber_on_b(blog, servers):
    """graphql-transport-ws: a subscriber authenticated in connection_init on instance B
    receives the post created through instance A; a bad token is refused (4403)."""
    token = login(servers["a"].url, email_of(1, blog), "pw-one")

    async def scenario():
        async with graphql_api.Subscriber(servers["b"].ws_url, token) as sub:
            await sub.subscribe("subscription { postCreated { id title author { id } } }")
            listening = await asyncio.to_thread(
                graphql_api.wait_for_subscribers, config.redis_url(), servers["channel"], 1
            )
            assert listening == 1
            with graphql_api.Client(servers["a"].url) as client:
                created = await asyncio.to_thread(
                    client.call,
                    'mutation { createPost(input: {title: "across", body: "b"}) { id } }',
                    token=token,
                )
            received = await sub.next()
            return sub.ack, created, received

    ack, created, received = asyncio.run(scenario())
    assert ack["instance"] == "gql-b"
    new_id = created.data["createPost"]["id"]
    assert received["data"] == {
        "postCreated": {"id": new_id, "title": "across", "author": {"id": 1}}
    }

    async def refused():
        async with graphql_api.Subscriber(servers["b"].ws_url, token + "x"):
            pass

    with pytest.raises(PermissionError, match="4403"):
        asyncio.run(refused())


def test_short_keys_are_refused():
    """A JWT key under 32 bytes is refused with what to do; an unset key is random."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        gql_auth.signing_key({gql_auth.KEY_ENV: "x" * 31})
    assert gql_auth.signing_key({}) != gql_auth.signing_key({})
    assert len(gql_auth.signing_key({})) >= 32


def test_statements_report_prints_the_step_table():
    """`python -m labkit.graphql_api`'s table: naive 1 + N + posts + comments, DataLoader 3."""
    table = graphql_api.statements_report([4, 8], progress=False)
    assert list(table.index) == [4, 8]
    assert list(table["naive statements"]) == [1 + n + 2 * n + 4 * n for n in (4, 8)]
    assert list(table["DataLoader statements"]) == [3, 3]


def test_a_subscription_gets_fresh_loaders_and_no_held_connection_per_message(blog, servers):
    """strawberry builds a WebSocket's context once per connection: each message must still
    get fresh loaders (a renamed author is seen renamed) and give its connection back while
    the subscription waits (B's pool: 0 connections in use between messages)."""
    token = login(servers["a"].url, email_of(1, blog), "pw-one")
    with blog.connect() as conn:
        old = conn.execute("SELECT name FROM users WHERE id = 1").fetchone()[0]
    create = 'mutation { createPost(input: {title: "fresh", body: "b"}) { id } }'

    async def scenario():
        names, idle = [], []
        async with graphql_api.Subscriber(servers["b"].ws_url, token) as sub:
            await sub.subscribe("subscription { postCreated { id author { name } } }")
            await asyncio.to_thread(
                graphql_api.wait_for_subscribers, config.redis_url(), servers["channel"], 1
            )
            with graphql_api.Client(servers["a"].url) as client:
                for new_name in ("Renamed Between Messages", old):
                    await asyncio.to_thread(client.call, create, token=token)
                    names.append((await sub.next())["data"]["postCreated"]["author"]["name"])
                    idle.append(
                        await asyncio.to_thread(graphql_api.connections_in_use, servers["b"])
                    )
                    with blog.connect() as conn:
                        conn.execute("UPDATE users SET name = %s WHERE id = 1", (new_name,))
                        conn.commit()
        return names, idle

    names, idle = asyncio.run(scenario())
    assert names == [old, "Renamed Between Messages"]
    assert idle == [0, 0]


def test_aliases_and_tokens_are_limited_before_any_sql(blog):
    """Many aliased copies of an expensive field, or a huge query text, are refused while
    validating or parsing: an error, no data, 0 statements; within the limits the query runs."""
    api = graphql_api.Api(blog.url)
    many = " ".join(
        f"a{i}: users(limit: 1000) {{ id }}" for i in range(graphql_api.DEFAULT_MAX_ALIASES + 1)
    )
    refused = asyncio.run(api.run("{ " + many + " }"))
    assert refused.data is None and refused.statements == 0
    assert f"aliases found. Allowed: {graphql_api.DEFAULT_MAX_ALIASES}" in refused.errors[0].message
    few = " ".join(
        f"a{i}: users(limit: 2) {{ id }}" for i in range(graphql_api.DEFAULT_MAX_ALIASES)
    )
    allowed = asyncio.run(api.run("{ " + few + " }"))
    assert allowed.errors is None and allowed.statements == graphql_api.DEFAULT_MAX_ALIASES
    huge = asyncio.run(
        api.run("{ users(limit: 1) { " + "id " * graphql_api.DEFAULT_MAX_TOKENS + "} }")
    )
    assert huge.data is None and huge.statements == 0
    assert "token" in huge.errors[0].message.lower(), huge.errors


def test_login_does_not_block_the_event_loop(blog):
    """argon2 runs in a worker thread: while two logins verify their passwords, a heartbeat
    task on the same event loop keeps running (its longest pause stays well under one
    verification, which it would last if argon2 ran on the loop)."""
    hashed = gql_auth.hash_password("pw-one")
    started = time.perf_counter()
    gql_auth.verify_password(hashed, "pw-one")
    one_verification = time.perf_counter() - started
    api = graphql_api.Api(blog.url)
    query = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) }"

    async def scenario():
        engine = graphql_api.make_engine(blog.url, pooled=False)
        beats, done = [], asyncio.Event()

        async def heartbeat():
            while not done.is_set():
                beats.append(time.perf_counter())
                await asyncio.sleep(0.002)

        async def log_in(email, password):
            context = api.context(engine)
            result = await api.schema.execute(
                query, {"e": email, "p": password}, context_value=context
            )
            await context.close()
            return result

        beating = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.01)
        results = await asyncio.gather(
            log_in(email_of(1, blog), "pw-one"), log_in("nobody@example.com", "pw-one")
        )
        done.set()
        await beating
        await engine.dispose()
        return results, max(b - a for a, b in zip(beats, beats[1:], strict=False))

    (ok, unknown), longest_pause = asyncio.run(scenario())
    assert ok.errors is None and unknown.errors[0].message == "wrong e-mail or password"
    assert longest_pause < one_verification / 2, (longest_pause, one_verification)
