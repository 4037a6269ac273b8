"""An audit log kept by PostgreSQL itself: a generic trigger, append-only, redactable.

:func:`install` creates the schema ``audit`` with the table ``audit.log`` and three
functions; :func:`track` attaches the trigger to a table. Every INSERT, UPDATE and DELETE
on a tracked table — through the ORM, Core or raw SQL, by any client — adds one row:

- **who**: the application's user id, which the application sets per transaction with
  ``set_config('app.user_id', ..., true)`` (:func:`set_app_user`), and the database role
  that logged in (``session_user``: the trigger function runs as its owner, so
  ``current_user`` inside it would name the owner, not the caller);
- **when**: ``clock_timestamp()``, and the transaction id;
- **what**: the table, the operation, the row's key, and the diff: for an UPDATE only the
  columns that changed (``old`` and ``new``, jsonb), for an INSERT the new row, for a
  DELETE the old row. Columns named as *masked* are logged as ``"[masked]"``: the log
  records that they changed, never their values.

**Append-only.** The application role gets SELECT on the log and nothing else; the trigger
function is ``SECURITY DEFINER``, so the application cannot write, forge or erase entries.
A guard trigger also refuses UPDATE, DELETE and TRUNCATE from the owner, except inside
:func:`redact` (``audit.redact(table, keys, columns, reason)``), the one controlled way to
remove personal data from old entries, which logs itself as a ``REDACT`` entry.

>>> from labkit import db
>>> demo = db.fresh_database("s11b_doctest_audit")
>>> with demo.connect(autocommit=True) as conn:
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
    txid       bigint      NOT NULL DEFAULT txid_current(),
    app_user   text,
    db_user    text        NOT NULL DEFAULT session_user,
    table_name text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'REDACT')),
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
    IF TG_OP = 'INSERT' THEN
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
    INSERT INTO audit.log (app_user, table_name, op, row_key, old, new)
    VALUES (NULLIF(current_setting('app.user_id', true), ''), TG_TABLE_NAME, TG_OP,
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

-- Append-only, even for the owner: only audit.redact may change an entry.
CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('audit.redacting', true) = 'on' THEN
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
CREATE OR REPLACE FUNCTION audit.redact(p_table text, p_keys text[], p_cols text[], p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed bigint;
BEGIN
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'audit.redact needs a reason (the erasure request id, say)';
    END IF;
    PERFORM set_config('audit.redacting', 'on', true);
    UPDATE audit.log
       SET old = audit.mask(old, p_cols, '[redacted]'),
           new = audit.mask(new, p_cols, '[redacted]'),
           row_key = CASE WHEN p_cols IS NULL THEN '[redacted]' ELSE row_key END
     WHERE table_name = p_table AND row_key = ANY(p_keys) AND op <> 'REDACT';
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM set_config('audit.redacting', 'off', true);
    INSERT INTO audit.log (app_user, table_name, op, new)
    VALUES (NULLIF(current_setting('app.user_id', true), ''), p_table, 'REDACT',
            jsonb_build_object('reason', p_reason, 'entries', changed,
                               'columns', coalesce(to_jsonb(p_cols), '"all"'::jsonb)));
    RETURN changed;
END $$;

REVOKE ALL ON FUNCTION audit.record() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit.redact(text, text[], text[], text) FROM PUBLIC;
"""


def _ident(name: str):
    from psycopg import sql

    return sql.Identifier(*name.split(".")) if "." in name else sql.Identifier(name)


def install(conn) -> None:
    """Create (idempotently) ``audit.log``, the trigger function and :func:`redact`'s
    function, as the connection's role (the owner; a superuser or the database owner)."""
    conn.execute(SCHEMA_SQL)


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
    conn, table: str, keys: Iterable[Any], *, reason: str, columns: Sequence[str] | None = None
) -> int:
    """Call ``audit.redact``: mask ``columns`` (None: all, and the row key) in the log
    entries of ``table`` rows ``keys``. Returns the number of entries changed."""
    row = conn.execute(
        "SELECT audit.redact(%s, %s, %s, %s)",
        (table, [str(k) for k in keys], None if columns is None else list(columns), reason),
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
