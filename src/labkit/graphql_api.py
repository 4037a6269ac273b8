"""A production GraphQL API over the blog (strawberry-graphql): pagination with a page-size
cap, mutations, naive resolvers or per-request DataLoaders, depth, alias and token limits, JWT
authentication, field- and operation-level rules, and subscriptions over WebSocket driven
by Redis pub/sub, so that every server instance hears every new post.

The schema is :mod:`labkit.blog`'s (users, posts, comments); the only table added is
``user_credentials`` (argon2 hashes), created by :func:`prepare_database`.

In process (what the exercises' tests do):

>>> import asyncio
>>> from labkit import data, graphql_api
>>> demo = data.blog_database("doctest_gql", users=20, posts=40, comments=80)
>>> api = graphql_api.Api(demo.url, batched=True)
>>> query = "{ users(limit: 20) { posts { comments { author { name } } } } }"
>>> result = asyncio.run(api.run(query))
>>> result.errors, result.statements        # users, posts, comments: one statement each
(None, 3)
>>> naive = graphql_api.Api(demo.url, batched=False)
>>> asyncio.run(naive.run(query)).statements > 20
True
>>> asyncio.run(api.run("{ users(limit: 5000) { id } }")).errors[0].message
'limit must be between 1 and 1000 (ask for the next page with offset): got 5000'
>>> from labkit import db; db.drop_database("doctest_gql")

As a server: :func:`start` serves :func:`create_app` with uvicorn in a process of its own
through :class:`labkit.supervisor.Supervisor` (127.0.0.1, a free port), configured by
environment variables; :class:`Client` calls it over HTTP (httpx) and WebSocket
(``graphql-transport-ws``, with the ``websockets`` library).

Each response carries ``extensions.sqlStatements``: the statements that request sent to
PostgreSQL, counted by a SQLAlchemy ``before_cursor_execute`` event on the request's own
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Text, event, insert, select
from strawberry.dataloader import DataLoader
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.types import Info

from labkit import gql_auth
from labkit.blog import Comment, Post, User

__all__ = [
    "DEFAULT_MAX_ALIASES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MAX_PAGE",
    "Api",
    "Client",
    "Context",
    "GraphQLServer",
    "Loaders",
    "Outcome",
    "Subscriber",
    "build_schema",
    "connections_in_use",
    "create_app",
    "make_engine",
    "nested_query",
    "plot_statements",
    "prepare_database",
    "set_password",
    "start",
    "statements_report",
    "stop",
    "wait_for_subscribers",
]

DEFAULT_MAX_PAGE = 1000
DEFAULT_MAX_DEPTH = 6
DEFAULT_MAX_ALIASES = 10  # aliased fields per operation (a0: users ..., a1: users ...)
DEFAULT_MAX_TOKENS = 1000  # lexical tokens per operation (names, braces, arguments ...)
COUNTER_KEY = "labkit_graphql_request"

credentials = Table(
    "user_credentials",
    MetaData(),
    Column("user_id", Integer, ForeignKey(User.__table__.c.id), primary_key=True),
    Column("password_hash", Text, nullable=False),
)

USER_COLUMNS = (User.id, User.name, User.email, User.country)
POST_COLUMNS = (Post.id, Post.author_id, Post.title, Post.body, Post.published)
COMMENT_COLUMNS = (Comment.id, Comment.post_id, Comment.author_id, Comment.body)


# --------------------------------------------------------------------------- database


def make_engine(url: str, *, pooled: bool = True):
    """An async SQLAlchemy engine (psycopg 3) on ``url`` whose statements are counted per
    request. ``pooled=False`` opens a connection per request (for code that runs each
    request in a new event loop, such as ``asyncio.run`` in tests)."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from labkit.db import sqlalchemy_url

    options: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    engine = create_async_engine(sqlalchemy_url(url), **options)

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        request = conn.info.get(COUNTER_KEY)
        if request is not None:
            request.statements += 1

    return engine


def prepare_database(url: str) -> None:
    """Create the ``user_credentials`` table if it is missing (idempotent)."""
    from sqlalchemy import create_engine

    from labkit.db import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url))
    try:
        credentials.metadata.create_all(engine)
    finally:
        engine.dispose()


def set_password(url: str, user_id: int, password: str) -> None:
    """Store an argon2 hash of ``password`` for ``user_id`` (replacing an earlier one)."""
    from sqlalchemy import create_engine
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from labkit.db import sqlalchemy_url

    prepare_database(url)
    hashed = gql_auth.hash_password(password)
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            statement = pg_insert(credentials).values(user_id=user_id, password_hash=hashed)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["user_id"], set_={"password_hash": hashed}
                )
            )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the request context


class Context:
    """What every resolver of one request sees as ``info.context``: the viewer (from the
    token), the request's own database connection and statement count, and — when the API
    batches — a fresh set of DataLoaders (never shared between requests: a loader caches)."""

    def __init__(
        self,
        engine,
        *,
        key: bytes,
        batched: bool,
        authorization: str | None = None,
        redis=None,
        channel: str = "labkit:graphql:posts",
        max_page: int = DEFAULT_MAX_PAGE,
        request=None,
        response=None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.redis = redis
        self.channel = channel
        self.max_page = max_page
        self.request = request
        self.response = response
        self.connection_params: dict | None = None
        self.statements = 0
        self.loaders = Loaders(self) if batched else None
        self._conn = None
        self._lock = asyncio.Lock()
        self._authorization = authorization
        self._viewer: int | None = None
        self._token_error: str | None = None
        self._read_authorization(authorization)

    # -- authentication
    def _read_authorization(self, authorization: str | None) -> None:
        self._viewer, self._token_error = None, None
        if not authorization:
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._token_error = "invalid Authorization header: send `Bearer <token>`"
            return
        try:
            self._viewer = gql_auth.read_token(token.strip(), self.key)
        except gql_auth.TokenError as exc:
            self._token_error = str(exc)

    def authenticate(self, authorization: str | None) -> None:
        """Read the viewer from ``authorization`` (``Bearer <token>``), as a WebSocket's
        ``connection_init`` gives it."""
        self._authorization = authorization
        self._read_authorization(authorization)

    @property
    def token_error(self) -> str | None:
        return self._token_error

    def viewer(self) -> int | None:
        """The signed-in user's id, None without a token; raises on a bad token (a bad
        token is never treated as "anonymous")."""
        if self._token_error:
            raise GraphQLError(self._token_error, extensions={"code": "UNAUTHENTICATED"})
        return self._viewer

    def require_viewer(self) -> int:
        """The signed-in user's id; a GraphQL error without a valid token."""
        viewer = self.viewer()
        if viewer is None:
            raise GraphQLError(
                "not authenticated: send `Authorization: Bearer <token>` (get a token with "
                "the login mutation)",
                extensions={"code": "UNAUTHENTICATED"},
            )
        return viewer

    # -- database
    async def _connection(self):
        if self._conn is None:
            self._conn = await self.engine.connect()
            self._conn.sync_connection.info[COUNTER_KEY] = self
        return self._conn

    async def fetch(self, statement) -> list:
        """The rows of ``statement``, on this request's connection (one statement at a
        time: resolvers of one request run concurrently)."""
        async with self._lock:
            conn = await self._connection()
            return (await conn.execute(statement)).all()

    async def write(self, statement):
        """Run a data-changing ``statement`` and commit; returns its first row (or None)."""
        async with self._lock:
            conn = await self._connection()
            try:
                result = await conn.execute(statement)
                row = result.first() if result.returns_rows else None
                await conn.commit()
            except Exception:
                await conn.rollback()
                raise
            return row

    async def close(self) -> None:
        """Give the connection back (the request is over)."""
        async with self._lock:  # never under a statement another resolver is running
            if self._conn is not None:
                self._conn.sync_connection.info.pop(COUNTER_KEY, None)
                await self._conn.close()
                self._conn = None

    async def renew(self) -> None:
        """Start a new unit of work on this context: give the connection back and replace
        the loaders (empty caches). A WebSocket's context lives as long as the connection
        (strawberry builds it once per connection), so a subscription calls this for each
        message: no cached row outlives a message, and no connection is held while the
        subscription waits."""
        await self.close()
        if self.loaders is not None:
            self.loaders = Loaders(self)


# --------------------------------------------------------------------------- DataLoaders


def _grouped(rows: Iterable, key: str, keys: list[int], make) -> list[list]:
    groups: dict[int, list] = {k: [] for k in keys}
    for row in rows:
        groups[getattr(row, key)].append(make(row))
    return [groups[k] for k in keys]


class Loaders:
    """The request's DataLoaders: one statement per kind of row, whatever the fan-out."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.user = DataLoader(load_fn=self._users)
        self.posts_by_author = DataLoader(load_fn=self._posts_by_author)
        self.comments_by_post = DataLoader(load_fn=self._comments_by_post)

    async def _users(self, ids: list[int]) -> list[UserNode | None]:
        rows = await self.context.fetch(select(*USER_COLUMNS).where(User.id.in_(ids)))
        found = {row.id: UserNode.from_row(row) for row in rows}
        return [found.get(i) for i in ids]

    async def _posts_by_author(self, author_ids: list[int]) -> list[list[PostNode]]:
        rows = await self.context.fetch(
            select(*POST_COLUMNS).where(Post.author_id.in_(author_ids)).order_by(Post.id)
        )
        return _grouped(rows, "author_id", author_ids, PostNode.from_row)

    async def _comments_by_post(self, post_ids: list[int]) -> list[list[CommentNode]]:
        rows = await self.context.fetch(
            select(*COMMENT_COLUMNS).where(Comment.post_id.in_(post_ids)).order_by(Comment.id)
        )
        return _grouped(rows, "post_id", post_ids, CommentNode.from_row)


# --------------------------------------------------------------------------- the schema


def _page(info: Info, limit: int, offset: int) -> None:
    """Refuse a page larger than the cap (or a negative offset) before any SQL."""
    cap = info.context.max_page
    if not 1 <= limit <= cap:
        raise GraphQLError(
            f"limit must be between 1 and {cap} (ask for the next page with offset): got {limit}",
            extensions={"code": "BAD_USER_INPUT"},
        )
    if offset < 0:
        raise GraphQLError(
            f"offset must be 0 or more: got {offset}", extensions={"code": "BAD_USER_INPUT"}
        )


@strawberry.type(name="User")
class UserNode:
    id: int
    name: str
    country: str
    private_email: strawberry.Private[str]

    @classmethod
    def from_row(cls, row) -> UserNode:
        return cls(id=row.id, name=row.name, country=row.country, private_email=row.email)

    @strawberry.field(description="The user's e-mail: visible to that user only (else null).")
    def email(self, info: Info) -> str | None:
        return self.private_email if info.context.viewer() == self.id else None

    @strawberry.field(description="The user's posts, oldest first.")
    async def posts(self, info: Info) -> list[PostNode]:
        loaders = info.context.loaders
        if loaders is not None:
            return await loaders.posts_by_author.load(self.id)
        rows = await info.context.fetch(
            select(*POST_COLUMNS).where(Post.author_id == self.id).order_by(Post.id)
        )
        return [PostNode.from_row(row) for row in rows]


async def _user(info: Info, user_id: int) -> UserNode:
    loaders = info.context.loaders
    if loaders is not None:
        return await loaders.user.load(user_id)
    rows = await info.context.fetch(select(*USER_COLUMNS).where(User.id == user_id))
    return UserNode.from_row(rows[0])


@strawberry.type(name="Post")
class PostNode:
    id: int
    title: str
    body: str
    published: bool
    author_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row) -> PostNode:
        return cls(
            id=row.id,
            title=row.title,
            body=row.body,
            published=row.published,
            author_id=row.author_id,
        )

    @strawberry.field
    async def author(self, info: Info) -> UserNode:
        return await _user(info, self.author_id)

    @strawberry.field(description="The post's comments, oldest first.")
    async def comments(self, info: Info) -> list[CommentNode]:
        loaders = info.context.loaders
        if loaders is not None:
            return await loaders.comments_by_post.load(self.id)
        rows = await info.context.fetch(
            select(*COMMENT_COLUMNS).where(Comment.post_id == self.id).order_by(Comment.id)
        )
        return [CommentNode.from_row(row) for row in rows]


@strawberry.type(name="Comment")
class CommentNode:
    id: int
    body: str
    post_id: strawberry.Private[int]
    author_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row) -> CommentNode:
        return cls(id=row.id, body=row.body, post_id=row.post_id, author_id=row.author_id)

    @strawberry.field
    async def author(self, info: Info) -> UserNode:
        return await _user(info, self.author_id)


@strawberry.type
class Query:
    @strawberry.field(description="Users by id, one page at a time (limit ≤ the server's cap).")
    async def users(self, info: Info, limit: int = 20, offset: int = 0) -> list[UserNode]:
        _page(info, limit, offset)
        rows = await info.context.fetch(
            select(*USER_COLUMNS).order_by(User.id).limit(limit).offset(offset)
        )
        users = [UserNode.from_row(row) for row in rows]
        if info.context.loaders is not None:
            for user in users:  # rows we already hold: comment authors among them cost nothing
                info.context.loaders.user.prime(user.id, user)
        return users

    @strawberry.field(description="Posts by id, one page at a time.")
    async def posts(self, info: Info, limit: int = 20, offset: int = 0) -> list[PostNode]:
        _page(info, limit, offset)
        rows = await info.context.fetch(
            select(*POST_COLUMNS).order_by(Post.id).limit(limit).offset(offset)
        )
        return [PostNode.from_row(row) for row in rows]

    @strawberry.field
    async def post(self, info: Info, id: int) -> PostNode | None:
        rows = await info.context.fetch(select(*POST_COLUMNS).where(Post.id == id))
        return PostNode.from_row(rows[0]) if rows else None

    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> UserNode:
        return await _user(info, info.context.require_viewer())


@strawberry.input
class NewPost:
    title: str
    body: str


def _text(name: str, value: str, most: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= most:
        raise GraphQLError(
            f"{name} must be 1 to {most} characters (not blank): got {len(value)}",
            extensions={"code": "BAD_USER_INPUT"},
        )
    return value


async def _publish(info: Info, post: PostNode) -> None:
    redis = info.context.redis
    if redis is not None:
        message = {"id": post.id, "title": post.title, "body": post.body,
                   "published": post.published, "author_id": post.author_id}  # fmt: skip
        await redis.publish(info.context.channel, json.dumps(message))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A token for the user with this e-mail and password.")
    async def login(self, info: Info, email: str, password: str) -> str:
        rows = await info.context.fetch(
            select(User.id, credentials.c.password_hash)
            .join(credentials, credentials.c.user_id == User.id)
            .where(User.email == email)
        )
        # argon2 spends tens of milliseconds of CPU on purpose: run it in a worker thread, so
        # that the event loop keeps serving every other request meanwhile.
        if not rows:
            await asyncio.to_thread(gql_auth.dummy_verify, password)  # a wrong password's time
        elif await asyncio.to_thread(gql_auth.verify_password, rows[0].password_hash, password):
            return gql_auth.issue_token(rows[0].id, info.context.key)
        raise GraphQLError("wrong e-mail or password", extensions={"code": "UNAUTHENTICATED"})

    @strawberry.mutation(description="A new post by the signed-in user (published at once).")
    async def create_post(self, info: Info, input: NewPost) -> PostNode:
        author = info.context.require_viewer()
        title, body = _text("title", input.title, 200), _text("body", input.body, 10_000)
        row = await info.context.write(
            insert(Post)
            .values(
                author_id=author,
                title=title,
                body=body,
                published=True,
                view_count=0,
                created_at=_now(),
            )  # fmt: skip
            .returning(*POST_COLUMNS)
        )
        post = PostNode.from_row(row)
        await _publish(info, post)
        return post

    @strawberry.mutation(description="A comment by the signed-in user on post `postId`.")
    async def add_comment(self, info: Info, post_id: int, body: str) -> CommentNode:
        author = info.context.require_viewer()
        body = _text("body", body, 2_000)
        if not await info.context.fetch(select(Post.id).where(Post.id == post_id)):
            raise GraphQLError(f"no post {post_id}", extensions={"code": "NOT_FOUND"})
        row = await info.context.write(
            insert(Comment)
            .values(post_id=post_id, author_id=author, body=body, created_at=_now())
            .returning(*COMMENT_COLUMNS)
        )
        return CommentNode.from_row(row)

    @strawberry.mutation(description="Change a post's title or body: its author only.")
    async def update_post(
        self, info: Info, id: int, title: str | None = None, body: str | None = None
    ) -> PostNode:
        viewer = info.context.require_viewer()
        rows = await info.context.fetch(select(Post.author_id).where(Post.id == id))
        if not rows:
            raise GraphQLError(f"no post {id}", extensions={"code": "NOT_FOUND"})
        if rows[0].author_id != viewer:
            raise GraphQLError(
                f"forbidden: only the author of post {id} may edit it",
                extensions={"code": "FORBIDDEN"},
            )
        changes = {}
        if title is not None:
            changes["title"] = _text("title", title, 200)
        if body is not None:
            changes["body"] = _text("body", body, 10_000)
        if not changes:
            raise GraphQLError("nothing to change: give a title or a body")
        from sqlalchemy import update

        row = await info.context.write(
            update(Post).where(Post.id == id).values(**changes).returning(*POST_COLUMNS)
        )
        return PostNode.from_row(row)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Every post created from now on, on any instance.")
    async def post_created(self, info: Info) -> AsyncIterator[PostNode]:
        info.context.require_viewer()
        redis = info.context.redis
        if redis is None:
            raise GraphQLError("subscriptions need Redis: this server was started without it")
        pubsub = redis.pubsub()
        await pubsub.subscribe(info.context.channel)
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                fields = json.loads(message["data"])
                # This context is the WebSocket connection's, built once for its lifetime:
                # each message is its own unit of work, with fresh loaders and no
                # connection held while we wait for the next one.
                await info.context.renew()
                yield PostNode(**fields)
                await info.context.renew()
        finally:
            await pubsub.unsubscribe(info.context.channel)
            await pubsub.aclose()


class RequestScope(SchemaExtension):
    """Closes the request's connection when the operation ends, and reports how many
    statements the request sent (``extensions.sqlStatements``; 0 when it was refused
    before execution)."""

    async def on_operation(self):
        yield
        context = self.execution_context.context
        if isinstance(context, Context):
            await context.close()

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        return {"sqlStatements": context.statements} if isinstance(context, Context) else {}


def build_schema(
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_aliases: int = DEFAULT_MAX_ALIASES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> strawberry.Schema:
    """The API's schema, with abuse limits checked before any resolver runs (so a refused
    query sends no SQL): nesting depth, aliases (many aliased copies of one expensive field
    in one request) and tokens (the size of the query text, checked while parsing)."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: QueryDepthLimiter(max_depth=max_depth),
            lambda: MaxAliasesLimiter(max_alias_count=max_aliases),
            RequestScope,
        ],
    )


# --------------------------------------------------------------------------- in process


@dataclass
class Outcome:
    """One request's result: ``data``, ``errors``, statements sent and seconds taken."""

    data: Any
    errors: list | None
    statements: int
    seconds: float


class Api:
    """The schema executed in this process (no HTTP): what tests and exercises use.

    ``url`` is the blog database's ``postgresql://`` URL; each :meth:`run` is one request
    with a fresh :class:`Context` (fresh loaders, its own connection and count)."""

    def __init__(
        self,
        url: str,
        *,
        batched: bool = True,
        key: bytes | None = None,
        max_page: int = DEFAULT_MAX_PAGE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        schema: strawberry.Schema | None = None,
    ) -> None:
        self.url = url
        self.batched = batched
        self.key = key or gql_auth.signing_key({})
        self.max_page = max_page
        self.schema = schema or build_schema(max_depth=max_depth)

    def context(self, engine, token: str | None = None) -> Context:
        authorization = f"Bearer {token}" if token else None
        return Context(engine, key=self.key, batched=self.batched,
                       authorization=authorization, max_page=self.max_page)  # fmt: skip

    async def run(
        self, query: str, variables: dict | None = None, *, token: str | None = None
    ) -> Outcome:
        engine = make_engine(self.url, pooled=False)
        try:
            context = self.context(engine, token)
            started = time.perf_counter()
            result = await self.schema.execute(query, variables, context_value=context)
            seconds = time.perf_counter() - started
            await context.close()
            return Outcome(result.data, result.errors, context.statements, seconds)
        finally:
            await engine.dispose()


# --------------------------------------------------------------------------- the ASGI app

ENV_DATABASE = "LABKIT_GQL_DATABASE_URL"
ENV_REDIS = "LABKIT_GQL_REDIS_URL"
ENV_CHANNEL = "LABKIT_GQL_CHANNEL"
ENV_MAX_PAGE = "LABKIT_GQL_MAX_PAGE"
ENV_MAX_DEPTH = "LABKIT_GQL_MAX_DEPTH"
ENV_INSTANCE = "LABKIT_GQL_INSTANCE"


def create_app(environ: dict[str, str] | None = None):
    """The ASGI app (Starlette): ``/graphql`` with DataLoaders, ``/graphql-naive`` with
    naive resolvers (the same schema), ``/health``. Configured by the environment:
    ``LABKIT_GQL_DATABASE_URL`` (required), ``LABKIT_GQL_REDIS_URL``,
    ``LABKIT_GQL_CHANNEL``, ``LABKIT_JWT_KEY`` (≥ 32 bytes; random when unset),
    ``LABKIT_GQL_MAX_PAGE``, ``LABKIT_GQL_MAX_DEPTH``, ``LABKIT_GQL_INSTANCE``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from strawberry.asgi import GraphQL
    from strawberry.exceptions import ConnectionRejectionError
    from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

    environ = dict(os.environ if environ is None else environ)
    if not environ.get(ENV_DATABASE):
        raise RuntimeError(f"set {ENV_DATABASE} to the blog database's postgresql:// URL")
    key = gql_auth.signing_key(environ)
    max_page = int(environ.get(ENV_MAX_PAGE, DEFAULT_MAX_PAGE))
    schema = build_schema(max_depth=int(environ.get(ENV_MAX_DEPTH, DEFAULT_MAX_DEPTH)))
    channel = environ.get(ENV_CHANNEL, "labkit:graphql:posts")
    instance = environ.get(ENV_INSTANCE, "api")
    state: dict[str, Any] = {}

    class View(GraphQL):
        def __init__(self, batched: bool) -> None:
            super().__init__(schema, graphql_ide=None,
                             subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL])  # fmt: skip
            self.batched = batched

        async def get_context(self, request, response) -> Context:
            return Context(
                state["engine"], key=key, batched=self.batched, redis=state.get("redis"),
                channel=channel, max_page=max_page, request=request, response=response,
                authorization=request.headers.get("authorization"),
            )  # fmt: skip

        async def on_ws_connect(self, context: Context):
            params = context.connection_params or {}
            context.authenticate(params.get("authorization") or params.get("Authorization"))
            if context.token_error or context.viewer() is None:
                raise ConnectionRejectionError()
            return {"viewer": context.viewer(), "instance": instance}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["engine"] = make_engine(environ[ENV_DATABASE])
        async with state["engine"].connect() as conn:  # the dialect's first-connect queries
            from sqlalchemy import text

            await conn.execute(text("SELECT 1"))
        # The dummy hash an unknown e-mail is checked against is made now, not by the first
        # unknown e-mail (which would then take twice a wrong password's time).
        await asyncio.to_thread(gql_auth.dummy_verify, "warm-up")
        if environ.get(ENV_REDIS):
            import redis.asyncio as aioredis

            state["redis"] = aioredis.Redis.from_url(environ[ENV_REDIS], decode_responses=True)
        try:
            yield
        finally:
            if "redis" in state:
                await state["redis"].aclose()
            await state["engine"].dispose()

    async def health(request):
        in_use = state["engine"].pool.checkedout()  # connections held by requests right now
        return JSONResponse({"instance": instance, "pid": os.getpid(), "connectionsInUse": in_use})

    naive, batched = View(batched=False), View(batched=True)
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/graphql-naive", naive, methods=["GET", "POST"]),
            Route("/graphql", batched, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", batched),
        ],
        lifespan=lifespan,
    )


# --------------------------------------------------------------------------- serving and calling


@dataclass
class GraphQLServer:
    """One running instance: its name, port and URLs, and the supervisor's handle."""

    name: str
    port: int
    process: Any = field(repr=False)
    folder: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def naive_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql-naive"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"


def start(
    supervisor,
    *,
    database_url: str,
    key: str,
    redis_url: str | None = None,
    channel: str = "labkit:graphql:posts",
    name: str = "graphql",
    max_page: int = DEFAULT_MAX_PAGE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> GraphQLServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by ``supervisor.down`` or when the Python process ends).

    ``key`` is the JWT key (≥ 32 bytes) given to the process in its environment: instances
    that share it accept each other's tokens."""
    import tempfile

    from labkit.supervisor import HOST, ProcessServer

    if len(key.encode()) < gql_auth.MIN_KEY_BYTES:
        raise ValueError(f"the JWT key must be at least {gql_auth.MIN_KEY_BYTES} bytes long")
    folder = tempfile.TemporaryDirectory(prefix=f"labkit-{name}-")
    env = {ENV_DATABASE: database_url, gql_auth.KEY_ENV: key, ENV_CHANNEL: channel,
           ENV_MAX_PAGE: str(max_page), ENV_MAX_DEPTH: str(max_depth), ENV_INSTANCE: name}  # fmt: skip
    if redis_url:
        env[ENV_REDIS] = redis_url

    def command(port: int | None) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "labkit.graphql_api:create_app", "--factory",
                "--host", HOST, "--port", str(port), "--log-level", "info", "--no-access-log",
                "--ws", "websockets-sansio"]  # fmt: skip

    process = ProcessServer(
        Path(folder.name) / name, command, name=name, ready_text="Uvicorn running on", env=env
    )
    try:
        port = supervisor.up(process)
    except BaseException:
        folder.cleanup()
        raise
    return GraphQLServer(name, port, process, folder)


def stop(supervisor, server: GraphQLServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    stopped = supervisor.down(server.process)
    server.folder.cleanup()
    return stopped


class Client:
    """Calls a :class:`GraphQLServer` over HTTP (httpx): ``call`` returns an
    :class:`Outcome` with the server's statement count and the round trip's seconds."""

    def __init__(self, url: str, *, timeout: float = 60) -> None:
        import httpx

        self.url = url
        self.http = httpx.Client(timeout=timeout)

    def call(
        self, query: str, variables: dict | None = None, *, token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Outcome:  # fmt: skip
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        response = self.http.post(self.url, json={"query": query, "variables": variables or {}},
                                  headers=headers)  # fmt: skip
        seconds = time.perf_counter() - started
        response.raise_for_status()
        body = response.json()
        return Outcome(
            body.get("data"),
            body.get("errors"),
            body.get("extensions", {}).get("sqlStatements", -1),
            seconds,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """A ``graphql-transport-ws`` client (the ``websockets`` library) for one subscription.

    ``async with Subscriber(url, token) as sub: await sub.subscribe(query); await
    sub.next()``. A rejected ``connection_init`` raises :class:`PermissionError` with the
    server's close code (4403 Forbidden)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token
        self.ack: dict | None = None
        self._ws = None

    async def __aenter__(self) -> Subscriber:
        import websockets

        self._ws = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        payload = {"authorization": f"Bearer {self.token}"} if self.token else {}
        await self._ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            message = json.loads(await asyncio.wait_for(self._ws.recv(), 10))
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
            raise PermissionError(f"connection_init refused: {code} {reason}") from None
        if message.get("type") != "connection_ack":
            raise PermissionError(f"connection_init refused: {message}")
        self.ack = message.get("payload")
        return self

    async def subscribe(self, query: str, id: str = "1") -> None:
        await self._ws.send(
            json.dumps({"id": id, "type": "subscribe", "payload": {"query": query}})
        )

    async def next(self, timeout: float = 10) -> dict:
        """The next ``next`` message's payload (data or errors)."""
        while True:
            message = json.loads(await asyncio.wait_for(self._ws.recv(), timeout))
            if message["type"] in ("next", "error"):
                return message["payload"]
            if message["type"] == "ping":
                await self._ws.send(json.dumps({"type": "pong"}))

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()


def connections_in_use(server: GraphQLServer, *, settle: float = 5) -> int:
    """How many database connections ``server``'s requests hold (its ``/health``), waiting
    up to ``settle`` seconds for the count to fall to 0 (a request gives its connection back
    just after its response is sent)."""
    import httpx

    deadline = time.monotonic() + settle
    while True:
        in_use = httpx.get(f"http://127.0.0.1:{server.port}/health").json()["connectionsInUse"]
        if in_use == 0 or time.monotonic() > deadline:
            return in_use
        time.sleep(0.02)


def wait_for_subscribers(redis_url: str, channel: str, count: int, timeout: float = 10) -> int:
    """Wait until ``count`` clients listen on ``channel`` (``PUBSUB NUMSUB``): a post
    published before a subscriber listens is not delivered to it (pub/sub keeps nothing)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            listening = dict(client.pubsub_numsub(channel)).get(channel, 0)
            if listening >= count or time.monotonic() > deadline:
                return listening
            time.sleep(0.02)
    finally:
        client.close()


# --------------------------------------------------------------------------- lesson plumbing

NESTED_QUERY = (
    "{ users(limit: %d) { id name posts { id title comments { id body author { id name } } } } }"
)


def nested_query(users: int) -> str:
    """``users { posts { comments { author } } }`` for a page of ``users`` users."""
    return NESTED_QUERY % users


def plot_statements(frame, *, title: str = "Statements per request"):
    """Statements against N (log-log), one line per column of ``frame`` (index: N)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for column in frame.columns:
        ax.plot(frame.index, frame[column], marker="o", label=column)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}")  # 1,000, not 10³
    ax.set_xticks(list(frame.index))  # a tick at each measured N
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("users in the database (N)")
    ax.set_ylabel("SQL statements per request")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def statements_report(
    user_counts: Iterable[int] = (10, 100, 1000),
    *,
    posts_per_user: int = 2,
    comments_per_post: int = 2,
    progress: bool = True,
):
    """Statements per request (and milliseconds) of :func:`nested_query` at each N, naive
    against DataLoaders, over HTTP against a real server per size; asserts the same JSON.
    Returns a DataFrame indexed by N. ``python -m labkit.graphql_api`` prints it."""
    import secrets

    import pandas as pd
    from tqdm.auto import tqdm

    from labkit import data, db
    from labkit.supervisor import Supervisor

    rows = []
    key = secrets.token_urlsafe(48)
    with Supervisor(say=lambda message: None) as supervisor:
        for n in tqdm(list(user_counts), desc="sizes", disable=not progress):
            name = f"graphql_report_{n}"
            blog = data.blog_database(name, users=n, posts=posts_per_user * n,
                                      comments=comments_per_post * posts_per_user * n,
                                      progress=False)  # fmt: skip
            server = start(supervisor, database_url=blog.url, key=key, name=f"report-{n}")
            try:
                with Client(server.naive_url) as naive, Client(server.url) as batched:
                    naive.call("{ users(limit: 1) { id } }")
                    batched.call("{ users(limit: 1) { id } }")
                    slow, fast = naive.call(nested_query(n)), batched.call(nested_query(n))
            finally:
                stop(supervisor, server)
                db.drop_database(name)
            if slow.errors or fast.errors or slow.data != fast.data:
                raise AssertionError(
                    f"N={n}: the two endpoints disagree ({slow.errors or fast.errors})"
                )
            rows.append({"N (users)": n, "naive statements": slow.statements,
                         "DataLoader statements": fast.statements,
                         "naive ms": round(slow.seconds * 1000, 1),
                         "DataLoader ms": round(fast.seconds * 1000, 1)})  # fmt: skip
    return pd.DataFrame(rows).set_index("N (users)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m labkit.graphql_api",
        description="Statements per request of users { posts { comments { author } } }, "
        "naive resolvers against per-request DataLoaders, at each N (real servers).",
    )
    parser.add_argument("--users", type=int, nargs="+", default=[10, 100, 1000])
    arguments = parser.parse_args()
    print(statements_report(arguments.users).to_string())
