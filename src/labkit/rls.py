"""Row-level security and SQL injection, measured: a small multi-tenant schema and the
counters that say how many rows of *other* tenants an attack saw.

The lesson writes the patterns itself (the ``with_loader_criteria`` event, the policies,
the ``after_begin`` event, bound parameters); this module holds the plumbing around them:
the schema and its data, the role facts, and the tables of results.

>>> from labkit import db, rls
>>> demo = db.fresh_database("doctest_rls")
>>> report = rls.load_tenants(demo, tenants=3, invoices_per_tenant=4)
>>> report.invoices, report.per_tenant
(12, {1: 4, 2: 4, 3: 4})
>>> with demo.connect() as conn:
...     rows = conn.execute("SELECT id, tenant_id FROM invoices ORDER BY id").fetchall()
>>> rls.foreign_rows(rows, tenant_id=1)         # what tenant 1 must never see
8
>>> rls.like_pattern("100%_off")
'%100\\\\%\\\\_off%'
>>> with demo.connect() as conn:
...     rls.order_by("amount_cents", descending=True).as_string(conn)
'ORDER BY "amount_cents" DESC, "id"'
>>> rls.order_by("amount_cents; DROP TABLE invoices")
Traceback (most recent call last):
...
ValueError: cannot sort by 'amount_cents; DROP TABLE invoices': choose one of amount_cents, customer, id, issued_on
>>> db.drop_database("doctest_rls")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, ForeignKey, Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SORTABLE",
    "TENANT_TABLES",
    "AttackTable",
    "Base",
    "Invoice",
    "LoadReport",
    "Member",
    "Tenant",
    "foreign_rows",
    "like_pattern",
    "load_tenants",
    "order_by",
    "policies",
    "role_facts",
    "table_security",
]

#: The columns a caller may sort invoices by (the allowlist of :func:`order_by`).
SORTABLE = ("amount_cents", "customer", "id", "issued_on")

_SPECIAL_CUSTOMERS = ("100% Organic", "Under_score Ltd", "Back\\slash & Co")


class Base(DeclarativeBase):
    """The declarative base of the multi-tenant schema."""


class Tenant(Base):
    """A customer organisation of the SaaS: every other row belongs to one."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)


class Invoice(Base):
    """An invoice of one tenant (``tenant_id``)."""

    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    customer: Mapped[str] = mapped_column(Text)
    amount_cents: Mapped[int] = mapped_column(Integer)
    issued_on: Mapped[dt.date] = mapped_column(Date)


class Member(Base):
    """A user of one tenant, with an e-mail address: what an injection goes after."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    email: Mapped[str] = mapped_column(Text)


#: The tables holding tenant rows (``tenant_id``), in the order they are created.
TENANT_TABLES = ("invoices", "members")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_tenants` wrote: rows per table and invoices per tenant."""

    tenants: int
    invoices: int
    members: int
    per_tenant: dict[int, int]


def load_tenants(
    database: Any, *, tenants: int = 3, invoices_per_tenant: int = 20, members_per_tenant: int = 3
) -> LoadReport:
    """Create the schema (tenants, invoices, members) in ``database`` (a
    :class:`labkit.db.Database`, just made by ``db.fresh_database``) and fill it with
    deterministic rows. Tenant 1 also has three customers whose names hold LIKE's special
    characters (``%``, ``_``, a backslash). Tables are created by the admin connection."""
    if tenants < 2:
        raise ValueError("tenants must be at least 2: an attack needs another tenant to read")
    if invoices_per_tenant < len(_SPECIAL_CUSTOMERS) + 1:
        raise ValueError(f"invoices_per_tenant must be at least {len(_SPECIAL_CUSTOMERS) + 1}")
    engine = database.engine()
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    invoice_rows, member_rows = [], []
    start = dt.date(2026, 1, 1)
    for tenant in range(1, tenants + 1):
        for k in range(invoices_per_tenant):
            if tenant == 1 and k < len(_SPECIAL_CUSTOMERS):
                customer = _SPECIAL_CUSTOMERS[k]
            else:
                customer = f"Customer {tenant}-{k:03d}"
            amount = (tenant * 7_919 + k * 104_729) % 100_000 + 100
            invoice_rows.append((tenant, customer, amount, start + dt.timedelta(days=k % 90)))
        for k in range(members_per_tenant):
            member_rows.append((tenant, f"user{k}@tenant{tenant}.example"))
    with database.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tenants (id, name) VALUES (%s, %s)",
            [(t, f"Tenant {t}") for t in range(1, tenants + 1)],
        )
        with cur.copy(
            "COPY invoices (tenant_id, customer, amount_cents, issued_on) FROM STDIN"
        ) as cp:
            for row in invoice_rows:
                cp.write_row(row)
        with cur.copy("COPY members (tenant_id, email) FROM STDIN") as cp:
            for row in member_rows:
                cp.write_row(row)
    return LoadReport(
        tenants=tenants,
        invoices=len(invoice_rows),
        members=len(member_rows),
        per_tenant={t: invoices_per_tenant for t in range(1, tenants + 1)},
    )


def _tenant_of(row: Any) -> Any:
    if hasattr(row, "tenant_id"):
        return row.tenant_id
    if isinstance(row, dict):
        return row["tenant_id"]
    mapping = getattr(row, "_mapping", None)
    if mapping is not None and "tenant_id" in mapping:
        return mapping["tenant_id"]
    return row[1]  # (id, tenant_id, ...) tuples from psycopg


def foreign_rows(rows: Iterable[Any], tenant_id: int | None) -> int:
    """How many of ``rows`` belong to a tenant other than ``tenant_id`` (``None``: no tenant,
    so every row is foreign). A row is an ORM object or mapping with ``tenant_id``, or a
    tuple ``(id, tenant_id, ...)``."""
    return sum(1 for row in rows if tenant_id is None or _tenant_of(row) != tenant_id)


def like_pattern(term: str) -> str:
    """``term`` as a LIKE/ILIKE pattern matching it anywhere, its ``\\``, ``%`` and ``_``
    escaped (backslash is LIKE's default escape character), so that they match themselves."""
    if not isinstance(term, str):
        raise ValueError(f"a search term is text, not {type(term).__name__}")
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def order_by(column: str, *, descending: bool = False, allowed: Iterable[str] = SORTABLE):
    """``ORDER BY <column> ASC|DESC, "id"`` as a psycopg ``sql.Composed``: the column must be in
    ``allowed`` (else ``ValueError``) and is quoted with ``sql.Identifier``; ``id`` breaks ties."""
    from psycopg import sql

    allowed = tuple(sorted(allowed))
    if column not in allowed:
        raise ValueError(f"cannot sort by {column!r}: choose one of {', '.join(allowed)}")
    direction = sql.SQL("DESC" if descending else "ASC")
    return sql.SQL("ORDER BY {} {}, {}").format(
        sql.Identifier(column), direction, sql.Identifier("id")
    )


def role_facts(bind: Any, table: str = "invoices") -> dict[str, Any]:
    """Who a connection is: ``current_user``, whether it is a superuser, has BYPASSRLS, and
    acts as the owner of ``table``. ``bind`` is a SQLAlchemy Engine/Connection/Session or a
    psycopg connection.

    ``owner`` is true when the role has the owner's privileges, as PostgreSQL's own check
    does (``pg_has_role(..., 'USAGE')``): the owner itself, any role granted the owner role
    (with INHERIT, the default) and a superuser. Row-level security treats all of them as
    the owner: they skip the policies of a table that is not forced."""
    query = (
        "SELECT current_user, r.rolsuper, r.rolbypassrls, "
        "pg_has_role(current_user, c.relowner, 'USAGE') "
        "FROM pg_roles r, pg_class c "
        "WHERE r.rolname = current_user AND c.oid = to_regclass(%(table)s)"
    )
    row = _fetch_one(bind, query, {"table": table})
    return {"user": row[0], "superuser": row[1], "bypassrls": row[2], "owner": row[3]}


def table_security(bind: Any, table: str = "invoices") -> dict[str, bool]:
    """``{"enabled": ..., "forced": ...}``: the table's ROW LEVEL SECURITY flags."""
    row = _fetch_one(
        bind,
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(%(table)s)",
        {"table": table},
    )
    return {"enabled": row[0], "forced": row[1]}


def policies(bind: Any, table: str = "invoices") -> list[dict[str, Any]]:
    """The policies on ``table`` (name, command, roles, USING and WITH CHECK expressions).
    ``table`` is resolved like a table name in a query (``search_path``; ``"schema.table"``
    names one schema), so a same-named table in another schema is not mixed in."""
    _fetch_one(bind, "SELECT 1 FROM pg_class WHERE oid = to_regclass(%(table)s)", {"table": table})
    query = (
        "SELECT p.policyname, p.cmd, p.roles::text[], p.qual, p.with_check "
        "FROM pg_policies p "
        "JOIN pg_namespace n ON n.nspname = p.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
        "WHERE c.oid = to_regclass(%(table)s) ORDER BY p.policyname"
    )
    rows = _fetch_all(bind, query, {"table": table})
    keys = ("policy", "command", "roles", "using", "with_check")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _fetch_all(bind: Any, query: str, params: dict) -> list[tuple]:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query, params).all()]
    if isinstance(bind, Session):
        bind = bind.connection()
    if isinstance(bind, Connection):
        return [tuple(r) for r in bind.exec_driver_sql(query, params).all()]
    return [tuple(r) for r in bind.execute(query, params).fetchall()]


def _fetch_one(bind: Any, query: str, params: dict) -> tuple:
    rows = _fetch_all(bind, query, params)
    if not rows:
        raise ValueError(f"no table {params.get('table')!r} here: run load_tenants first")
    return rows[0]


@dataclass
class AttackTable:
    """Foreign rows seen, per attack and per defence: ``record`` each measure, then
    ``frame()`` (a pandas DataFrame, attacks as rows) or ``bars(ax)`` (a plot)."""

    defences: tuple[str, ...] = ("app-level filter", "PostgreSQL RLS")
    results: dict[str, dict[str, int | None]] = field(default_factory=dict)

    def record(self, attack: str, defence: str, foreign: int | None) -> int | None:
        """Note that ``attack`` saw ``foreign`` rows of other tenants under ``defence``
        (``None``: the attack does not apply to that defence)."""
        if defence not in self.defences:
            raise ValueError(f"unknown defence {defence!r}: use one of {self.defences}")
        self.results.setdefault(attack, {})[defence] = foreign
        return foreign

    def seen(self, attack: str, defence: str) -> int | None:
        return self.results[attack][defence]

    def frame(self):
        import pandas as pd

        rows = {
            attack: {d: by.get(d) for d in self.defences} for attack, by in self.results.items()
        }
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(self.defences))
        frame.index.name = "attack (foreign rows seen)"
        return frame.astype("Int64")

    def bars(self, ax=None):
        """A horizontal bar chart: foreign rows seen per attack, one bar per defence."""
        import matplotlib.pyplot as plt

        frame = self.frame().fillna(0).astype(int)
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(frame)))
        frame.iloc[::-1].plot.barh(ax=ax, color=["tab:red", "tab:green"][: len(self.defences)])
        ax.set_xlabel("rows of other tenants seen (lower is better)")
        ax.set_ylabel("")
        return ax
