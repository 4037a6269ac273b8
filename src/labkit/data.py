"""The course's deterministic demo dataset: users, posts and comments with realistic skew.

>>> from labkit import data, db
>>> demo = data.blog_database("doctest_data", scale="tiny")   # a copy of a template: ~0.1 s
>>> with demo.connect() as conn:
...     conn.execute("SELECT count(*) FROM users").fetchone()
(200,)
>>> empty = db.fresh_database("doctest_data_load")
>>> data.load_blog(empty, users=100, posts=1_000, progress=False)  # into an empty database
LoadReport(users=100, posts=1000, comments=2000, generate_seconds=..., load_seconds=...)
>>> db.drop_database("doctest_data"); db.drop_database("doctest_data_load")

Same seed, same rows, on every machine. A few prolific authors write most posts
(Zipf-like), and a few posts draw most comments and views, as in real blogs.
Rows are generated in Python and bulk-loaded with ``COPY``; indexes and foreign
keys are added after the load (as ``pgbench -i`` does), then ``VACUUM ANALYZE``.
``blog_database`` builds a template database once per (size, seed) and copies it
(~0.1 s) for every later request. The names, words and country weights the rows are made
of are files in ``data/`` (:func:`vocabulary`), read once and checked against their
checksums in ``data/README.md``.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from labkit import datasets

__all__ = [
    "SCALES",
    "BlogSize",
    "LoadReport",
    "Vocabulary",
    "blog_database",
    "copy_blog",
    "generate_blog",
    "generate_comments",
    "generate_posts",
    "generate_users",
    "load_blog",
    "vocabulary",
    "zipf_sampler",
]


@dataclass(frozen=True)
class BlogSize:
    users: int
    posts: int
    comments: int

    @property
    def rows(self) -> int:
        return self.users + self.posts + self.comments


#: Named sizes. ``guide`` is the size of the guide's practice exercise.
SCALES = {
    "tiny": BlogSize(200, 2_000, 4_000),
    "small": BlogSize(1_000, 10_000, 20_000),
    "guide": BlogSize(10_000, 100_000, 200_000),
}

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 24 * 3600


@dataclass(frozen=True)
class Vocabulary:
    """The generator's fixed inputs, in ``data/`` (see ``data/README.md``): names, words, and
    the share of users per country. Their order matters: the generator picks by position."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    words: tuple[str, ...]
    countries: tuple[str, ...]
    country_weights: tuple[int, ...]


@functools.cache
def vocabulary() -> Vocabulary:
    """The word lists and the country weights, read once from ``data/`` and checked against
    the checksums in ``data/README.md`` (a changed file would change every generated row).

    >>> v = vocabulary()
    >>> len(v.first_names), len(v.last_names), len(v.words), v.words[:3]
    (46, 41, 83, ('index', 'query', 'plan'))
    >>> dict(zip(v.countries, v.country_weights))["US"]           # % of users
    30
    """

    def lines(name: str) -> tuple[str, ...]:
        return tuple(datasets.read_bytes(name).decode("utf-8").splitlines())

    countries = list(
        csv.DictReader(io.StringIO(datasets.read_bytes("countries.csv").decode("utf-8")))
    )
    return Vocabulary(
        first_names=lines("first-names.txt"),
        last_names=lines("last-names.txt"),
        words=lines("words.txt"),
        countries=tuple(row["country"] for row in countries),
        country_weights=tuple(int(row["weight"]) for row in countries),
    )


def zipf_sampler(n: int, s: float, rng: random.Random) -> Callable[[], int]:
    """A function that draws a rank 0..n-1 from ``rng``: rank r (0-based) with probability
    proportional to 1/(r+1)**s, so rank 0 is the most likely and a long tail is rare.

    >>> draw = zipf_sampler(1_000, 1.1, random.Random(7))
    >>> ranks = [draw() for _ in range(10_000)]
    >>> sum(r < 10 for r in ranks) / len(ranks) > 0.4      # the top 1% takes ~45% of draws
    True
    """
    cumulative = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))
    total, last, uniform = cumulative[-1], n - 1, rng.random

    def draw() -> int:
        return min(bisect.bisect_left(cumulative, uniform() * total), last)

    return draw


_DAYS = [(EPOCH + timedelta(days=d)).date().isoformat() for d in range(SPAN_SECONDS // 86400 + 1)]


def _timestamp(offset: int) -> str:
    """``EPOCH + offset`` seconds in ISO 8601 (as ``datetime.isoformat`` writes it, faster)."""
    day, second = divmod(offset, 86400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_DAYS[day]}T{hour:02d}:{minute:02d}:{second:02d}+00:00"


def _sentences(rng: random.Random, count: int) -> list[str]:
    vocabulary_words, out = vocabulary().words, []
    for _ in range(count):
        words = rng.choices(vocabulary_words, k=rng.randint(6, 14))
        out.append(" ".join(words).capitalize() + ".")
    return out


def generate_users(n: int, seed: int = 42) -> Iterator[tuple]:
    """Rows ``(id, email, name, country, created_at)`` for users 1..n."""
    v = vocabulary()
    rng = random.Random(f"users-{seed}")
    countries = rng.choices(v.countries, weights=v.country_weights, k=n)
    for user_id in range(1, n + 1):
        first, last = rng.choice(v.first_names), rng.choice(v.last_names)
        yield (
            user_id,
            f"{first}.{last}.{user_id}@example.com",
            f"{first.title()} {last.title()}",
            countries[user_id - 1],
            _timestamp(rng.randrange(SPAN_SECONDS // 2)),
        )


def _ranked(rng: random.Random, n: int) -> list[int]:
    """Ids 1..n in a seeded random order: position 0 is the most 'popular'."""
    ids = list(range(1, n + 1))
    rng.shuffle(ids)
    return ids


def generate_posts(n: int, users: int, seed: int = 42) -> Iterator[tuple]:
    """Rows ``(id, author_id, title, body, published, view_count, created_at)``.

    Authors follow a Zipf law (s=1.1): the busiest 1% of users write about a third of
    the posts. Views are heavy-tailed (Pareto)."""
    rng = random.Random(f"posts-{seed}")
    authors_by_rank = _ranked(rng, users)
    draw_author = zipf_sampler(users, 1.1, rng)
    sentences = _sentences(rng, 4096)
    words = vocabulary().words
    titles = [" ".join(rng.choices(words, k=rng.randint(3, 7))).title() for _ in range(4096)]
    for post_id in range(1, n + 1):
        author = authors_by_rank[draw_author()]
        body = " ".join(rng.choices(sentences, k=rng.randint(2, 6)))
        yield (
            post_id,
            author,
            titles[rng.getrandbits(12)],
            body,
            rng.random() < 0.8,
            int(rng.paretovariate(1.16) * 10),
            _timestamp(SPAN_SECONDS // 2 + rng.randrange(SPAN_SECONDS // 2)),
        )


def generate_comments(n: int, posts: int, users: int, seed: int = 42) -> Iterator[tuple]:
    """Rows ``(id, post_id, author_id, body, created_at)``; popular posts draw most comments."""
    rng = random.Random(f"comments-{seed}")
    posts_by_rank = _ranked(rng, posts)
    draw_post = zipf_sampler(posts, 1.0, rng)
    sentences = _sentences(rng, 2048)
    for comment_id in range(1, n + 1):
        post = posts_by_rank[draw_post()]
        yield (
            comment_id,
            post,
            rng.randint(1, users),
            sentences[rng.getrandbits(11)],
            _timestamp(SPAN_SECONDS // 2 + rng.randrange(SPAN_SECONDS // 2)),
        )


def _schema() -> dict[str, dict]:
    """The load's DDL, per table, from the ORM metadata (:mod:`labkit.blog`), the one source
    of the schema: ``create`` (columns only, so that COPY writes no index), ``keys``
    (primary key and unique constraints, built once after the rows are in, as
    ``pgbench -i`` does), ``foreign_keys`` as (referred table, DDL), and ``identity``."""
    from psycopg import sql
    from sqlalchemy import Column, MetaData, Table
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import (
        AddConstraint,
        CreateTable,
        PrimaryKeyConstraint,
        UniqueConstraint,
    )

    from labkit.blog import Base

    dialect = postgresql.dialect()
    # isolate_from_table=False: the default would mark each constraint as "added later" in
    # the shared metadata, and a later create_all would then leave it out.
    schema = {}
    for table in Base.metadata.sorted_tables:
        bare = Table(
            table.name,
            MetaData(),
            *(Column(c.name, c.type, nullable=c.nullable) for c in table.columns),
        )
        constraints = sorted(
            table.constraints, key=lambda c: not isinstance(c, PrimaryKeyConstraint)
        )
        schema[table.name] = {
            "create": str(CreateTable(bare).compile(dialect=dialect)),
            "keys": [
                str(AddConstraint(c, isolate_from_table=False).compile(dialect=dialect))
                for c in constraints
                if isinstance(c, PrimaryKeyConstraint | UniqueConstraint)
            ],
            "foreign_keys": [
                (
                    c.referred_table.name,
                    str(AddConstraint(c, isolate_from_table=False).compile(dialect=dialect)),
                )
                for c in sorted(table.foreign_key_constraints, key=lambda c: c.column_keys)
            ],
            "identity": [
                sql.SQL(
                    "ALTER TABLE {table} ALTER COLUMN {column} ADD GENERATED {kind} AS IDENTITY; "
                    "SELECT setval(pg_get_serial_sequence(quote_ident({name}), {column_name}), "
                    "GREATEST((SELECT max({column}) FROM {table}), 1))"
                ).format(
                    table=sql.Identifier(table.name),
                    column=sql.Identifier(c.name),
                    kind=sql.SQL("ALWAYS" if c.identity.always else "BY DEFAULT"),
                    name=sql.Literal(table.name),
                    column_name=sql.Literal(c.name),
                )
                for c in table.columns
                if c.identity is not None
            ],
        }
        unsupported = [
            c.name
            for c in table.columns
            if c.server_default is not None and c.server_default is not c.identity
        ]
        if unsupported or table.indexes:
            raise NotImplementedError(
                f"{table.name}: server defaults and indexes are not created by the loader yet "
                f"({unsupported or sorted(i.name for i in table.indexes)}): add them to _schema"
            )
    return schema


def _copy_text(value) -> str:
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)  # generated text never holds tabs, newlines or backslashes


def _as_copy_chunks(rows: Iterator[tuple], total: int, label: str, progress: bool) -> list[bytes]:
    """Rows as COPY text, in 8k-row chunks (far fewer Python calls than write_row)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"generate {label}", unit="rows", leave=False)
    chunks = []
    while chunk := list(itertools.islice(rows, 8192)):
        text = "".join("\t".join(map(_copy_text, row)) + "\n" for row in chunk)
        chunks.append(text.encode())
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return chunks


def _load_table(url: str, table: str, chunks: list[bytes], ddl: dict, loaded: set[str]) -> None:
    """CREATE + COPY ... FREEZE + keys in one transaction, on its own connection; also the
    foreign keys to tables already ``loaded`` (committed).

    FREEZE (allowed because the table was created in the same transaction) writes the
    rows already frozen and all-visible, so the later VACUUM has nothing to do and
    index-only scans need no heap fetches."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, connect_timeout=10) as conn:
        with conn.transaction():
            conn.execute(ddl["create"])
            statement = sql.SQL("COPY {} FROM STDIN (FREEZE)").format(sql.Identifier(table))
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            # One round trip for all of them (DDL strings without parameters).
            ready = [statement for referred, statement in ddl["foreign_keys"] if referred in loaded]
            conn.execute(";\n".join(ddl["keys"] + ready))
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


@dataclass
class LoadReport:
    """What a load did: rows per table, seconds generating and loading, rows per second."""

    users: int
    posts: int
    comments: int
    generate_seconds: float
    load_seconds: float

    @property
    def rows(self) -> int:
        return self.users + self.posts + self.comments

    @property
    def seconds(self) -> float:
        return self.generate_seconds + self.load_seconds

    @property
    def load_rows_per_second(self) -> float:
        """Rows per second of the load alone (COPY, keys, VACUUM ANALYZE)."""
        return self.rows / self.load_seconds if self.load_seconds else float("inf")

    @property
    def rows_per_second(self) -> float:
        """Rows per second end to end (generation included)."""
        return self.rows / self.seconds if self.seconds else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.users:,} users, {self.posts:,} posts, {self.comments:,} comments: "
            f"generated in {self.generate_seconds:.2f} s, loaded in {self.load_seconds:.2f} s "
            f"({self.load_rows_per_second:,.0f} rows/s; {self.rows_per_second:,.0f} rows/s "
            "end to end)"
        )


def generate_blog(
    *,
    users: int = 10_000,
    posts: int = 100_000,
    comments: int | None = None,
    seed: int = 42,
    progress: bool | None = None,
) -> dict[str, list[bytes]]:
    """The dataset as COPY text chunks per table (deterministic for a given seed)."""
    comments = 2 * posts if comments is None else comments
    if progress is None:
        progress = users + posts + comments >= 100_000
    return {
        "users": _as_copy_chunks(generate_users(users, seed), users, "users", progress),
        "posts": _as_copy_chunks(generate_posts(posts, users, seed), posts, "posts", progress),
        "comments": _as_copy_chunks(
            generate_comments(comments, posts, users, seed), comments, "comments", progress
        ),
    }


def copy_blog(target, chunks: dict[str, list[bytes]]) -> float:
    """Load generated chunks into an empty database; returns the seconds it took.

    Users first (the others reference them), then posts and comments in parallel, each
    on its own connection; the comments → posts key once both are in."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    url = getattr(target, "url", target)
    schema = _schema()
    started = time.perf_counter()
    _load_table(url, "users", chunks["users"], schema["users"], set())
    parallel = ("posts", "comments")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_load_table, url, t, chunks[t], schema[t], {"users"}) for t in parallel
        ]
        for future in futures:
            future.result()
    with psycopg.connect(url, connect_timeout=10) as conn:
        # Keys between the tables loaded in parallel, then identities (so that the ORM can
        # insert new rows) starting after the loaded ids.
        from psycopg import sql

        statements = [
            sql.SQL(statement)
            for table in parallel
            for referred, statement in schema[table]["foreign_keys"]
            if referred in parallel
        ]
        statements += [statement for ddl in schema.values() for statement in ddl["identity"]]
        conn.execute(sql.SQL(";\n").join(statements))
    return time.perf_counter() - started


def load_blog(
    target,
    *,
    users: int = 10_000,
    posts: int = 100_000,
    comments: int | None = None,
    seed: int = 42,
    progress: bool | None = None,
) -> LoadReport:
    """Create the blog tables in an empty database and load them.

    ``target`` is a :class:`labkit.db.Database` or a ``postgresql://`` URL. ``comments``
    defaults to two per post; ``progress`` shows tqdm bars (default: on from 100k rows)."""
    comments = 2 * posts if comments is None else comments
    started = time.perf_counter()
    chunks = generate_blog(
        users=users, posts=posts, comments=comments, seed=seed, progress=progress
    )
    generated = time.perf_counter() - started
    return LoadReport(users, posts, comments, generated, copy_blog(target, chunks))


#: Bump when the generator or the schema changes, so that old templates are not reused.
DATA_VERSION = 1


def _template_name(users: int, posts: int, comments: int, seed: int) -> str:
    return f"labkit_tpl_blog_v{DATA_VERSION}_{users}_{posts}_{comments}_{seed}"


def blog_database(
    name: str,
    *,
    users: int = 10_000,
    posts: int = 100_000,
    comments: int | None = None,
    seed: int = 42,
    scale: str | None = None,
    progress: bool | None = None,
):
    """A fresh database ``name`` holding the blog dataset (a :class:`labkit.db.Database`).

    The first call for a given size and seed builds a template database (seconds); every
    later call copies it (~0.1-0.5 s). ``scale`` picks a named size from :data:`SCALES`."""
    from psycopg import sql

    from labkit import db

    if scale:
        size = SCALES[scale]
        users, posts, comments = size.users, size.posts, size.comments
    comments = 2 * posts if comments is None else comments
    template = _template_name(users, posts, comments, seed)
    with db.template_lock(template) as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (template,),
        ).fetchone()
        if row is None or row[0] != "labkit: complete":
            db.drop_database(template, qualified=True, conn=admin)
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            load_blog(
                db.database(template, qualified=True),
                users=users,
                posts=posts,
                comments=comments,
                seed=seed,
                progress=progress,
            )
            admin.execute(
                sql.SQL("COMMENT ON DATABASE {} IS 'labkit: complete'").format(
                    sql.Identifier(template)
                )
            )
    return db.fresh_database(name, template=template)
