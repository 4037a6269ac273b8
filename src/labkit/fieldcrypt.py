"""Field encryption: AES-256-GCM in a SQLAlchemy column type, key rotation, a blind index.

**Keys come from the environment.** ``LABKIT_FIELD_KEYS`` holds key ids and keys
(``k1:<base64>,k2:<base64>``, 32 random bytes each), ``LABKIT_FIELD_KEY_ACTIVE`` names the
key that new values are encrypted with, and ``LABKIT_BLIND_INDEX_KEY`` the HMAC key of the
blind index. :func:`add_key` and :func:`set_blind_index_key` put fresh keys there
(``secrets.token_bytes``) without showing them; a :class:`KeyRing` prints key ids only.

**The envelope.** A value is stored as ``v1:<key id>:<base64(nonce | ciphertext | tag)>``:
the key id beside the value (so old and new keys are both readable during a rotation), a
fresh 96-bit nonce per value, and associated data ``"<table.column>|<row key>"`` that binds
the value to its row and column. A ciphertext copied to another row, or altered by one bit,
fails authentication and raises :class:`FieldDecryptionError`; it is never decrypted.

>>> env = {}
>>> add_key("k1", environ=env); set_active("k1", environ=env)
>>> cipher = FieldCipher(KeyRing.from_env(env))
>>> stored = cipher.encrypt("ada@example.com", aad("customers.email", "row-1"))
>>> stored.startswith("v1:k1:"), "ada@example.com" in stored
(True, False)
>>> cipher.decrypt(stored, aad("customers.email", "row-1"))
'ada@example.com'
>>> cipher.decrypt(stored, aad("customers.email", "row-2"))
Traceback (most recent call last):
...
labkit.fieldcrypt.FieldDecryptionError: the value under key 'k1' failed authentication ...

**The column type.** :class:`EncryptedText` encrypts on the way in and decrypts on the way
out. A column type never sees the row it is written to, so a write says which row the value
belongs to: :func:`seal_on_flush` does it for ORM models (and fills the blind index column),
and Core writes pass ``for_row(value, row_key)``, or :func:`sealed_values` when the column
has a blind index (it returns both columns, so the index never goes stale). A bare string is refused rather than
stored unbound. Reads need nothing: the type selects ``column || '|' || row_key`` and
decrypts with the row's own key, so a ciphertext moved to another row cannot authenticate.

**The blind index is a hint, not a proof.** It is not bound to its row (an index copied
into another row finds that row), so a hit is confirmed by decrypting the candidate and
comparing it with the normalized input (:func:`confirmed`). Anyone holding its key can
also confirm guesses (leaked address lists), and it lives in the same environment as the
encryption keys. Changing its key means recomputing every index from decrypted values.

**Rotation.** :func:`rotate` re-encrypts the rows still under an old key in small batches,
one short transaction each (``FOR UPDATE SKIP LOCKED``), while readers keep reading: both
keys stay in the ring until :func:`key_counts` shows 0 rows under the old one. Random
96-bit nonces are safe for about 2**32 encryptions per key (NIST SP 800-38D), one more
reason to rotate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, TypeDecorator, cast, literal

from labkit.errors import LabkitError

__all__ = [
    "ACTIVE_VAR",
    "BLIND_INDEX_VAR",
    "KEYS_VAR",
    "Bound",
    "EncryptedText",
    "FieldCipher",
    "FieldDecryptionError",
    "GuideCipher",
    "KeyRing",
    "RotationBatch",
    "UnknownKeyError",
    "aad",
    "add_key",
    "blind_index",
    "confirmed",
    "current_cipher",
    "drop_key",
    "for_row",
    "key_counts",
    "normalize_email",
    "rotate",
    "seal_on_flush",
    "sealed_values",
    "set_active",
    "set_blind_index_key",
]

KEYS_VAR = "LABKIT_FIELD_KEYS"
ACTIVE_VAR = "LABKIT_FIELD_KEY_ACTIVE"
BLIND_INDEX_VAR = "LABKIT_BLIND_INDEX_KEY"
VERSION = "v1"
# 96 bits: GCM's native nonce size. A nonce used twice under one key leaks the XOR of the two
# plaintexts AND GCM's authentication key (forged values then pass the tag check); random
# nonces keep the chance of a repeat negligible for up to about 2**32 values per key (NIST
# SP 800-38D), so a key that encrypts more must be rotated before.
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class FieldDecryptionError(LabkitError):
    """A stored value failed authentication: altered, moved to another row or column, or
    encrypted under a different key with the same id. It is never decrypted."""


class UnknownKeyError(LabkitError):
    """A stored value names a key id that the key ring does not hold."""


# --------------------------------------------------------------------------- keys


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class KeyRing:
    """Key ids and their 32-byte keys, and the id of the key that encrypts new values.

    Its repr shows key ids only, never key material."""

    keys: dict[str, bytes] = field(repr=False)
    active: str

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if not _KEY_ID.match(kid):
                raise ValueError(
                    f"key id {kid!r} must be 1-32 letters, digits, '_' or '-' (it is stored "
                    "beside every value)"
                )
            if len(key) != 32:
                raise ValueError(
                    f"key {kid!r} is {len(key)} bytes; AES-256 needs 32 random bytes "
                    "(make one with fieldcrypt.add_key)"
                )
        if self.active not in self.keys:
            raise ValueError(
                f"the active key id {self.active!r} is not among the keys "
                f"{sorted(self.keys)}: set {ACTIVE_VAR} to one of them"
            )

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> KeyRing:
        """Read ``LABKIT_FIELD_KEYS`` and ``LABKIT_FIELD_KEY_ACTIVE`` (default: os.environ)."""
        environ = os.environ if environ is None else environ
        raw = environ.get(KEYS_VAR, "")
        if not raw.strip():
            raise ValueError(
                f"no field-encryption keys: set {KEYS_VAR} to 'id:<base64 of 32 bytes>,...' "
                "(fieldcrypt.add_key makes one) and restart"
            )
        keys: dict[str, bytes] = {}
        for item in raw.split(","):
            kid, sep, encoded = item.strip().partition(":")
            if not sep:
                raise ValueError(f"{KEYS_VAR} entries must look like 'id:<base64>'")
            keys[kid] = _unb64(encoded, f"the key {kid!r} in {KEYS_VAR}")
        active = environ.get(ACTIVE_VAR) or list(keys)[-1]
        return cls(keys, active)

    def __repr__(self) -> str:
        return f"KeyRing(ids={self.ids}, active={self.active!r})"


def add_key(kid: str, *, environ: MutableMapping[str, str] | None = None) -> None:
    """Generate a fresh 32-byte key (``secrets.token_bytes``) and add it to the ring in the
    environment under ``kid``. Nothing is returned or printed: the key stays in the
    environment. The active key does not change (see :func:`set_active`)."""
    environ = os.environ if environ is None else environ
    if not _KEY_ID.match(kid):
        raise ValueError(f"key id {kid!r} must be 1-32 letters, digits, '_' or '-'")
    entries = [e for e in environ.get(KEYS_VAR, "").split(",") if e.strip()]
    if any(e.partition(":")[0] == kid for e in entries):
        raise ValueError(f"key id {kid!r} is already in {KEYS_VAR}: pick a new id")
    entries.append(f"{kid}:{_b64(secrets.token_bytes(32))}")
    environ[KEYS_VAR] = ",".join(entries)


def set_active(kid: str, *, environ: MutableMapping[str, str] | None = None) -> None:
    """Make ``kid`` the key that encrypts new values (it must be in the ring)."""
    environ = os.environ if environ is None else environ
    KeyRing(KeyRing.from_env(environ).keys, kid)  # validates
    environ[ACTIVE_VAR] = kid


def drop_key(kid: str, *, environ: MutableMapping[str, str] | None = None) -> None:
    """Remove ``kid`` from the ring (after :func:`key_counts` shows no value uses it)."""
    environ = os.environ if environ is None else environ
    ring = KeyRing.from_env(environ)
    if kid == ring.active:
        raise ValueError(f"{kid!r} is the active key: set_active another key first")
    entries = [e for e in environ[KEYS_VAR].split(",") if e.partition(":")[0] != kid]
    environ[KEYS_VAR] = ",".join(entries)


def set_blind_index_key(*, environ: MutableMapping[str, str] | None = None) -> None:
    """Generate the blind index's own HMAC key (32 random bytes) into the environment."""
    environ = os.environ if environ is None else environ
    environ[BLIND_INDEX_VAR] = _b64(secrets.token_bytes(32))


# --------------------------------------------------------------------------- the cipher


def aad(context: str, row_key: Any) -> bytes:
    """The associated data that binds a value to its column (``context``) and row."""
    return f"{context}|{row_key}".encode()


class FieldCipher:
    """AES-256-GCM with a key ring: ``encrypt`` under the active key, ``decrypt`` under the
    key the envelope names."""

    def __init__(self, ring: KeyRing) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.ring = ring
        self._aead = {kid: AESGCM(key) for kid, key in ring.keys.items()}

    def encrypt(self, plaintext: str, associated: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)  # fresh and random per value (see NONCE_BYTES)
        sealed = self._aead[self.ring.active].encrypt(nonce, plaintext.encode(), associated)
        return f"{VERSION}:{self.ring.active}:{_b64(nonce + sealed)}"

    @staticmethod
    def key_id(envelope: str) -> str:
        """The key id an envelope was encrypted under."""
        version, kid, _ = _split(envelope)
        return kid

    def decrypt(self, envelope: str, associated: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        _, kid, body = _split(envelope)
        if kid not in self._aead:
            raise UnknownKeyError(
                f"the value was encrypted under key {kid!r}, which {KEYS_VAR} no longer "
                f"holds (it holds {self.ring.ids}): put that key back until rotation has "
                "re-encrypted every value (fieldcrypt.key_counts shows 0)"
            )
        raw = _unb64(body, "the stored ciphertext")
        try:
            return (
                self._aead[kid].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated).decode()
            )
        except InvalidTag:
            raise FieldDecryptionError(
                f"the value under key {kid!r} failed authentication for "
                f"{associated.decode(errors='replace').split('|')[0]}: it was altered, copied "
                "from another row or column, or written with another key. It is not "
                "decrypted; restore the row from a backup or re-enter the value."
            ) from None

    def reencrypt(self, envelope: str, associated: bytes) -> str:
        """Decrypt under the envelope's key and encrypt again under the active key."""
        return self.encrypt(self.decrypt(envelope, associated), associated)


def _split(envelope: str) -> tuple[str, str, str]:
    parts = envelope.split(":")
    if len(parts) != 3 or parts[0] != VERSION:
        raise FieldDecryptionError(
            "the stored value is not a fieldcrypt envelope ('v1:<key id>:<base64>'): "
            "plaintext or a foreign format was written to an encrypted column"
        )
    return parts[0], parts[1], parts[2]


_cipher_cache: dict[tuple[str, str], FieldCipher] = {}


def current_cipher() -> FieldCipher:
    """The :class:`FieldCipher` for the keys in ``os.environ`` now (cached per key set, so
    changing the environment — a rotation — takes effect on the next value)."""
    state = (os.environ.get(KEYS_VAR, ""), os.environ.get(ACTIVE_VAR, ""))
    cipher = _cipher_cache.get(state)
    if cipher is None:
        _cipher_cache.clear()
        cipher = _cipher_cache[state] = FieldCipher(KeyRing.from_env())
    return cipher


# --------------------------------------------------------------------------- blind index


def normalize_email(email: str) -> str:
    """The form two spellings of one address share: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", email).strip().casefold()


def blind_index(email: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 (hex) of the normalized e-mail under the blind index's own key
    (default: ``LABKIT_BLIND_INDEX_KEY``). Equal e-mails give equal indexes; nothing else
    about the address can be read from it without the key."""
    if key is None:
        encoded = os.environ.get(BLIND_INDEX_VAR)
        if not encoded:
            raise ValueError(
                f"no blind index key: set {BLIND_INDEX_VAR} (fieldcrypt.set_blind_index_key)"
            )
        key = _unb64(encoded, BLIND_INDEX_VAR)
    return hmac.new(key, normalize_email(email).encode(), hashlib.sha256).hexdigest()


def confirmed(candidates: Iterable[Any], typed: str, value: Callable[[Any], str | None]) -> list:
    """The blind-index hits whose decrypted ``value(candidate)`` really is ``typed``
    (normalized). The index is not bound to its row, so a copied index finds the wrong
    row; a hit that does not decrypt to the input is no match."""
    wanted = normalize_email(typed)
    return [c for c in candidates if (v := value(c)) is not None and normalize_email(v) == wanted]


# --------------------------------------------------------------------------- SQLAlchemy


@dataclass(frozen=True)
class Bound:
    """A plaintext and the key of the row it is written to (see :func:`for_row`)."""

    plaintext: str = field(repr=False)
    row_key: Any


def for_row(plaintext: str | None, row_key: Any) -> Bound | None:
    """Mark ``plaintext`` as the value of the row ``row_key``, for a Core insert or update.
    A column with a blind index needs :func:`sealed_values` instead."""
    return None if plaintext is None else Bound(plaintext, row_key)


def sealed_values(column: str, plaintext: str | None, row_key: Any, *, index: str) -> dict:
    """The values a Core ``insert``/``update`` writes for an encrypted column that has a
    blind index: ``{column: for_row(...), index: blind_index(...)}``, so both change
    together (``.values(**sealed_values("email", new, row_id, index="email_bidx"))``)."""
    return {
        column: for_row(plaintext, row_key),
        index: None if plaintext is None else blind_index(plaintext),
    }


class EncryptedText(TypeDecorator):
    """A text column stored as an AES-256-GCM envelope bound to ``context`` (e.g.
    ``"customers.email"``) and to the row's ``row_key`` column; ``blind_index`` names the
    attribute :func:`seal_on_flush` fills with the value's blind index, if any."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str, *, row_key: str = "id", blind_index: str | None = None):
        super().__init__()
        self.context = context
        self.row_key = row_key
        self.blind_index = blind_index

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, Bound):
            raise ValueError(
                f"{self.context} is encrypted and bound to its row: write "
                "fieldcrypt.for_row(value, row_key), or use an ORM model set up with "
                "fieldcrypt.seal_on_flush"
            )
        return current_cipher().encrypt(value.plaintext, aad(self.context, value.row_key))

    def column_expression(self, column):
        # Select the row's own key beside the envelope (NULL stays NULL).
        row_key = column.table.c[self.row_key]
        return column.concat(literal("|")).concat(cast(row_key, Text))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        envelope, _, row_key = value.rpartition("|")
        return current_cipher().decrypt(envelope, aad(self.context, row_key))


def _encrypted_attributes(mapper) -> list[tuple[str, Any]]:
    return [
        (prop.key, prop.columns[0].type)
        for prop in mapper.column_attrs
        if isinstance(prop.columns[0].type, EncryptedText)
    ]


def seal_on_flush(model: type) -> type:
    """Make ORM flushes of ``model`` (and subclasses) bind each encrypted value to its row,
    and fill the blind index column an :class:`EncryptedText` names. Unchanged values are
    not re-encrypted. Returns ``model`` (usable as a class decorator)."""
    from sqlalchemy import event, inspect
    from sqlalchemy.orm.attributes import set_committed_value

    def row_key_of(mapper, target, name: str):
        value = getattr(target, name)
        if value is None:
            column = mapper.columns[name]
            if column.default is None or not column.default.is_callable:
                raise ValueError(
                    f"{mapper.class_.__name__}.{name} must be known before the flush to bind "
                    "encrypted values to the row: give it a Python default (uuid.uuid4)"
                )
            value = column.default.arg(None)
            setattr(target, name, value)
        return value

    def seal(mapper, connection, target):
        state = inspect(target)
        for key, type_ in _encrypted_attributes(mapper):
            history = state.attrs[key].history
            value = getattr(target, key)
            if not history.added or value is None or isinstance(value, Bound):
                continue
            if type_.blind_index:
                setattr(target, type_.blind_index, blind_index(value))
            setattr(target, key, Bound(value, row_key_of(mapper, target, type_.row_key)))

    def unseal(mapper, connection, target):
        for key, _ in _encrypted_attributes(mapper):
            value = target.__dict__.get(key)
            if isinstance(value, Bound):
                set_committed_value(target, key, value.plaintext)

    event.listen(model, "before_insert", seal, propagate=True)
    event.listen(model, "before_update", seal, propagate=True)
    event.listen(model, "after_insert", unseal, propagate=True)
    event.listen(model, "after_update", unseal, propagate=True)
    return model


# --------------------------------------------------------------------------- rotation


def _table(name: str):
    from psycopg import sql

    return sql.Identifier(*name.split(".")) if "." in name else sql.Identifier(name)


def key_counts(conn, table: str, column: str) -> dict[str, int]:
    """Rows per key id in ``table.column`` (a psycopg connection), read from the envelopes."""
    from psycopg import sql

    query = sql.SQL(
        "SELECT split_part({c}, ':', 2), count(*) FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 1"
    ).format(c=sql.Identifier(column), t=_table(table))
    return {kid: n for kid, n in conn.execute(query).fetchall()}


@dataclass(frozen=True)
class RotationBatch:
    """One batch of a rotation: rows re-encrypted and rows still under other keys after it."""

    batch: int
    rewritten: int
    remaining: int
    seconds: float


def _rotation_sql(table: str, column: str, row_key: str):
    """The statements :func:`rotate` runs: the first batch, the next ones, the UPDATE, and
    the count of rows left (parameters: the active key id first)."""
    from psycopg import sql

    t, c, k = _table(table), sql.Identifier(column), sql.Identifier(row_key)
    old_key = sql.SQL("{c} IS NOT NULL AND split_part({c}, ':', 2) <> %s").format(c=c)
    # Keyset paging on the key's own index: each batch starts after the last key seen, so
    # a batch reads only its own rows (no rescan of the rows already done).
    first = sql.SQL(
        "SELECT {k}, {c} FROM {t} WHERE {w} ORDER BY {k} LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    after = sql.SQL(
        "SELECT {k}, {c} FROM {t} WHERE {k} > %s AND {w} ORDER BY {k} LIMIT %s "
        "FOR UPDATE SKIP LOCKED"
    )
    first, after = (q.format(k=k, c=c, t=t, w=old_key) for q in (first, after))
    # The key in its native type: `id = %s` uses the primary key (`id::text = %s` would not).
    write = sql.SQL("UPDATE {t} SET {c} = %s WHERE {k} = %s AND {c} = %s").format(t=t, c=c, k=k)
    left = sql.SQL("SELECT count(*) FROM {t} WHERE {w}").format(t=t, w=old_key)
    return first, after, write, left


def rotate(
    connect: Callable[[], Any],
    table: str,
    column: str,
    *,
    context: str,
    row_key: str = "id",
    batch_size: int = 100,
    app_user: str | None = "key-rotation",
) -> Iterator[RotationBatch]:
    """Re-encrypt ``table.column`` under the active key, ``batch_size`` rows per short
    transaction, yielding a :class:`RotationBatch` after each (for progress). ``connect``
    returns a new psycopg connection. Rows locked by a writer are skipped and picked up by
    a later batch (the job never waits on the application); it returns when no row is left
    under another key. Batches walk the table in key order (keyset paging: ``key > last``),
    the UPDATE finds each row by its primary key in its native type and compares the old
    envelope too, so it never overwrites a value it did not read; the rows left are counted
    once per pass, not per batch. Each
    batch names ``app_user`` for the audit log (``set_config('app.user_id', ..., true)``)."""
    import time

    cipher = current_cipher()
    active = cipher.ring.active
    first, after, write, left = _rotation_sql(table, column, row_key)
    with connect() as conn:
        number = 0
        remaining = conn.execute(left, (active,)).fetchone()[0]  # one full count per pass
        conn.commit()
        while remaining:
            last = None
            while True:  # one pass over the table, in key order
                started = time.perf_counter()
                with conn.transaction():
                    if app_user:
                        conn.execute("SELECT set_config('app.user_id', %s, true)", (app_user,))
                    if last is None:
                        rows = conn.execute(first, (active, batch_size)).fetchall()
                    else:
                        rows = conn.execute(after, (last, active, batch_size)).fetchall()
                    updates = [
                        (cipher.reencrypt(env, aad(context, key)), key, env) for key, env in rows
                    ]
                    rewritten = 0
                    if updates:
                        with conn.cursor() as cur:
                            cur.executemany(write, updates)
                            rewritten = cur.rowcount
                if not rows:
                    break
                last = rows[-1][0]
                remaining = max(0, remaining - rewritten)
                number += 1
                yield RotationBatch(number, rewritten, remaining, time.perf_counter() - started)
            # Rows a writer held were skipped: count once, and start another pass for them.
            remaining = conn.execute(left, (active,)).fetchone()[0]
            conn.commit()
            if remaining:
                time.sleep(0.05)


# --------------------------------------------------------------------------- the guide's design


class GuideCipher:
    """The seed guide's ``EncryptionService``, in Python, kept only to show its flaws: one
    key for everything (no key id, so a new key cannot read old values), a 16-byte IV
    (GCM's native nonce is 12 bytes), and no associated data (a value copied to another row
    decrypts there as if it belonged). Do not use it."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def encrypt(self, text: str) -> str:
        iv = secrets.token_bytes(16)
        sealed = self._aead.encrypt(iv, text.encode(), None)
        return f"{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"

    def decrypt(self, data: str) -> str:
        iv, tag, body = (bytes.fromhex(p) for p in data.split(":"))
        return self._aead.decrypt(iv, body + tag, None).decode()
