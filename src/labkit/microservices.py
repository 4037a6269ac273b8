"""Database per service: users, inventory, payments and orders, each in a PostgreSQL database
of its own, with its own SQLAlchemy metadata and its own Alembic migrations — and the
orders service's local read model of user names, built from the users service's events.

>>> from labkit import microservices as ms
>>> shop = ms.ServiceDatabases("doctest_ms")
>>> shop.create(fresh=True)                         # one database per service
['...doctest_ms_users', '...doctest_ms_inventory', '...doctest_ms_payments', '...doctest_ms_orders']
>>> shop.migrate_all(); shop.versions()             # each from its own migrations folder
{'users': 'users_0001', 'inventory': 'inventory_0001', 'payments': 'payments_0001', 'orders': 'orders_0002'}
>>> before = shop.fingerprints()
>>> shop.downgrade("orders", "orders_0001")         # a downgrade of one service ...
>>> shop.changed_since(before)                      # ... touches no other database
['orders']
>>> shop.migrate("orders"); shop.changed_since(before)
[]
>>> shop.drop()

The read model: the users service writes a user and its event (a Redis stream); the orders
service applies each event at most once per user version, so a replay or a duplicate
changes nothing:

>>> _ = shop.create(fresh=True); shop.migrate_all()
>>> bus = ms.UserEvents(shop)
>>> ann = bus.register("Ann"); _ = bus.rename(ann, "Anna")
>>> model = ms.UserNames(shop)
>>> model.catch_up(), model.names()
(2, {1: 'Anna'})
>>> model.replay(), model.names()                   # from the stream's start again
(2, {1: 'Anna'})
>>> shop.drop()
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert

from labkit import db
from labkit.errors import LabkitError

__all__ = [
    "METADATA",
    "MIGRATIONS",
    "SERVICES",
    "ServiceDatabases",
    "UserEvents",
    "UserNames",
    "run_alembic_env",
]

#: The services, in the order their databases are created.
SERVICES = ("users", "inventory", "payments", "orders")
#: Each service's Alembic folder (``env.py`` and ``versions/``).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# --------------------------------------------------------------------------- the schemas
# One MetaData per service: no table is shared, no foreign key crosses a service's border.
# Each migration chain builds exactly these tables (tests compare them with Alembic's
# autogenerate: no difference).

users_metadata = MetaData()
users = Table(
    "users",
    users_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
)

inventory_metadata = MetaData()
products = Table(
    "products",
    inventory_metadata,
    Column("sku", Text, primary_key=True),
    Column("stock", Integer, nullable=False),
    CheckConstraint("stock >= 0", name="stock_not_negative"),
)
reservations = Table(
    "reservations",
    inventory_metadata,
    Column("saga_id", Text, primary_key=True),  # one reservation per saga: retries are no-ops
    Column("sku", Text, ForeignKey("products.sku"), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("status", Text, nullable=False),
    CheckConstraint("status IN ('reserved', 'released')", name="reservation_status"),
)

payments_metadata = MetaData()
charges = Table(
    "charges",
    payments_metadata,
    Column("saga_id", Text, primary_key=True),  # one charge per saga: retries are no-ops
    Column("user_id", Integer, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", Text, nullable=False),
    CheckConstraint("status IN ('captured', 'refunded')", name="charge_status"),
)

orders_metadata = MetaData()
orders = Table(
    "orders",
    orders_metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Integer, nullable=False),  # no foreign key: users live elsewhere
    Column("sku", Text, nullable=False),
    Column("qty", Integer, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", Text, nullable=False),
    CheckConstraint("status IN ('pending', 'confirmed', 'cancelled')", name="order_status"),
)
sagas = Table(
    "sagas",
    orders_metadata,
    Column("id", Text, ForeignKey("orders.id"), primary_key=True),
    Column("status", Text, nullable=False),
    Column("done", ARRAY(Text), nullable=False, server_default="{}"),
    Column("compensated", ARRAY(Text), nullable=False, server_default="{}"),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "status IN ('running', 'compensating', 'completed', 'compensated')", name="saga_status"
    ),
)
# orders_0002: the local read model of user names, and how far into the stream it has read.
user_names = Table(
    "user_names",
    orders_metadata,
    Column("user_id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
)
stream_positions = Table(
    "stream_positions",
    orders_metadata,
    Column("stream", Text, primary_key=True),
    Column("last_id", Text, nullable=False),
)

#: Each service's metadata: what its code uses and what its migrations build.
METADATA: dict[str, MetaData] = {
    "users": users_metadata,
    "inventory": inventory_metadata,
    "payments": payments_metadata,
    "orders": orders_metadata,
}


def run_alembic_env(context: Any, service: str) -> None:
    """The body of every service's ``env.py``: migrate on the connection that
    :meth:`ServiceDatabases.migrate` hands over (or on ``sqlalchemy.url`` when the ``alembic``
    command line is used with a configuration file), against that service's metadata only."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise LabkitError(
                f"no database for the {service} service's migrations: run them with "
                "labkit.microservices.ServiceDatabases(...).migrate(service), or set "
                "sqlalchemy.url in the Alembic configuration"
            )
        from sqlalchemy import create_engine

        engine = create_engine(url)
        with engine.begin() as own:
            context.configure(connection=own, target_metadata=METADATA[service])
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
        return
    context.configure(connection=connection, target_metadata=METADATA[service])
    with context.begin_transaction():
        context.run_migrations()


# --------------------------------------------------------------------------- the databases


@dataclass
class ServiceDatabases:
    """The databases of one shop: ``<prefix>_users``, ``<prefix>_inventory``, ... (with
    ``LABKIT_DB_PREFIX`` in front, as every course database).

    ``create`` is idempotent (``fresh=True`` drops and re-creates); ``migrate`` runs one
    service's Alembic migrations through ``alembic.command``; ``fingerprints`` reads every
    database's tables, columns and ``alembic_version``, to show what a migration touched."""

    prefix: str
    _engines: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for service in SERVICES:
            db.qualified_name(f"{self.prefix}_{service}")  # a bad prefix fails here, clearly

    # -- names and connections
    def name(self, service: str) -> str:
        """The (qualified) database name of ``service``."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
        return db.qualified_name(f"{self.prefix}_{service}")

    def database(self, service: str) -> db.Database:
        return db.database(self.name(service), qualified=True)

    def engine(self, service: str):
        """One pooled SQLAlchemy engine per service (each talks to its own database only)."""
        if service not in self._engines:
            self._engines[service] = self.database(service).engine(pool_pre_ping=True)
        return self._engines[service]

    @property
    def namespace(self) -> str:
        """The Redis key prefix of this shop's streams and keys."""
        return self.name("users").removesuffix("_users") + ":"

    # -- life cycle
    def create(self, *, fresh: bool = False) -> list[str]:
        """Create the databases that do not exist yet (all of them again if ``fresh``)."""
        from psycopg import errors, sql

        self.dispose()
        if fresh:
            self.clear_redis()
        names = [self.name(service) for service in SERVICES]
        with db.connect(autocommit=True) as conn:
            for name in names:
                if fresh:
                    db.drop_database(name, qualified=True, conn=conn)
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if exists.fetchone() is None:
                    with contextlib.suppress(errors.DuplicateDatabase):  # a racing creator
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return names

    def reset(self) -> None:
        """Empty every database of this shop (its tables dropped, ``alembic_version`` too)
        and delete its Redis keys: cheaper than dropping databases, and idempotent."""
        from psycopg import sql

        self.create()
        self.dispose()
        self.clear_redis()
        for service in SERVICES:
            with self.database(service).connect(autocommit=True) as conn:
                names = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
                if names:
                    conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                            sql.SQL(", ").join(sql.Identifier(name) for (name,) in names)
                        )
                    )

    def drop(self) -> None:
        """Drop every database of this shop, and its Redis keys."""
        self.dispose()
        self.clear_redis()
        # together: each DROP DATABASE waits for a checkpoint, and drops issued at once share one
        db.drop_databases([self.name(service) for service in SERVICES], qualified=True)

    def clear_redis(self) -> int:
        """Delete this shop's Redis keys (its streams, registrations); returns how many."""
        from labkit import cache, caching

        return caching.delete_prefix(cache.redis_client(), self.namespace)

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    # -- migrations
    def alembic_config(self, service: str):
        """An Alembic ``Config`` for ``service``'s folder (no ``alembic.ini`` needed)."""
        from alembic.config import Config

        self.name(service)  # validates the service
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS / service))
        return config

    def migrate(self, service: str, revision: str = "head") -> None:
        """Upgrade ``service``'s database to ``revision`` with ``alembic.command.upgrade``,
        in one transaction on that database alone."""
        from alembic import command

        config = self.alembic_config(service)
        with self.engine(service).begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def downgrade(self, service: str, revision: str) -> None:
        """Downgrade ``service``'s database to ``revision`` (``"base"``: no table left)."""
        from alembic import command

        config = self.alembic_config(service)
        with self.engine(service).begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)

    def migrate_all(self) -> None:
        """Every service to its newest revision."""
        for service in SERVICES:
            self.migrate(service)

    @staticmethod
    def _version(connection) -> str | None:
        exists = connection.execute(text("SELECT to_regclass('alembic_version')")).scalar()
        if exists is None:
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def versions(self) -> dict[str, str | None]:
        """Each service's current Alembic revision (None before its first migration)."""
        out = {}
        for service in SERVICES:
            with self.engine(service).connect() as connection:
                out[service] = self._version(connection)
        return out

    # -- what a migration touched
    def fingerprint(self, service: str) -> dict[str, Any]:
        """``service``'s schema as data: its tables and columns (name, type, nullable), its
        constraints, and its ``alembic_version``."""
        with self.engine(service).connect() as connection:
            columns = connection.execute(
                text(
                    "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable "
                    "FROM information_schema.columns c JOIN information_schema.tables t "
                    "USING (table_schema, table_name) WHERE c.table_schema = 'public' "
                    "AND t.table_type = 'BASE TABLE' "
                    "ORDER BY c.table_name, c.ordinal_position"
                )
            ).all()
            constraints = connection.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                    "ORDER BY 1, 2"
                )
            ).all()
            version = self._version(connection)
        tables: dict[str, list[tuple[str, str, str]]] = {}
        for table, column, kind, nullable in columns:
            tables.setdefault(table, []).append((column, kind, nullable))
        return {
            "tables": tables,
            "constraints": [tuple(row) for row in constraints],
            "alembic_version": version,
        }

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        return {service: self.fingerprint(service) for service in SERVICES}

    def row_counts(self) -> dict[str, dict[str, int]]:
        """Rows in each existing table of each service's database."""
        from psycopg import sql

        counts: dict[str, dict[str, int]] = {}
        for service in SERVICES:
            with self.database(service).connect() as conn:
                names = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                ).fetchall()
                counts[service] = {
                    name: conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
                    ).fetchone()[0]
                    for (name,) in names
                }
        return counts

    def changed_since(self, before: dict[str, dict[str, Any]]) -> list[str]:
        """The services whose schema or Alembic revision differs from ``before``."""
        return [s for s in SERVICES if self.fingerprint(s) != before.get(s)]

    def schema_drift(self, service: str) -> list[Any]:
        """Alembic's autogenerate comparison of the database with the service's metadata:
        an empty list when the migrations build exactly what the code declares."""
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with self.engine(service).connect() as connection:
            context = MigrationContext.configure(connection)
            return compare_metadata(context, METADATA[service])


# --------------------------------------------------------------------------- the read model


class UserEvents:
    """The users service: it owns the ``users`` table, and publishes ``user_registered`` /
    ``user_renamed`` events (with the user's version) on the Redis stream
    ``<namespace>users.events``.

    It publishes after its commit, to keep this example short: the transactional outbox
    (see the outbox section) is how a real service makes sure no event is lost."""

    def __init__(self, shop: ServiceDatabases, redis_client: Any = None) -> None:
        from labkit import cache

        self.shop = shop
        self.redis = redis_client or cache.redis_client()
        self.stream = shop.namespace + "users.events"

    def register(self, name: str) -> int:
        """Create a user; returns its id."""
        with self.shop.engine("users").begin() as conn:
            row = conn.execute(
                users.insert().values(name=name).returning(users.c.id, users.c.version)
            ).one()
        self.publish("user_registered", row.id, name, row.version)
        return row.id

    def rename(self, user_id: int, name: str) -> int:
        """Rename a user; returns its new version."""
        with self.shop.engine("users").begin() as conn:
            version = conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(name=name, version=users.c.version + 1)
                .returning(users.c.version)
            ).scalar_one_or_none()
        if version is None:
            raise ValueError(f"no user {user_id} in the users service: register it first")
        self.publish("user_renamed", user_id, name, version)
        return version

    def publish(self, kind: str, user_id: int, name: str, version: int) -> str:
        """Append one event (also used to send a duplicate or an old event again)."""
        fields = {"type": kind, "user_id": user_id, "name": name, "version": version}
        return self.redis.xadd(self.stream, {"event": json.dumps(fields)})

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event on the stream, oldest first."""
        return [(i, json.loads(f["event"])) for i, f in self.redis.xrange(self.stream)]

    def delete_stream(self) -> None:
        self.redis.delete(self.stream)


class UserNames:
    """The orders service's local read model: ``user_names(user_id, name, version)`` in its
    own database, so that showing an order needs no call to the users service.

    Applying an event is an upsert guarded by the user's version (``WHERE user_names.version
    < excluded.version``): a duplicate, a replay or an event that arrives late changes no
    row (``changed`` counts the rows the events did change). The stream position is saved in
    the same transaction as the rows it produced.
    ``naive=True`` applies events without the guard (last write wins), to compare."""

    def __init__(
        self, shop: ServiceDatabases, redis_client: Any = None, *, naive: bool = False
    ) -> None:
        from labkit import cache

        self.shop = shop
        self.redis = redis_client or cache.redis_client()
        self.stream = shop.namespace + "users.events"
        self.naive = naive
        self.changed = 0  # rows inserted or updated by the events this object applied

    def position(self) -> str:
        with self.shop.engine("orders").connect() as conn:
            row = conn.execute(
                stream_positions.select().where(stream_positions.c.stream == self.stream)
            ).one_or_none()
        return row.last_id if row else "0-0"

    def _apply(self, conn, event: dict[str, Any]) -> int:
        statement = insert(user_names).values(
            user_id=event["user_id"], name=event["name"], version=event["version"]
        )
        update = {"name": statement.excluded.name, "version": statement.excluded.version}
        if self.naive:
            statement = statement.on_conflict_do_update(index_elements=["user_id"], set_=update)
        else:
            statement = statement.on_conflict_do_update(
                index_elements=["user_id"],
                set_=update,
                where=user_names.c.version < statement.excluded.version,
            )
        return len(conn.execute(statement.returning(user_names.c.user_id)).all())

    def catch_up(self, *, batch: int = 500) -> int:
        """Apply the events after the saved position; returns how many were read."""
        read = 0
        position = self.position()
        while True:
            entries = self.redis.xrange(self.stream, min=f"({position}", count=batch)
            if not entries:
                return read
            with self.shop.engine("orders").begin() as conn:
                for _, fields in entries:
                    self.changed += self._apply(conn, json.loads(fields["event"]))
                position = entries[-1][0]
                statement = insert(stream_positions).values(stream=self.stream, last_id=position)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["stream"], set_={"last_id": position}
                    )
                )
            read += len(entries)

    def replay(self) -> int:
        """Forget the position (not the rows) and read the whole stream again."""
        with self.shop.engine("orders").begin() as conn:
            conn.execute(stream_positions.delete().where(stream_positions.c.stream == self.stream))
        return self.catch_up()

    def reset(self) -> None:
        """Empty the read model and its position (a rebuild starts from here)."""
        with self.shop.engine("orders").begin() as conn:
            conn.execute(user_names.delete())
            conn.execute(stream_positions.delete().where(stream_positions.c.stream == self.stream))

    def names(self) -> dict[int, str]:
        with self.shop.engine("orders").connect() as conn:
            rows = conn.execute(user_names.select().order_by(user_names.c.user_id)).all()
        return {row.user_id: row.name for row in rows}

    def rows(self) -> list[tuple[int, str, int]]:
        with self.shop.engine("orders").connect() as conn:
            rows = conn.execute(user_names.select().order_by(user_names.c.user_id)).all()
        return [tuple(row) for row in rows]

    def source_of_truth(self) -> dict[int, str]:
        """The users service's own names (what the read model should show)."""
        with self.shop.engine("users").connect() as conn:
            rows = conn.execute(users.select().order_by(users.c.id)).all()
        return {row.id: row.name for row in rows}

    def wrong_rows(self) -> int:
        """Users whose name in the read model differs from the users service's (or is missing)."""
        truth, model = self.source_of_truth(), self.names()
        return sum(1 for user_id, name in truth.items() if model.get(user_id) != name)
