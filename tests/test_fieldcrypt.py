"""labkit.fieldcrypt against a real PostgreSQL: the EncryptedText column through the ORM and
Core, row binding (a copied ciphertext fails), tampering, unknown keys, the blind index,
and a rotation that reaches 0 old-key rows while a reader keeps reading."""

from __future__ import annotations

import threading
import uuid

import psycopg.sql
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from labkit import db, fieldcrypt, gdpr
from labkit.fieldcrypt import FieldDecryptionError, UnknownKeyError

VARS = (fieldcrypt.KEYS_VAR, fieldcrypt.ACTIVE_VAR, fieldcrypt.BLIND_INDEX_VAR)


@pytest.fixture
def keys(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    fieldcrypt.add_key("k1")
    fieldcrypt.set_active("k1")
    fieldcrypt.set_blind_index_key()


@pytest.fixture(scope="module")
def database():
    database = db.fresh_database("s11b_test_fieldcrypt")
    gdpr.Base.metadata.create_all(engine := database.engine())
    yield database, engine
    engine.dispose()
    db.drop_database("s11b_test_fieldcrypt")


@pytest.fixture
def shop(keys, database):
    """The shop's tables, empty (one database for the module: a drop costs seconds)."""
    with database[0].connect() as conn:
        conn.execute("TRUNCATE customers CASCADE")
        conn.commit()
    return database


def test_key_ring_from_environment_shows_ids_only_and_rejects_bad_keys(keys, monkeypatch):
    """Keys come from the environment; the ring's repr names ids, never key material;
    a short key, an unknown active id and an empty variable each get a clear error."""
    import os

    ring = fieldcrypt.KeyRing.from_env()
    assert repr(ring) == "KeyRing(ids=['k1'], active='k1')"
    raw = os.environ[fieldcrypt.KEYS_VAR].split(":", 1)[1]
    assert raw not in repr(ring) and len(ring.keys["k1"]) == 32
    with pytest.raises(ValueError, match="AES-256 needs 32 random bytes"):
        fieldcrypt.KeyRing({"k1": b"short"}, "k1")
    with pytest.raises(ValueError, match="set LABKIT_FIELD_KEY_ACTIVE to one of them"):
        fieldcrypt.set_active("k9")
    monkeypatch.setenv(fieldcrypt.KEYS_VAR, "")
    with pytest.raises(ValueError, match="fieldcrypt.add_key makes one"):
        fieldcrypt.KeyRing.from_env()


def test_orm_round_trip_stores_no_plaintext_and_fresh_nonces(shop):
    """The ORM writes envelopes (key id, fresh nonce: equal e-mails give different
    ciphertexts), reads plaintext back, updates re-encrypt, untouched values are not
    rewritten, and a bare string in a Core write is refused."""
    database, engine = shop
    with Session(engine) as session:
        a = gdpr.Customer(name="Ada", email="ada@example.org", country="FR")
        b = gdpr.Customer(name="Ada twin", email="ADA@example.org ", country="FR")
        session.add_all([a, b])
        session.commit()
        assert a.email == "ada@example.org"  # the attribute is plaintext again after flush
        ids = a.id, b.id
    with database.connect() as conn:
        stored = dict(conn.execute("SELECT id, email FROM customers").fetchall())
        bidx = dict(conn.execute("SELECT id, email_bidx FROM customers").fetchall())
    assert all(
        v.startswith("v1:k1:") and "ada@example.org" not in v.lower() for v in stored.values()
    )
    assert stored[ids[0]] != stored[ids[1]]
    assert bidx[ids[0]] == bidx[ids[1]] == fieldcrypt.blind_index("ada@example.org")
    with Session(engine) as session:
        assert session.get(gdpr.Customer, ids[1]).email == "ADA@example.org "
        found = session.scalars(
            select(gdpr.Customer).where(
                gdpr.Customer.email_bidx == fieldcrypt.blind_index(" Ada@Example.org")
            )
        ).all()
        assert sorted(c.name for c in found) == ["Ada", "Ada twin"]
        row = session.get(gdpr.Customer, ids[0])
        row.country = "PT"
        session.commit()
    with database.connect() as conn:
        assert (
            conn.execute("SELECT email FROM customers WHERE id = %s", (ids[0],)).fetchone()[0]
            == stored[ids[0]]
        )
    with Session(engine) as session:
        row = session.get(gdpr.Customer, ids[0])
        row.email = "ada@new.example"
        session.commit()
    with Session(engine) as session:
        assert session.get(gdpr.Customer, ids[0]).email == "ada@new.example"
    with engine.begin() as conn, pytest.raises(Exception, match="write fieldcrypt.for_row"):
        conn.execute(
            insert(gdpr.Customer.__table__).values(
                id=uuid.uuid4(), name="x", email="plain@example.org", country="FR"
            )
        )


def test_copied_tampered_and_unknown_key_values_are_refused(shop):
    """A ciphertext copied to another row, one flipped character, and a key id missing
    from the ring each raise, naming the fix; nothing is decrypted."""
    database, engine = shop
    one, two = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        for key, mail in ((one, "one@example.org"), (two, "two@example.org")):
            conn.execute(
                insert(gdpr.Customer.__table__).values(
                    id=key, name=mail, email=fieldcrypt.for_row(mail, key), country="FR"
                )
            )
        conn.execute(
            text(
                "UPDATE customers SET email = (SELECT email FROM customers WHERE id = :a) WHERE id = :b"
            ),
            {"a": one, "b": two},
        )
    with Session(engine) as session, pytest.raises(FieldDecryptionError, match="copied"):
        session.get(gdpr.Customer, two)
    with engine.begin() as conn:
        envelope = conn.execute(
            select(text("email")).select_from(gdpr.Customer.__table__).where(text("id = :a")),
            {"a": one},
        ).scalar_one()
        flipped = envelope[:-6] + ("A" if envelope[-6] != "A" else "B") + envelope[-5:]
        conn.execute(
            update(gdpr.Customer.__table__)
            .where(gdpr.Customer.id == one)
            .values(email=fieldcrypt.for_row("x", one))
        )
        conn.execute(
            text("UPDATE customers SET email = :e WHERE id = :a"), {"e": flipped, "a": one}
        )
    with Session(engine) as session, pytest.raises(FieldDecryptionError, match="not decrypted"):
        session.get(gdpr.Customer, one)
    cipher = fieldcrypt.current_cipher()
    foreign = envelope.replace("v1:k1:", "v1:k0:")
    with pytest.raises(UnknownKeyError, match="put that key back"):
        cipher.decrypt(foreign, fieldcrypt.aad("customers.email", one))


def test_rotation_reaches_zero_old_key_rows_while_reads_keep_working(shop):
    """Add k2, make it active, rotate in batches of 7: a row a writer holds is skipped (not
    waited for) and re-encrypted once released, old-key rows count down to 0, a
    concurrent reader decrypts every row on every pass with 0 errors, and k1 can then be
    dropped with every row still readable."""
    database, engine = shop
    rows = [(uuid.uuid4(), f"user{i}@example.org") for i in range(40)]
    with engine.begin() as conn:
        conn.execute(
            insert(gdpr.Customer.__table__),
            [
                {"id": k, "name": m, "email": fieldcrypt.for_row(m, k), "country": "FR"}
                for k, m in rows
            ],
        )
    fieldcrypt.add_key("k2")
    fieldcrypt.set_active("k2")
    stop, reads, errors = threading.Event(), [0], []

    def reader():
        while not stop.is_set():
            try:
                with Session(engine) as session:
                    seen = {c.id: c.email for c in session.scalars(select(gdpr.Customer))}
                assert seen == dict(rows)
                reads[0] += 1
            except Exception as exc:  # counted, then asserted empty
                errors.append(exc)

    first = min(k for k, _ in rows)
    writer = database.connect()  # a writer holds the first row (by id) while rotation starts
    writer.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (first,))
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        batches = fieldcrypt.rotate(
            database.connect, "customers", "email", context="customers.email", batch_size=7
        )
        done = [next(batches)]
        with database.connect() as conn:
            held = conn.execute("SELECT email FROM customers WHERE id = %s", (first,)).fetchone()
        writer.rollback()
        done += list(batches)
    finally:
        writer.close()
        stop.set()
        thread.join()
    assert held[0].startswith("v1:k1:")  # skipped, not waited for
    # keyset paging: the first pass skips the held row; a second pass re-encrypts it
    assert [b.rewritten for b in done] == [7, 7, 7, 7, 7, 4, 1]
    assert [b.remaining for b in done] == [33, 26, 19, 12, 5, 1, 0]
    assert errors == [] and reads[0] >= 1
    with database.connect() as conn:
        assert fieldcrypt.key_counts(conn, "customers", "email") == {"k2": 40}
    fieldcrypt.drop_key("k1")
    with Session(engine) as session:
        assert {c.id: c.email for c in session.scalars(select(gdpr.Customer))} == dict(rows)


def test_rotation_update_finds_rows_through_the_primary_key(shop):
    """The rotation's UPDATE compares the key in its native type, so PostgreSQL can use the
    primary key (with sequential scans discouraged, the plan is an index scan; the first
    design's `id::text = %s` could only scan the table, once per row)."""
    database, _ = shop
    _, _, write, _ = fieldcrypt._rotation_sql("customers", "email", "id")
    with database.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        explain = psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + write
        plan = str(conn.execute(explain, ("v1:k2:x", uuid.uuid4(), "v1:k1:y")).fetchone()[0])
        conn.rollback()
    assert "Index Scan" in plan and "customers_pkey" in plan, plan


def test_core_writes_keep_the_blind_index_and_hits_are_confirmed(shop):
    """sealed_values writes the envelope and its blind index together (for_row alone leaves
    the index stale); a blind index copied into another row makes that row a hit, and
    confirmed() drops it because it does not decrypt to the input."""
    database, engine = shop
    ada, mallory = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        for key, mail in ((ada, "ada@example.org"), (mallory, "mallory@evil.example")):
            conn.execute(
                insert(gdpr.Customer.__table__).values(
                    id=key,
                    name=mail,
                    country="FR",
                    **fieldcrypt.sealed_values("email", mail, key, index="email_bidx"),
                )
            )
        conn.execute(
            update(gdpr.Customer.__table__)
            .where(gdpr.Customer.id == ada)
            .values(**fieldcrypt.sealed_values("email", "ada@new.example", ada, index="email_bidx"))
        )
        stale = conn.execute(
            update(gdpr.Customer.__table__)
            .where(gdpr.Customer.id == mallory)
            .values(email=fieldcrypt.for_row("mallory@new.example", mallory))
        )
        bidx = dict(conn.execute(text("SELECT id, email_bidx FROM customers")).fetchall())
    assert stale.rowcount == 1
    assert bidx[ada] == fieldcrypt.blind_index("ada@new.example")
    assert bidx[mallory] == fieldcrypt.blind_index("mallory@evil.example")  # for_row: stale
    with engine.begin() as conn:  # Mallory copies the index of his own address into Ada's row
        conn.execute(
            text("UPDATE customers SET email_bidx = :b WHERE id = :a"),
            {"b": fieldcrypt.blind_index("mallory@evil.example"), "a": ada},
        )
    with Session(engine) as session:
        hits = session.scalars(
            select(gdpr.Customer).where(
                gdpr.Customer.email_bidx == fieldcrypt.blind_index("Mallory@evil.example")
            )
        ).all()
        matches = fieldcrypt.confirmed(hits, "Mallory@evil.example", lambda c: c.email)
        assert {c.id for c in hits} == {ada, mallory}
        assert matches == []  # Mallory's own row now holds mallory@new.example
        assert [c.id for c in fieldcrypt.confirmed(hits, "ada@new.example", lambda c: c.email)] == [
            ada
        ]
