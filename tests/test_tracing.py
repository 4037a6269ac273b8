"""labkit.tracing on Step 8's GraphQL API, in process, against the course's PostgreSQL and
Redis: one trace from the client's HTTP request through the server's span to every SQL
statement and the Redis PUBLISH; the N+1 written on the request's span (naive resolvers)
and absent with DataLoaders; the waterfall drawn; tracing stopped leaves nothing behind."""

from __future__ import annotations

import os
import warnings

import matplotlib
import pytest

from labkit import config, data, db, gql_auth, graphql_api, tracing

matplotlib.use("Agg")
QUERY = "{ users(limit: 10) { name posts { title } } }"
KEY = "k" * 40


@pytest.fixture(scope="module")
def api():
    demo = data.blog_database("s15_test_tracing", users=10, posts=30, comments=20)
    environ = {graphql_api.ENV_DATABASE: demo.url, graphql_api.ENV_REDIS: config.redis_url(),
               graphql_api.ENV_CHANNEL: f"{os.environ.get('LABKIT_DB_PREFIX', '')}s15:posts",
               gql_auth.KEY_ENV: KEY}  # fmt: skip
    yield environ
    db.drop_database("s15_test_tracing")


@pytest.fixture
def traced(api):
    with warnings.catch_warnings():
        # Starlette's TestClient on httpx: deprecated, still what it uses
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        from starlette.testclient import TestClient
    handle = tracing.start()
    try:
        with TestClient(handle.wrap(graphql_api.create_app(api))) as client:
            handle.instrument_client(client)
            handle.clear()  # the app's start-up statements
            yield handle, client
    finally:
        tracing.stop(handle)


def server_span(trace):
    found = [s for s in trace if s.name.startswith("POST /graphql")]
    assert len(found) == 1, [s.name for s in trace]
    return found[0]


def test_one_trace_from_the_client_to_sql_and_redis(traced):
    """A signed-in createPost: the client's span is the root; the server's span is its
    child; the INSERT and Redis's PUBLISH are the server span's descendants; one trace."""
    handle, client = traced
    token = gql_auth.issue_token(1, KEY.encode())
    response = client.post(
        "/graphql",
        json={"query": 'mutation { createPost(input: {title: "traced", body: "b"}) { id } }'},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    traces = handle.traces()
    assert len(traces) == 1, f"{len(traces)} traces"
    trace = next(iter(traces.values()))
    by_id = {s.context.span_id: s for s in trace}
    roots = [s for s in trace if s.parent is None]
    assert [r.name for r in roots] == ["POST"], "the client's request is the root"
    server = server_span(trace)
    assert server.parent.span_id == roots[0].context.span_id

    def under_server(span) -> bool:
        while span.parent is not None:
            if span.parent.span_id == server.context.span_id:
                return True
            span = by_id[span.parent.span_id]
        return False

    sql = [s for s in trace if s.attributes.get("db.system") == "postgresql"]
    assert any(s.attributes["db.statement"].lstrip().upper().startswith("INSERT") for s in sql)
    assert all(under_server(s) for s in sql)
    assert all("traced" not in s.attributes["db.statement"] for s in sql), "parameters leaked"
    publish = [s for s in trace if s.attributes.get("db.system") == "redis"]
    assert [s.name for s in publish] == ["PUBLISH"] and under_server(publish[0])
    assert server.attributes["app.db.statement_count"] == len(sql), [
        s.attributes["db.statement"] for s in sql
    ]


def test_the_n_plus_one_is_an_attribute_of_the_request_span(traced):
    """The same query: naive resolvers run one posts statement per user (N+1 flagged on
    the span, and found by n_plus_one); DataLoaders run 2 statements (not flagged)."""
    handle, client = traced
    assert client.post("/graphql-naive", json={"query": QUERY}).status_code == 200
    naive = server_span(handle.spans())
    handle.clear()
    assert client.post("/graphql", json={"query": QUERY}).status_code == 200
    batched = server_span(handle.spans())
    assert naive.attributes["app.db.n_plus_one"] is True
    assert (
        naive.attributes["app.db.max_repeats"] == 10
        and naive.attributes["app.db.statement_count"] == 11
    )
    assert batched.attributes["app.db.n_plus_one"] is False
    assert batched.attributes["app.db.statement_count"] == 2
    assert tracing.n_plus_one(handle.spans()) == []
    handle.clear()
    client.post("/graphql-naive", json={"query": QUERY})
    found = tracing.n_plus_one(handle.spans())
    assert len(found) == 1 and found[0][0].startswith("POST /graphql-naive") and found[0][2] == 10
    ax = tracing.waterfall(handle.spans())
    assert len(ax.patches) == len(handle.spans())


def test_stop_leaves_nothing_traced(api):
    from sqlalchemy import text

    handle = tracing.start()
    tracing.stop(handle)
    engine = db.engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert handle.spans() == []
    with pytest.raises(ValueError, match="no spans"):
        tracing.waterfall([])
