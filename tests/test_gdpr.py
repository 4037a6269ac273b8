"""labkit.gdpr against a real PostgreSQL: the shop's export (catalog-discovered tables, the
e-mail decrypted, the audit entries), an erasure that leaves no trace anywhere — audit log
included — and keeps the aggregates, a policy gap that stops the erasure, and a retention
job counted before and after."""

from __future__ import annotations

import json

import psycopg
import pytest

from labkit import db, fieldcrypt, gdpr

DB = "s11b_test_gdpr"


@pytest.fixture(scope="module")
def shop():
    mp = pytest.MonkeyPatch()
    for var in (fieldcrypt.KEYS_VAR, fieldcrypt.ACTIVE_VAR, fieldcrypt.BLIND_INDEX_VAR):
        mp.delenv(var, raising=False)
    fieldcrypt.add_key("k1")
    fieldcrypt.set_blind_index_key()
    database = db.fresh_database(DB)
    app, privacy = db.login_role("s11b_app"), db.login_role("s11b_privacy")
    report = gdpr.build_shop(
        database, customers=60, app_role=app.name, privacy_role=privacy.name, progress=False
    )
    yield database, report, app, privacy
    db.drop_database(DB)
    mp.undo()


def test_export_erase_and_no_trace_left(shop):
    """Export one customer as JSON across the catalog's tables (e-mail in clear), erase
    them as the privacy role: their own rows gone, orders kept but unlinked, aggregates
    unchanged, audit entries redacted, and no needle found in any table afterwards."""
    database, report, app, privacy = shop
    assert report.customers == 60 and report.shared_emails == 4
    with psycopg.connect(app.url(database.name)) as conn:
        subject, name = conn.execute(  # the first by name with an e-mail of their own
            "SELECT id, name FROM customers WHERE email_bidx IN "
            "(SELECT email_bidx FROM customers GROUP BY 1 HAVING count(*) = 1) "
            "ORDER BY name LIMIT 1"
        ).fetchone()
        with conn.transaction():
            conn.execute("SELECT set_config('app.user_id', 'support', true)")
            conn.execute("UPDATE customers SET name = name || ' Jr' WHERE id = %s", (subject,))
        name += " Jr"
        exported = gdpr.export_subject(conn, subject)
    person = exported["customers"][0]
    assert set(exported) == {"customers", "logins", "orders", "tickets", "audit.log"}
    assert person["name"] == name and person["email"].endswith("@example.org")
    assert len(exported["logins"]) == 4 and len(exported["tickets"]) == 1
    assert [e["op"] for e in exported["audit.log"]] == ["UPDATE"]
    assert json.loads(json.dumps(exported)) == exported
    needles = {
        "name": name,
        "email": person["email"],
        "id": str(subject),
        "blind index": fieldcrypt.blind_index(person["email"]),
        **{f"address {i}": o["shipping_address"] for i, o in enumerate(exported["orders"])},
        **{f"ip {i}": login["ip"] for i, login in enumerate(exported["logins"])},
    }
    with psycopg.connect(privacy.url(database.name)) as conn:
        before = gdpr.find_traces(conn, needles)
        totals_before = gdpr.aggregates(conn)
        counts = gdpr.erase_subject(conn, subject, reason="DSR-42")
        after = gdpr.find_traces(conn, needles)
        totals_after = gdpr.aggregates(conn)
        redact_entries = conn.execute(
            "SELECT count(*) FROM audit.log WHERE op = 'REDACT' AND new->>'reason' = 'DSR-42'"
        ).fetchone()[0]
    assert before.query("table == 'audit.log'")["rows"].sum() >= 1
    assert before["rows"].sum() >= 8
    assert after["rows"].sum() == 0, after[after["rows"] > 0]
    assert counts["customers (deleted)"] == 1 and counts["logins (deleted)"] == 4
    assert counts["orders (anonymized)"] == len(exported["orders"])
    # the name change and the delete; 4 logins, 1 ticket deleted; each order anonymized
    assert counts["audit entries redacted"] == 2 + 4 + 1 + len(exported["orders"])
    assert redact_entries == 4
    assert totals_after.equals(totals_before)
    with psycopg.connect(privacy.url(database.name)) as conn:
        with pytest.raises(ValueError, match="erased already"):
            gdpr.export_subject(conn, subject)
        kept = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE created_at = date_trunc('month', created_at)) "
            "FROM orders WHERE id = ANY(%s)",
            ([o["id"] for o in exported["orders"]],),
        ).fetchone()
    assert kept == (len(exported["orders"]),) * 2  # kept, with the time coarsened to the month


def test_find_subject_confirms_the_hit_and_refuses_a_shared_address(shop):
    """find_subject returns the one customer whose decrypted e-mail matches (any spelling);
    an address two customers share is refused, not guessed; an index copied into another
    row does not make that row a match."""
    database, _, app, _ = shop
    with psycopg.connect(app.url(database.name)) as conn:
        shared = conn.execute(
            "SELECT array_agg(id) FROM customers GROUP BY email_bidx HAVING count(*) = 2 LIMIT 1"
        ).fetchone()[0]
        own = conn.execute(
            "SELECT id FROM customers WHERE email_bidx IN (SELECT email_bidx FROM customers "
            "GROUP BY 1 HAVING count(*) = 1) ORDER BY id LIMIT 2"
        ).fetchall()
        (victim,), (mallory,) = own
        export = gdpr.export_subject(conn, mallory)
        address = export["customers"][0]["email"]
        shared_address = gdpr.export_subject(conn, shared[0])["customers"][0]["email"]
        assert gdpr.find_subject(conn, " " + address.upper()) == mallory
        with pytest.raises(ValueError, match="2 customers have this e-mail: it is shared"):
            gdpr.find_subject(conn, shared_address)
        conn.execute(
            "UPDATE customers SET email_bidx = %s WHERE id = %s",
            (fieldcrypt.blind_index(address), victim),
        )
        hits = conn.execute(
            "SELECT count(*) FROM customers WHERE email_bidx = %s",
            (fieldcrypt.blind_index(address),),
        ).fetchone()[0]
        assert hits == 2 and gdpr.find_subject(conn, address) == mallory
        conn.rollback()


def test_policy_gap_stops_erasure(shop):
    """New tables referencing customers with no erasure rule, one with a capital letter and
    one in another schema: check_policy names both exactly, and once they have rules the
    erasure applies them (quoted as the catalog names them)."""
    database, *_ = shop
    with database.connect() as conn:
        conn.execute(
            'CREATE TABLE "Reviews" (id serial PRIMARY KEY, customer_id uuid REFERENCES customers)'
        )
        conn.execute("CREATE SCHEMA other")
        conn.execute(
            "CREATE TABLE other.notes (id serial PRIMARY KEY, customer_id uuid REFERENCES customers)"
        )
        try:
            with pytest.raises(ValueError, match=r"\['Reviews', 'other.notes'\] reference"):
                gdpr.check_policy(conn, gdpr.ERASURE_POLICY)
            subject = conn.execute("SELECT id FROM customers ORDER BY id LIMIT 1").fetchone()[0]
            conn.execute('INSERT INTO "Reviews" (customer_id) VALUES (%s)', (subject,))
            conn.execute("INSERT INTO other.notes (customer_id) VALUES (%s)", (subject,))
            policy = {**gdpr.ERASURE_POLICY, "Reviews": "delete", "other.notes": "delete"}
            counts = gdpr.erase_subject(conn, subject, reason="t", policy=policy)
            assert counts["Reviews (deleted)"] == counts["other.notes (deleted)"] == 1
        finally:
            conn.rollback()


def test_find_traces_matches_whole_tokens_only(shop):
    """An IP that is a prefix of another is not found inside it; the full one is, in
    any case; an empty needle is refused."""
    database, *_ = shop
    with database.connect() as conn:
        conn.execute("CREATE TABLE probe (ip inet, note text)")
        conn.execute("INSERT INTO probe VALUES ('10.0.0.12', 'Ada Lovelace Jr')")
        found = gdpr.find_traces(
            conn, {"short": "10.0.0.1", "full": "10.0.0.12", "n": "ADA lovelace"}
        )
        with pytest.raises(ValueError, match="would match every row"):
            gdpr.find_traces(conn, {"empty": ""})
        conn.rollback()
    probe = found[found["table"] == "public.probe"].set_index("needle")["rows"].to_dict()
    assert probe == {"short": 0, "full": 1, "n": 1}


def test_retention_job_counts_before_and_after(shop):
    """Rows past 365 days: due > 0 before, 0 after; newer rows untouched; a second
    scheduled run changes nothing."""
    database, *_ = shop
    job = gdpr.RetentionJob(database.connect, days=365)
    with database.connect() as conn:
        newer = conn.execute(
            "SELECT count(*) FROM logins WHERE at >= now() - interval '365 days'"
        ).fetchone()[0]
    due = job.due()
    assert all(n > 0 for n in due.values()), due
    runs = list(gdpr.run_on_schedule(job.run, every=0.05, runs=2))
    assert runs[0] == due and runs[1] == {t: 0 for t in due}
    assert job.due() == {t: 0 for t in due}
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM logins").fetchone()[0] == newer
        deletes, holding = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE old->>'customer_id' <> '[redacted]') "
            "FROM audit.log WHERE app_user = 'retention-job' AND op = 'DELETE' "
            "AND table_name = 'logins'"
        ).fetchone()
    assert (deletes, holding) == (runs[0]["logins"], 0)  # logged, and redacted
    with pytest.raises(ValueError, match="at least 1 day"):
        gdpr.RetentionJob(database.connect, days=0)
