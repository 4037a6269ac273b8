"""A small shop that holds personal data, and the GDPR work on it: export, erasure, traces,
retention.

**The shop.** :class:`Customer` (name, an e-mail encrypted with
:class:`labkit.fieldcrypt.EncryptedText` and its blind index, country), :class:`Order`
(amount, country, shipping address, status), :class:`Ticket` (support messages) and
:class:`Login` (IP addresses). :func:`build_shop` creates and fills it in a database,
grants an application role and a privacy role what they need, and attaches the audit
trigger (:mod:`labkit.audit`) after the initial load.

**Export** (:func:`export_subject`): the tables that hold a person's rows are found in the
catalog, through the foreign keys that reference ``customers`` (:func:`referencing_tables`),
so a table added later is exported without a code change; the person's audit entries are
added explicitly, because the log has no foreign key. **Erasure** (:func:`erase_subject`)
needs a decision per table that no catalog can make (delete the tickets; keep the orders for
the accounts but cut the link and the address), so it follows an explicit policy
(:data:`ERASURE_POLICY`) that :func:`check_policy` compares with the catalog: a new table
that references customers and has no policy stops the erasure. **Traces**
(:func:`find_traces`) searches every column of every table, the audit log included, as text.
**Retention** (:class:`RetentionJob`) deletes or anonymizes rows older than N days, and
redacts the audit entries of the rows it deletes. :func:`find_subject` turns a request's
e-mail into exactly one customer (after the requester's identity has been verified).

Erasure here reaches the live rows of one database. Copies outside it (backups, WAL
archives, replicas until they replay, dead tuples until VACUUM, server logs, query
statistics) keep the data until they expire or are rewritten: see the lesson.

>>> from labkit import db, fieldcrypt
>>> import os
>>> for var in (fieldcrypt.KEYS_VAR, fieldcrypt.ACTIVE_VAR, fieldcrypt.BLIND_INDEX_VAR):
...     os.environ.pop(var, None)
>>> fieldcrypt.add_key("k1"); fieldcrypt.set_blind_index_key()
>>> demo = db.fresh_database("s11b_doctest_gdpr")
>>> shop = build_shop(demo, customers=20, progress=False)
>>> shop.customers, shop.orders > 0
(20, True)
>>> with demo.connect() as conn:
...     referencing_tables(conn, "customers")
[('public', 'logins', 'customer_id'), ('public', 'orders', 'customer_id'), ('public', 'tickets', 'customer_id')]
>>> db.drop_database("s11b_doctest_gdpr")
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from labkit import audit, fieldcrypt
from labkit.fieldcrypt import EncryptedText

__all__ = [
    "ERASURE_POLICY",
    "RETENTION_RULES",
    "Base",
    "Customer",
    "Login",
    "Order",
    "RetentionJob",
    "RetentionRule",
    "ShopReport",
    "Ticket",
    "aggregates",
    "build_shop",
    "check_policy",
    "erase_subject",
    "export_subject",
    "find_subject",
    "find_traces",
    "referencing_tables",
    "run_on_schedule",
    "truncate_to",
]


class Base(DeclarativeBase):
    pass


@fieldcrypt.seal_on_flush
class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(
        EncryptedText("customers.email", row_key="id", blind_index="email_bidx")
    )
    email_bidx: Mapped[str | None] = mapped_column(String(64), index=True)
    country: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("customers.id"), index=True)
    amount_cents: Mapped[int]
    country: Mapped[str] = mapped_column(String(2))
    shipping_address: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="placed")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Login(Base):
    __tablename__ = "logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"), index=True)
    ip: Mapped[str] = mapped_column(INET)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


#: Columns the audit log records as "[masked]" (it notes the change, never the value).
AUDIT_MASKED = {
    "customers": ["email", "email_bidx"],
    "orders": ["shipping_address"],
    "tickets": ["body"],
    "logins": ["ip"],
}

FIRST = "Ada Alan Grace Edsger Barbara Donald Frances Ken Margaret Dennis Radia Tim Sophie Linus Hedy Claude Katherine John Mary Niklaus".split()
LAST = "Lovelace Turing Hopper Dijkstra Liskov Knuth Allen Thompson Hamilton Ritchie Perlman Berners Wilson Torvalds Lamarr Shannon Johnson Backus Keller Wirth".split()
STREETS = "Elm Oak Pine Maple Cedar Birch Walnut Willow Aspen Spruce".split()
CITIES = "Lyon Porto Ghent Graz Turin Leeds Basel Aarhus Cork Split".split()
COUNTRIES = ["FR", "PT", "BE", "AT", "IT", "GB", "CH", "DK", "IE", "HR"]


@dataclass(frozen=True)
class ShopReport:
    """What :func:`build_shop` loaded (``shared_emails``: customers whose e-mail another
    customer also has — a family address), and how long it took."""

    customers: int
    orders: int
    tickets: int
    logins: int
    shared_emails: int
    seconds: float


def _grant(conn, role: str, privacy: bool) -> None:
    from psycopg import sql

    who = sql.Identifier(role)
    tables = sql.SQL(", ").join(sql.Identifier(t) for t in AUDIT_MASKED)
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(tables, who))
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(who))
    audit.grant_reader(conn, role)
    if privacy:
        conn.execute(
            sql.SQL(
                "GRANT EXECUTE ON FUNCTION audit.redact(text, text[], text[], text, text) TO {}"
            ).format(who)
        )


def build_shop(
    database,
    *,
    customers: int = 500,
    orders_per_customer: int = 3,
    seed: int = 11,
    app_role: str | None = None,
    privacy_role: str | None = None,
    progress: bool = True,
) -> ShopReport:
    """Create the shop's tables in ``database`` (a :class:`labkit.db.Database`, fresh) and
    fill them: ``customers`` customers over the last two years, about
    ``orders_per_customer`` orders each, a ticket and four logins each. E-mails are
    encrypted with the keys in the environment. Every 25th customer shares the previous
    one's e-mail. Then the audit log is installed and every table tracked, and the roles
    (full names) are granted: DML on the shop and SELECT on the log; the privacy role may
    also call ``audit.redact``."""
    import sys

    from tqdm import tqdm  # plain text: a saved notebook shows the finished bar, not a widget

    started = time.perf_counter()
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    cipher = fieldcrypt.current_cipher()
    engine = database.engine()
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    names = rng.sample(
        [f"{f} {chr(65 + m)}. {last}" for f in FIRST for last in LAST for m in range(26)],
        customers,
    )
    people, orders, tickets, logins = [], [], [], []
    shared = 0
    for i, name in enumerate(names):
        cid = uuid.UUID(int=rng.getrandbits(128), version=4)
        first, _, last = name.split(" ")
        email = f"{first}.{last}.{i}@example.org".lower()
        if i % 25 == 24:  # a family address: the same e-mail as the previous customer
            email = people[-1][5]
            shared += 2
        created = now - dt.timedelta(days=rng.uniform(0, 730))
        country = rng.choice(COUNTRIES)
        people.append((cid, name, country, created, None, email))
        for _ in range(rng.randint(orders_per_customer - 1, orders_per_customer + 1)):
            at = created + (now - created) * rng.random()
            address = f"{rng.randint(1, 199)} {rng.choice(STREETS)} St, {rng.choice(CITIES)}"
            status = "delivered" if at < now - dt.timedelta(days=14) else "placed"
            orders.append((cid, rng.randint(500, 30_000), country, address, status, at))
        tickets.append(
            (
                cid,
                f"Hello, this is {name}: my parcel is late.",
                created + (now - created) * rng.random(),
            )
        )
        for _ in range(4):
            ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            logins.append((cid, ip, created + (now - created) * rng.random()))
    with database.connect() as conn:
        with conn.cursor() as cur:
            steps = [
                (
                    "INSERT INTO customers (id, name, country, created_at, email, email_bidx) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (
                            c,
                            n,
                            k,
                            t,
                            cipher.encrypt(e, fieldcrypt.aad("customers.email", c)),
                            fieldcrypt.blind_index(e),
                        )
                        for c, n, k, t, _, e in people
                    ],
                ),
                (
                    "INSERT INTO orders (customer_id, amount_cents, country, shipping_address, "
                    "status, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    orders,
                ),
                (
                    "INSERT INTO tickets (customer_id, body, created_at) VALUES (%s, %s, %s)",
                    tickets,
                ),
                ("INSERT INTO logins (customer_id, ip, at) VALUES (%s, %s, %s)", logins),
            ]
            for statement, rows in tqdm(
                steps, desc="loading the shop", disable=not progress, file=sys.stdout
            ):
                cur.executemany(statement, rows)
        audit.install(conn)
        for table, masked in AUDIT_MASKED.items():
            audit.track(conn, table, key="id", masked=masked)
        for role, privacy in ((app_role, False), (privacy_role, True)):
            if role:
                _grant(conn, role, privacy)
        conn.execute("ANALYZE")
        conn.commit()
    return ShopReport(
        len(people), len(orders), len(tickets), len(logins), shared, time.perf_counter() - started
    )


# --------------------------------------------------------------------------- export


def referencing_tables(conn, table: str) -> list[tuple[str, str, str]]:
    """``(schema, table, column)`` for every single-column foreign key that references
    ``table``, read from ``pg_constraint`` (sorted). The names are the catalog's own
    (unquoted), ready for ``sql.Identifier(schema, table)``."""
    rows = conn.execute(
        """
        SELECT n.nspname, r.relname, a.attname
          FROM pg_constraint c
          JOIN pg_class r ON r.oid = c.conrelid
          JOIN pg_namespace n ON n.oid = r.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'f' AND c.confrelid = %s::regclass AND cardinality(c.conkey) = 1
         ORDER BY 1, 2, 3
        """,
        (table,),
    ).fetchall()
    return [(n, t, c) for n, t, c in rows]


def _label(schema: str, table: str) -> str:
    """How policies and exports name a table: ``orders``, or ``other.orders`` outside public."""
    return table if schema == "public" else f"{schema}.{table}"


def find_subject(conn, email: str, *, cipher: fieldcrypt.FieldCipher | None = None):
    """The id of the one customer whose e-mail is ``email``. Verify the requester's identity
    first (a signed-in session, a confirmation mail): this only finds the account. The
    blind index finds candidates; each is decrypted and compared with the normalized input
    (an index copied into another row is no match), and an address that several customers
    share (a family's) is refused rather than guessed: sending one relative's data to
    another would be a breach."""
    cipher = cipher or fieldcrypt.current_cipher()
    rows = conn.execute(
        "SELECT id, email FROM customers WHERE email_bidx = %s", (fieldcrypt.blind_index(email),)
    ).fetchall()
    matches = fieldcrypt.confirmed(
        rows,
        email,
        lambda r: (
            None if r[1] is None else cipher.decrypt(r[1], fieldcrypt.aad("customers.email", r[0]))
        ),
    )
    if len(matches) != 1:
        raise ValueError(
            f"{len(matches)} customers have this e-mail: "
            + (
                "check the address"
                if not matches
                else "it is shared, so ask the requester for their account id and verify it"
            )
        )
    return matches[0][0]


def _rows(conn, query, params) -> list[dict]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # inet, Decimal...


def export_subject(
    conn,
    customer_id: Any,
    *,
    encrypted: Mapping[str, str] | None = None,
    cipher: fieldcrypt.FieldCipher | None = None,
) -> dict:
    """Everything held about one customer, as JSON-ready data: their ``customers`` row
    (``encrypted`` columns decrypted: column → context), the rows of every table that
    references ``customers`` (found in the catalog), and the audit entries about those
    rows."""
    from psycopg import sql

    encrypted = {"email": "customers.email"} if encrypted is None else encrypted
    cipher = cipher or fieldcrypt.current_cipher()
    person = _rows(conn, "SELECT * FROM customers WHERE id = %s", (customer_id,))
    if not person:
        raise ValueError(f"no customer {customer_id}: check the id (erased already?)")
    record = person[0]
    for column, context in encrypted.items():
        if record.get(column) is not None:
            record[column] = cipher.decrypt(record[column], fieldcrypt.aad(context, customer_id))
    record.pop("email_bidx", None)  # our lookup key, not data about the person
    export: dict[str, Any] = {"customers": [record]}
    keys: dict[str, list[str]] = {"customers": [str(customer_id)]}
    where: dict[str, tuple[str, str]] = {"customers": ("public", "customers")}
    for schema, table, column in referencing_tables(conn, "customers"):
        label = _label(schema, table)
        query = sql.SQL("SELECT * FROM {} WHERE {} = %s ORDER BY id").format(
            sql.Identifier(schema, table), sql.Identifier(column)
        )
        export[label] = _rows(conn, query, (customer_id,))
        keys[label] = [str(r["id"]) for r in export[label]]
        where[label] = (schema, table)
    export["audit.log"] = [
        entry
        for label, ids in keys.items()
        for entry in _rows(
            conn,
            "SELECT at, app_user, table_schema, table_name, op, row_key, old, new "
            "FROM audit.log WHERE table_schema = %s AND table_name = %s AND row_key = ANY(%s) "
            "ORDER BY id",
            (*where[label], ids),
        )
    ]
    return json.loads(json.dumps(_jsonable(export)))


# --------------------------------------------------------------------------- erasure


@dataclass(frozen=True)
class truncate_to:  # noqa: N801 - reads as a value in a policy
    """A policy value: coarsen a timestamp column to the start of its ``unit`` (day, month),
    so an exact time and amount can no longer be matched against a card statement."""

    unit: str


#: Per table that references customers: "delete" its rows, or set columns (anonymize).
ERASURE_POLICY: dict[str, str | dict[str, Any]] = {
    "tickets": "delete",
    "logins": "delete",
    "orders": {"customer_id": None, "shipping_address": None, "created_at": truncate_to("month")},
}


def check_policy(conn, policy: Mapping[str, Any]) -> None:
    """Raise ValueError if a table references ``customers`` and the policy says nothing
    about it (it would keep the person's rows after an erasure)."""
    missing = sorted(
        {_label(n, t) for n, t, _ in referencing_tables(conn, "customers")} - set(policy)
    )
    if missing:
        raise ValueError(
            f"tables {missing} reference customers but the erasure policy has no rule for "
            "them: add 'delete' or the columns to clear for each"
        )


def erase_subject(
    conn,
    customer_id: Any,
    *,
    reason: str,
    policy: Mapping[str, Any] = ERASURE_POLICY,
    app_user: str = "privacy-officer",
) -> dict[str, int]:
    """Erase one customer in one transaction: apply ``policy`` to each referencing table,
    delete the customer, then redact the audit entries of every row touched (the
    customer's entirely; the kept rows' anonymized columns). Returns rows per action."""
    from psycopg import sql

    check_policy(conn, policy)
    counts: dict[str, int] = {}
    key = str(customer_id)
    with conn.transaction():
        audit.set_app_user(conn, app_user)
        redactions: list[tuple[str, str, list[str], list[str] | None]] = []
        for schema, table, column in referencing_tables(conn, "customers"):
            label = _label(schema, table)
            rule = policy[label]
            ident, col = sql.Identifier(schema, table), sql.Identifier(column)
            if rule == "delete":
                query = sql.SQL("DELETE FROM {} WHERE {} = %s RETURNING id").format(ident, col)
                ids = [str(r[0]) for r in conn.execute(query, (key,)).fetchall()]
                redactions.append((schema, table, ids, None))
            else:
                sets, values = [], []
                for c, v in rule.items():
                    if isinstance(v, truncate_to):
                        sets.append(
                            sql.SQL("{} = date_trunc({}, {})").format(
                                sql.Identifier(c), sql.Literal(v.unit), sql.Identifier(c)
                            )
                        )
                    else:
                        sets.append(sql.SQL("{} = %s").format(sql.Identifier(c)))
                        values.append(v)
                query = sql.SQL("UPDATE {} SET {} WHERE {} = %s RETURNING id").format(
                    ident, sql.SQL(", ").join(sets), col
                )
                ids = [str(r[0]) for r in conn.execute(query, (*values, key)).fetchall()]
                redactions.append((schema, table, ids, list(rule)))
            counts[f"{label} ({'deleted' if rule == 'delete' else 'anonymized'})"] = len(ids)
        deleted = conn.execute("DELETE FROM customers WHERE id = %s", (key,)).rowcount
        if deleted != 1:
            raise ValueError(f"no customer {customer_id}: nothing erased (rolled back)")
        counts["customers (deleted)"] = deleted
        redactions.append(("public", "customers", [key], None))
        counts["audit entries redacted"] = sum(
            audit.redact(conn, table, ids, reason=reason, columns=cols, schema=schema)
            for schema, table, ids, cols in redactions
            if ids
        )
    return counts


def find_traces(conn, needles: Mapping[str, str]):
    """Rows, per table and needle, whose text holds the needle as a whole token
    (case-insensitive; ``10.0.0.1`` does not match inside ``10.0.0.12``): every table
    outside the system schemas is searched whole (``t::text``), the audit log included.
    Run it as a role that can read every table. Returns a DataFrame (table, needle, rows)."""
    import re

    import pandas as pd
    from psycopg import sql

    tables = conn.execute(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
    ).fetchall()
    query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text ~* %s")
    found = []
    for schema, table in tables:
        for label, needle in needles.items():
            if not needle:
                raise ValueError(f"the needle {label!r} is empty: it would match every row")
            pattern = r"(^|[^[:alnum:]])" + re.escape(needle) + r"($|[^[:alnum:]])"
            rows = conn.execute(query.format(sql.Identifier(schema, table)), (pattern,)).fetchone()[
                0
            ]
            found.append({"table": f"{schema}.{table}", "needle": label, "rows": rows})
    return pd.DataFrame(found, columns=["table", "needle", "rows"])


def aggregates(conn):
    """Revenue and order count per country and month: the figures an erasure must keep."""
    import pandas as pd

    rows = conn.execute(
        "SELECT country, to_char(created_at, 'YYYY-MM') AS month, count(*) AS orders, "
        "sum(amount_cents) AS revenue_cents FROM orders GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    return pd.DataFrame(rows, columns=["country", "month", "orders", "revenue_cents"])


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionRule:
    """Rows of ``table`` whose ``timestamp`` is older than the retention period are deleted
    (``clear`` empty) or have the ``clear`` columns set to NULL."""

    table: str
    timestamp: str
    clear: tuple[str, ...] = ()

    @property
    def action(self) -> str:
        return "anonymize " + ", ".join(self.clear) if self.clear else "delete"


RETENTION_RULES = (
    RetentionRule("logins", "at"),
    RetentionRule("tickets", "created_at"),
    RetentionRule("orders", "created_at", clear=("shipping_address",)),
)


class RetentionJob:
    """Apply retention rules: ``due()`` counts the rows past ``days``, ``run()`` deletes or
    anonymizes them in one transaction (as the app user ``retention-job``, so the audit log
    says who) and returns the rows changed per rule. In the same transaction it redacts
    the audit entries of those rows (all values for a deleted row, the cleared columns for
    an anonymized one): otherwise the log's DELETE entries would keep what retention
    removed. ``connect`` must therefore log in as a role allowed to call ``audit.redact``."""

    def __init__(self, connect: Callable[[], Any], days: int, rules=RETENTION_RULES) -> None:
        if days < 1:
            raise ValueError(f"retention of {days} days: give at least 1 day")
        self.connect, self.days, self.rules = connect, days, tuple(rules)

    def _where(self, rule: RetentionRule):
        from psycopg import sql

        condition = sql.SQL("{} < now() - make_interval(days => %s)").format(
            sql.Identifier(rule.timestamp)
        )
        for column in rule.clear:  # already anonymized rows are not due again
            condition += sql.SQL(" AND {} IS NOT NULL").format(sql.Identifier(column))
        return condition

    def due(self) -> dict[str, int]:
        from psycopg import sql

        with self.connect() as conn:
            return {
                rule.table: conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE ").format(sql.Identifier(rule.table))
                    + self._where(rule),
                    (self.days,),
                ).fetchone()[0]
                for rule in self.rules
            }

    def run(self) -> dict[str, int]:
        from psycopg import sql

        changed = {}
        with self.connect() as conn, conn.transaction():
            audit.set_app_user(conn, "retention-job")
            for rule in self.rules:
                table = sql.Identifier(rule.table)
                if rule.clear:
                    sets = sql.SQL(", ").join(
                        sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in rule.clear
                    )
                    query = sql.SQL("UPDATE {} SET {} WHERE ").format(table, sets)
                else:
                    query = sql.SQL("DELETE FROM {} WHERE ").format(table)
                query += self._where(rule) + sql.SQL(" RETURNING id")
                ids = [r[0] for r in conn.execute(query, (self.days,)).fetchall()]
                changed[rule.table] = len(ids)
                if ids:
                    audit.redact(
                        conn,
                        rule.table,
                        ids,
                        reason=f"retention: {rule.table} older than {self.days} days",
                        columns=list(rule.clear) or None,
                    )
        return changed


def run_on_schedule(job: Callable[[], Any], *, every: float, runs: int) -> Iterator[Any]:
    """Run ``job`` ``runs`` times, one start every ``every`` seconds (a cron in miniature),
    yielding each result."""
    if every <= 0 or runs < 1:
        raise ValueError("give every > 0 seconds and runs >= 1")
    next_start = time.monotonic()
    for _ in range(runs):
        time.sleep(max(0.0, next_start - time.monotonic()))
        next_start += every
        yield job()
