"""An audit log kept by PostgreSQL itself: a generic trigger, append-only, redactable.

:func:`install` creates the schema ``audit`` with the table ``audit.log`` and three
functions; :func:`track` attaches the trigger to a table. Every INSERT, UPDATE and DELETE
on a tracked table — through the ORM, Core or raw SQL, by any client — adds one row:

- **who**: the application's user id, which the application sets per transaction with
  ``set_config('app.user_id', ..., true)`` (:func:`set_app_user`), and the database role
  that logged in (``session_user``: the trigger function runs as its owner, so
  ``current_user`` inside it would name the owner, not the caller);
- **when**: ``clock_timestamp()``, and the transaction id (``pg_current_xact_id()``);
- **what**: the schema and table, the operation (a ``TRUNCATE`` too, one entry per statement), the row's key, and the diff: for an UPDATE only the
  columns that changed (``old`` and ``new``, jsonb), for an INSERT the new row, for a
  DELETE the old row. Columns named as *masked* are logged as ``"[masked]"``: the log
  records that they changed, never their values.

``app_user`` is what the application *claims* (any code that can run SQL on its connection,
an injection included, can set it); only ``db_user`` is vouched for by PostgreSQL.

**Append-only.** The schema, the log and its functions belong to a dedicated ``NOLOGIN``
role (:func:`owner_role`, ``labkit_s11b_audit`` with the course prefix) that nobody is a
member of: not the application's role, not the role that owns the application's tables.
Those can therefore not UPDATE, DELETE, TRUNCATE, disable the guard, or drop the log. The
application role gets SELECT and nothing else; the trigger function is
``SECURITY DEFINER`` (it runs as the log's owner), so the application cannot write or erase
entries. A guard trigger refuses UPDATE, DELETE and TRUNCATE from anyone but the log's
owner, which in practice means inside :func:`redact` (``audit.redact(table, keys, columns,
reason[, schema])``), the one controlled way to remove personal data from old entries,
which logs itself as a ``REDACT`` entry. The guard stops accidents, not a superuser (who
can become any role, disable triggers or drop the schema): tamper *evidence* against
administrators needs the log shipped off-host as it is written (logical replication to a
separate server, WORM storage) or entries hash-chained and the chain head kept elsewhere.

>>> from labkit import db
>>> demo = db.fresh_database("s11b_doctest_audit")
>>> with demo.connect(autocommit=True) as conn:  # a superuser: install creates the owner role
...     install(conn)
...     _ = conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, secret text)")
...     track(conn, "notes", key="id", masked=["secret"])
...     with conn.transaction():
...         set_app_user(conn, "alice")
...         _ = conn.execute("INSERT INTO notes VALUES (1, 'hello', 's1')")
...         _ = conn.execute("UPDATE notes SET body = 'hi', secret = 's2' WHERE id = 1")
...     rows = conn.execute("SELECT app_user, op, old, new FROM audit.log ORDER BY id").fetchall()
>>> rows[1]
('alice', 'UPDATE', {'body': 'hello', 'secret': '[masked]'}, {'body': 'hi', 'secret': '[masked]'})
>>> db.drop_database("s11b_doctest_audit")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "SCHEMA_SQL",
    "changes_per_user_per_day",
    "grant_reader",
    "install",
    "owner_role",
    "plot_dashboard",
    "redact",
    "set_app_user",
    "track",
]

SCHEMA_SQL = r"""
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE IF NOT EXISTS audit.log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid       bigint      NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    app_user   text,         -- what the application claims (app.user_id): not verified
    db_user    text        NOT NULL DEFAULT session_user,  -- vouched for by PostgreSQL
    table_schema text      NOT NULL DEFAULT 'public',
    table_name text        NOT NULL,
    op         text        NOT NULL
               CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REDACT')),
    row_key    text,
    old        jsonb,
    new        jsonb
);
CREATE INDEX IF NOT EXISTS log_at ON audit.log (at);
CREATE INDEX IF NOT EXISTS log_row ON audit.log (table_name, row_key);

-- The generic trigger: TG_ARGV[0] is the key column, the other arguments the masked columns.
CREATE OR REPLACE FUNCTION audit.record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    masked text[] := coalesce(TG_ARGV[1:], '{}');
    before jsonb;
    after  jsonb;
    key    text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- a statement-level trigger: no rows to show
        INSERT INTO audit.log (app_user, table_schema, table_name, op)
        VALUES (NULLIF(current_setting('app.user_id', true), ''), TG_TABLE_SCHEMA,
                TG_TABLE_NAME, TG_OP);
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        after := to_jsonb(NEW);
        key := after ->> TG_ARGV[0];
    ELSIF TG_OP = 'DELETE' THEN
        before := to_jsonb(OLD);
        key := before ->> TG_ARGV[0];
    ELSE  -- UPDATE: the changed columns only
        SELECT jsonb_object_agg(o.key, o.value), jsonb_object_agg(n.key, n.value)
          INTO before, after
          FROM jsonb_each(to_jsonb(OLD)) AS o
          JOIN jsonb_each(to_jsonb(NEW)) AS n ON n.key = o.key
         WHERE o.value IS DISTINCT FROM n.value;
        IF before IS NULL THEN
            RETURN NULL;  -- nothing changed: nothing to record
        END IF;
        key := to_jsonb(NEW) ->> TG_ARGV[0];
    END IF;
    INSERT INTO audit.log (app_user, table_schema, table_name, op, row_key, old, new)
    VALUES (NULLIF(current_setting('app.user_id', true), ''), TG_TABLE_SCHEMA, TG_TABLE_NAME,
            TG_OP,
            key,
            audit.mask(before, masked, '[masked]'), audit.mask(after, masked, '[masked]'));
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION audit.mask(doc jsonb, cols text[], label text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN doc IS NULL THEN NULL ELSE coalesce(
        (SELECT jsonb_object_agg(key, CASE WHEN (cols IS NULL OR key = ANY(cols))
                                            AND value <> 'null'::jsonb
                                           THEN to_jsonb(label) ELSE value END)
           FROM jsonb_each(doc)), '{}'::jsonb) END
$$;

-- Append-only: only the log's owner may change an entry, and nobody logs in as it, so in
-- practice only audit.redact (SECURITY DEFINER: it runs as the owner) does. No setting
-- that a session could set is trusted. A superuser can still get round it.
CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_user = (SELECT pg_get_userbyid(relowner)
                                               FROM pg_class WHERE oid = TG_RELID) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit.log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'remove personal data with audit.redact(table, keys, columns, reason)';
END $$;
CREATE OR REPLACE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON audit.log
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE OR REPLACE TRIGGER log_no_truncate BEFORE TRUNCATE ON audit.log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Redaction: mask the values of `cols` (NULL: every column, and the row key too) in the
-- entries of these rows, and record the redaction itself.
CREATE OR REPLACE FUNCTION audit.redact(p_table text, p_keys text[], p_cols text[],
                                        p_reason text, p_schema text DEFAULT 'public')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed bigint;
BEGIN
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'audit.redact needs a reason (the erasure request id, say)';
    END IF;
    UPDATE audit.log
       SET old = audit.mask(old, p_cols, '[redacted]'),
           new = audit.mask(new, p_cols, '[redacted]'),
           row_key = CASE WHEN p_cols IS NULL THEN '[redacted]' ELSE row_key END
     WHERE table_schema = p_schema AND table_name = p_table AND row_key = ANY(p_keys)
       AND op <> 'REDACT';
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO audit.log (app_user, table_schema, table_name, op, new)
    VALUES (NULLIF(current_setting('app.user_id', true), ''), p_schema, p_table, 'REDACT',
            jsonb_build_object('reason', p_reason, 'entries', changed,
                               'columns', coalesce(to_jsonb(p_cols), '"all"'::jsonb)));
    RETURN changed;
END $$;

REVOKE ALL ON FUNCTION audit.record() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit.redact(text, text[], text[], text, text) FROM PUBLIC;
"""

#: The function signatures that change hands to the owner role (and GRANT statements name).
FUNCTIONS = (
    "audit.record()",
    "audit.mask(jsonb, text[], text)",
    "audit.refuse_change()",
    "audit.redact(text, text[], text[], text, text)",
)


def _ident(name: str):
    from psycopg import sql

    return sql.Identifier(*name.split(".")) if "." in name else sql.Identifier(name)


def owner_role() -> str:
    """The name of the role that owns the log: ``labkit_s11b_audit`` with the course's
    ``LABKIT_DB_PREFIX`` (one per server, shared by every database's log)."""
    from labkit import db

    return db.qualified_name("labkit_s11b_audit", "role name")


def install(conn) -> None:
    """Create (idempotently) the schema ``audit``, ``audit.log``, the trigger function and
    :func:`redact`'s function, and hand them all to :func:`owner_role`: a ``NOLOGIN`` role
    with no members, created here if needed. ``conn`` must be a superuser's (only a
    superuser can create objects for a role it is not a member of)."""
    from psycopg import errors, sql

    owner = sql.Identifier(owner_role())
    try:
        with conn.transaction():  # a savepoint: another installer may create it first
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
                ).format(owner)
            )
    except (errors.DuplicateObject, errors.UniqueViolation):
        pass
    with conn.transaction():
        conn.execute(SCHEMA_SQL)
        conn.execute(sql.SQL("ALTER SCHEMA audit OWNER TO {}").format(owner))
        conn.execute(sql.SQL("ALTER TABLE audit.log OWNER TO {}").format(owner))
        for function in FUNCTIONS:
            conn.execute(sql.SQL(f"ALTER FUNCTION {function} OWNER TO {{}}").format(owner))


def track(conn, table: str, *, key: str = "id", masked: Sequence[str] = ()) -> None:
    """Attach the audit trigger to ``table`` (``key``: its key column; ``masked``: columns
    whose values the log never holds). Idempotent."""
    from psycopg import sql

    args = sql.SQL(", ").join(sql.Literal(a) for a in (key, *masked))
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE TRIGGER audit_changes AFTER INSERT OR UPDATE OR DELETE ON {} "
            "FOR EACH ROW EXECUTE FUNCTION audit.record({})"
        ).format(_ident(table), args)
    )
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE TRIGGER audit_truncate AFTER TRUNCATE ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit.record({})"
        ).format(_ident(table), args)
    )


def grant_reader(conn, role: str) -> None:
    """Let ``role`` read the log (and nothing more: no INSERT, UPDATE, DELETE, TRUNCATE)."""
    from psycopg import sql

    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA audit TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON audit.log TO {}").format(sql.Identifier(role)))


def set_app_user(conn, user_id: Any) -> None:
    """Name the application user for the rest of this transaction (``set_config(...,
    true)``: transaction-local, so a pooled connection never carries it over)."""
    conn.execute("SELECT set_config('app.user_id', %s, true)", (str(user_id),))


def redact(
    conn,
    table: str,
    keys: Iterable[Any],
    *,
    reason: str,
    columns: Sequence[str] | None = None,
    schema: str = "public",
) -> int:
    """Call ``audit.redact``: mask ``columns`` (None: all, and the row key) in the log
    entries of ``schema.table`` rows ``keys``. Returns the number of entries changed."""
    row = conn.execute(
        "SELECT audit.redact(%s, %s, %s, %s, %s)",
        (
            table,
            [str(k) for k in keys],
            None if columns is None else list(columns),
            reason,
            schema,
        ),
    ).fetchone()
    return int(row[0])


def changes_per_user_per_day(conn, *, days: int = 14):
    """The dashboard's table: one row per day (the last ``days``), one column per
    application user, the number of logged changes (REDACT entries excluded)."""
    import pandas as pd

    rows = conn.execute(
        """
        SELECT date_trunc('day', at)::date AS day, coalesce(app_user, '(none)') AS app_user,
               count(*) AS changes
          FROM audit.log
         WHERE op <> 'REDACT' AND at >= date_trunc('day', now()) - make_interval(days => %s)
         GROUP BY 1, 2 ORDER BY 1, 2
        """,
        (days - 1,),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["day", "app_user", "changes"])
    table = frame.pivot_table(
        index="day", columns="app_user", values="changes", aggfunc="sum", fill_value=0
    )
    table.columns.name = None
    return table.astype(int)


def plot_dashboard(table, *, title: str = "Audit trail: changes per user per day"):
    """:func:`changes_per_user_per_day`'s table as a heat map: one row per user, one column
    per day, each cell labelled with its count (colour on a log scale, so a spike such as
    a key rotation does not hide the ordinary days)."""
    import matplotlib.pyplot as plt
    import numpy as np

    counts = table.T.to_numpy()
    fig, ax = plt.subplots(figsize=(min(12, 2.5 + 0.6 * counts.shape[1]), 0.9 + 0.45 * len(counts)))
    ax.imshow(np.log1p(counts), cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(counts.shape[1]), [d.strftime("%m-%d") for d in table.index])
    ax.set_yticks(range(len(counts)), list(table.columns))
    ax.tick_params(axis="x", labelrotation=45)
    top = np.log1p(counts.max()) if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        if value:
            dark = np.log1p(value) > 0.6 * top
            ax.text(
                col,
                row,
                f"{value:,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_title(title)
    fig.tight_layout()
    return fig
