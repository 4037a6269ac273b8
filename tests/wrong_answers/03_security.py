"""03-security: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell.

Most wrong answers are the solution with one slip, written as (old, new) replacements of the
solution's text: a replacement that no longer matches the solution raises at import, so a
changed solution cannot leave a case silently testing nothing."""

import json
from pathlib import Path

from wrong_answers import Requirement

NB = "step11-security.ipynb"
SOURCE = Path(__file__).resolve().parents[2] / "grading" / "source" / "03-security" / NB
SEARCH, ORDER, RLS, SESSIONS, INDEX, ENCRYPT, DECRYPT = (
    "search_invoices", "order_clause", "enable_tenant_rls", "tenant_sessionmaker",
    "email_index", "encrypt_field", "decrypt_field",
)  # fmt: skip
T1, T2, T3, T4, T5, T6 = (
    "test_search_invoices", "test_order_clause", "test_enable_tenant_rls",
    "test_tenant_sessionmaker", "test_email_index", "test_field_encryption",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("search-tenant", NB, SEARCH, "the ids of tenant `tenant_id`'s invoices", T1),
    Requirement("search-contains", NB, SEARCH, "whose `customer` contains `term`", T1),
    Requirement("search-case", NB, SEARCH, "ignoring case", T1),
    Requirement("search-order", NB, SEARCH, "as a list of ints in ascending order of id", T1),
    Requirement("search-bound", NB, SEARCH, "Pass the tenant and the term as bound parameters", T1),
    Requirement("search-escape-percent", NB, SEARCH, "Escape all three, so that a term matches its own characters", T1),
    Requirement("search-escape-underscore", NB, SEARCH, "Escape all three", T1),
    Requirement("search-escape-backslash", NB, SEARCH, "Escape all three", T1),
    # Task 2
    Requirement("order-composable", NB, ORDER, "return a psycopg `sql.Composable` for `ORDER BY <column> <direction>, id`", T2),
    Requirement("order-allowlist", NB, ORDER, "Only the columns in the allowlist `SORTABLE` (setup cell) are accepted", T2),
    Requirement("order-exact", NB, ORDER, "exactly as written there", T2),
    Requirement("order-raise", NB, ORDER, "any other name raises `ValueError`, before any SQL is built", T2),
    Requirement("order-identifier", NB, ORDER, "Quote the column with `sql.Identifier`", T2),
    Requirement("order-default-asc", NB, ORDER, "Ascending by default", T2),
    Requirement("order-desc", NB, ORDER, "descending when `descending` is true", T2),
    Requirement("order-ties", NB, ORDER, "ties are broken by `id`", T2),
    Requirement("order-ties-asc", NB, ORDER, "ascending in both cases", T2),
    # Task 3
    Requirement("rls-quote", NB, RLS, "quote it with `sql.Identifier`, never paste it", T3),
    Requirement("rls-enable", NB, RLS, "Enable row-level security on the table", T3),
    Requirement("rls-force", NB, RLS, "and force it, so that it binds the table's owner too", T3),
    Requirement("rls-name", NB, RLS, "Create one policy named `tenant_isolation`", T3),
    Requirement("rls-all", NB, RLS, "for all commands", T3),
    Requirement("rls-using", NB, RLS, "whose `USING` and `WITH CHECK` clauses both compare `tenant_id` with the setting `app.tenant_id`", T3),
    Requirement("rls-with-check", NB, RLS, "it can neither see another tenant's rows nor write a row into another tenant", T3),
    Requirement("rls-nullif", NB, RLS, "written `NULLIF(current_setting('app.tenant_id', true), '')::int`", T3),
    Requirement("rls-unset", NB, RLS, "must see no rows and raise no error", T3),
    Requirement("rls-own", NB, RLS, "A tenant reads, inserts and updates its own rows as usual", T3),
    # Task 4
    Requirement("ts-engine", NB, SESSIONS, "return a SQLAlchemy `sessionmaker` bound to `engine`", T4),
    Requirement("ts-info", NB, SESSIONS, 'whose sessions read their tenant from `session.info["tenant_id"]`', T4),
    Requirement("ts-every-transaction", NB, SESSIONS, "At the start of every transaction of such a session", T4),
    Requirement("ts-scoped", NB, SESSIONS, "an `after_begin` event of the sessionmaker you return, not of every Session in the program", T4),
    Requirement("ts-bound", NB, SESSIONS, "the tenant passed as a bound parameter", T4),
    Requirement("ts-local", NB, SESSIONS, "The setting must end with the transaction", T4),
    Requirement("ts-none", NB, SESSIONS, "A session whose `info` holds no tenant sets nothing", T4),
    # Task 5
    Requirement("index-strip", NB, INDEX, "remove the whitespace around it", T5),
    Requirement("index-lower", NB, INDEX, "put it in lower case", T5),
    Requirement("index-hmac", NB, INDEX, "Return the HMAC-SHA256", T5),
    Requirement("index-utf8", NB, INDEX, "of the normalized address's UTF-8 bytes", T5),
    Requirement("index-key", NB, INDEX, "under `key`", T5),
    Requirement("index-hex", NB, INDEX, "as a lower-case hex string (`.hexdigest()`)", T5),
    # Task 6
    Requirement("enc-aad", NB, ENCRYPT, "is authenticated but not encrypted", T6),
    Requirement("enc-utf8", NB, ENCRYPT, "encrypts the UTF-8 bytes of `plaintext`", T6),
    Requirement("enc-key", NB, ENCRYPT, "under `keys[key_id]`", T6),
    Requirement("enc-nonce", NB, ENCRYPT, "with a fresh random 12-byte nonce for every value", T6),
    Requirement("enc-format", NB, ENCRYPT, "returns the nonce followed by the ciphertext", T6),
    Requirement("enc-key-length", NB, ENCRYPT, "raises `ValueError` for a key of any other length", T6),
    Requirement("dec-str", NB, DECRYPT, "`decrypt_field` returns the plaintext (a `str`)", T6),
    Requirement("dec-key-id", NB, DECRYPT, "decrypted under another key id", T6),
    Requirement("dec-raise", NB, DECRYPT, "must raise an exception, never return text", T6),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "`conn` is a psycopg connection as the application role",
        "Inside a LIKE pattern",
    ],
    (NB, "task2"): [
        "Identifiers cannot be bound parameters.",
    ],
    (NB, "task3"): [
        "`conn` is an autocommit connection as the superuser",
        "The name may hold any character",
    ],
    (NB, "task4"): [
        "The `projects` table (setup cell) is protected by a policy like the one of Task 3.",
    ],
    (NB, "task5"): [
        "An encrypted e-mail cannot be searched",
        "A blind index is a keyed hash",
    ],
    (NB, "task6"): [
        "Complete `encrypt_field(keys, key_id, plaintext, associated_data)`",
        "`keys` maps key ids to keys (bytes)",
    ],
}


def _solutions() -> dict[str, str]:
    """The solution of each answer cell, without the solution markers."""
    cells = json.loads(SOURCE.read_text())["cells"]
    found = {}
    for cell in cells:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            lines = "".join(cell["source"]).splitlines()
            found[meta["grade_id"]] = "\n".join(
                line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
            ) + "\n"  # fmt: skip
    return found


SOLUTIONS = _solutions()


def slip(answer: str, *replacements: tuple[str, str]) -> str:
    """The solution of ``answer`` with each (old, new) replaced once; old must be there."""
    text = SOLUTIONS[answer]
    for old, new in replacements:
        if old not in text:
            raise ValueError(f"{answer}: {old!r} is not in the solution any more")
        text = text.replace(old, new, 1)
    return text


def case(name, breaks, answer, source, loses, by="course"):
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": {answer: source},
            "loses": [loses], "source": by}  # fmt: skip


def body(answer: str, signature: str, code: str) -> str:
    """An answer written out in full: ``def <signature>:`` and its indented ``code``."""
    return f"def {signature}:\n" + "".join(
        f"    {line}\n" if line else "\n" for line in code.splitlines()
    )


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    "strip_check_quote_raw": """
def order_clause(column, descending=False):
    if column.strip() not in SORTABLE:
        raise ValueError(f"cannot sort by {column!r}: choose one of {SORTABLE}")
    direction = sql.SQL("DESC" if descending else "ASC")
    return sql.SQL("ORDER BY {} {}, id").format(sql.Identifier(column), direction)
""",
    "descending_is_True": """
def order_clause(column, descending=False):
    if column not in SORTABLE:
        raise ValueError(f"cannot sort by {column!r}: choose one of {SORTABLE}")
    direction = sql.SQL("DESC" if descending is True else "ASC")
    return sql.SQL("ORDER BY {} {}, id").format(sql.Identifier(column), direction)
""",
    "global_Session_listener": """
from sqlalchemy.orm import Session as _Session

@event.listens_for(_Session, "after_begin")
def _set_tenant_everywhere(session, transaction, connection):
    tenant = session.info.get("tenant_id")
    if tenant is not None:
        connection.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant)})


def tenant_sessionmaker(engine):
    return sessionmaker(bind=engine)
""",
    "counter_nonce": """
import itertools as _it
_COUNTER = _it.count(1)

def encrypt_field(keys, key_id, plaintext, associated_data):
    key = keys[key_id]
    if len(key) != 32:
        raise ValueError("AES-256 needs a 32-byte key")
    nonce = next(_COUNTER).to_bytes(12, "big")
    return nonce + AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), associated_data)
""",
    "check_only_short_keys": """
def encrypt_field(keys, key_id, plaintext, associated_data):
    key = keys[key_id]
    if len(key) < 32:
        raise ValueError("AES-256 needs a 32-byte key")
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key[:32]).encrypt(nonce, plaintext.encode("utf-8"), associated_data)
""",
    "casefold": """
def email_index(key, email):
    return hmac.new(key, email.strip().casefold().encode("utf-8"), hashlib.sha256).hexdigest()
""",
    "ad_ignored_on_decrypt": """
def decrypt_field(keys, key_id, blob, associated_data):
    try:
        return AESGCM(keys[key_id]).decrypt(blob[:12], blob[12:], associated_data).decode("utf-8")
    except InvalidTag:
        return AESGCM(keys[key_id]).decrypt(blob[:12], blob[12:], None).decode("utf-8")
""",
}

SEARCH_SQL = '"SELECT id FROM invoices WHERE tenant_id = %s AND customer ILIKE %s ORDER BY id"'
RLS_MATCH = "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::int"

CASES = [
    # ------------------------------------------------------------------ task 1
    case("searches every tenant", "search-tenant", SEARCH,
         slip(SEARCH, ("WHERE tenant_id = %s AND customer", "WHERE customer"),
              ("(tenant_id, f\"%{escaped}%\")", "(f\"%{escaped}%\",)")), T1),
    case("customers that start with the term", "search-contains", SEARCH,
         slip(SEARCH, ('f"%{escaped}%"', 'f"{escaped}%"')), T1),
    case("LIKE: case matters", "search-case", SEARCH, slip(SEARCH, ("ILIKE", "LIKE")), T1),
    case("no ORDER BY: ids in the table's order", "search-order", SEARCH,
         slip(SEARCH, (" ORDER BY id", "")), T1),
    case("the term formatted into the SQL, its wildcards escaped", "search-bound", SEARCH,
         slip(SEARCH, ('"SELECT id FROM invoices WHERE tenant_id = %s AND customer ILIKE %s ORDER BY id",\n'
                       '        (tenant_id, f"%{escaped}%"),',
                       "f\"SELECT id FROM invoices WHERE tenant_id = {tenant_id} AND customer ILIKE '%{escaped}%' ORDER BY id\",")), T1),
    case("% left unescaped", "search-escape-percent", SEARCH,
         slip(SEARCH, ('.replace("%", "\\\\%")', "")), T1),
    case("escapes % and _ before the backslash, so their escapes are escaped again",
         "search-escape-percent", SEARCH,
         body(SEARCH, "search_invoices(conn, tenant_id, term)",
              'escaped = term.replace("%", "\\\\%").replace("_", "\\\\_").replace("\\\\", "\\\\\\\\")\n'
              "rows = conn.execute(\n"
              f"    {SEARCH_SQL},\n"
              '    (tenant_id, f"%{escaped}%"),\n'
              ").fetchall()\n"
              "return [row[0] for row in rows]"), T1),
    case("_ left unescaped", "search-escape-underscore", SEARCH,
         slip(SEARCH, ('.replace("_", "\\\\_")', "")), T1),
    case("the backslash left unescaped", "search-escape-backslash", SEARCH,
         slip(SEARCH, ('.replace("\\\\", "\\\\\\\\")', "")), T1),
    case("no escaping at all: the term is a pattern", "search-escape-underscore", SEARCH,
         slip(SEARCH, ('term.replace("\\\\", "\\\\\\\\").replace("%", "\\\\%").replace("_", "\\\\_")', "term")), T1),
    # ------------------------------------------------------------------ task 2
    case("returns the clause as a str", "order-composable", ORDER,
         body(ORDER, "order_clause(column, descending=False)",
              "if column not in SORTABLE:\n    raise ValueError(column)\n"
              'return f\'ORDER BY "{column}" {"DESC" if descending else "ASC"}, id\''), T2),
    case("any identifier-like name is accepted", "order-allowlist", ORDER,
         slip(ORDER, ("if column not in SORTABLE:", "if not column.isidentifier():")), T2),
    case("names are compared in lower case", "order-exact", ORDER,
         slip(ORDER, ("if column not in SORTABLE:", "if column.lower() not in SORTABLE:")), T2),
    case("an unknown column falls back to id", "order-raise", ORDER,
         slip(ORDER, ("raise ValueError(f\"cannot sort by {column!r}: choose one of {SORTABLE}\")",
                      'column = "id"')), T2),
    case("the column pasted with sql.SQL", "order-identifier", ORDER,
         slip(ORDER, ("sql.Identifier(column)", "sql.SQL(column)")), T2),
    case("descending by default", "order-default-asc", ORDER,
         slip(ORDER, ("def order_clause(column, descending=False):", "def order_clause(column, descending=True):")), T2),
    case("always ascending", "order-desc", ORDER,
         slip(ORDER, ('sql.SQL("DESC" if descending else "ASC")', 'sql.SQL("ASC")')), T2),
    case("no tie-breaker", "order-ties", ORDER, slip(ORDER, ('"ORDER BY {} {}, id"', '"ORDER BY {} {}"')), T2),
    case("the tie-breaker follows the direction", "order-ties-asc", ORDER,
         slip(ORDER, ('"ORDER BY {} {}, id"', '"ORDER BY {0} {1}, id {1}"')), T2),
    # ------------------------------------------------------------------ task 3
    case("the table name pasted between double quotes", "rls-quote", RLS,
         slip(RLS, ("ALTER TABLE {table}", 'ALTER TABLE \\"{table}\\"'), ("ON {table}", 'ON \\"{table}\\"'),
              (".format(table=sql.Identifier(table))", ".format(table=sql.SQL(table))")), T3),
    case("forces row-level security without enabling it", "rls-enable", RLS,
         slip(RLS, ("ENABLE ROW LEVEL SECURITY, FORCE", "FORCE")), T3),
    case("enabled, not forced: the owner bypasses", "rls-force", RLS,
         slip(RLS, (", FORCE ROW LEVEL SECURITY", "")), T3),
    case("a policy of another name", "rls-name", RLS, slip(RLS, ("tenant_isolation", "tenant_policy")), T3),
    case("a policy for SELECT only", "rls-all", RLS,
         slip(RLS, ("ON {table} ", "ON {table} FOR SELECT "),
              (f'"WITH CHECK ({RLS_MATCH})"', '""')), T3),
    case("USING (true): every row visible", "rls-using", RLS,
         slip(RLS, (f'"USING ({RLS_MATCH}) "', '"USING (true) "')), T3),
    case("WITH CHECK (true): writes anywhere", "rls-with-check", RLS,
         slip(RLS, (f'"WITH CHECK ({RLS_MATCH})"', '"WITH CHECK (true)"')), T3),
    case("no NULLIF: '' cannot be cast to int", "rls-nullif", RLS,
         slip(RLS, (RLS_MATCH, "tenant_id = current_setting('app.tenant_id', true)::int"),
              (RLS_MATCH, "tenant_id = current_setting('app.tenant_id', true)::int")), T3),
    case("current_setting without missing_ok: an unset tenant raises", "rls-unset", RLS,
         slip(RLS, ("current_setting('app.tenant_id', true)", "current_setting('app.tenant_id')"),
              ("current_setting('app.tenant_id', true)", "current_setting('app.tenant_id')")), T3),
    case("a restrictive policy alone: nothing is permitted", "rls-own", RLS,
         slip(RLS, ("ON {table} ", "ON {table} AS RESTRICTIVE ")), T3),
    # ------------------------------------------------------------------ task 4
    case("a sessionmaker on the setup's engine, whatever engine it is given", "ts-engine", SESSIONS,
         slip(SESSIONS, ("sessionmaker(engine)", "sessionmaker(APP_ENGINE)")), T4),
    case("reads info['tenant']", "ts-info", SESSIONS,
         slip(SESSIONS, ('session.info.get("tenant_id")', 'session.info.get("tenant")')), T4),
    case("sets the tenant once, when the session is made", "ts-every-transaction", SESSIONS,
         body(SESSIONS, "tenant_sessionmaker(engine)",
              "factory = sessionmaker(engine)\n\n"
              "def make(**kwargs):\n"
              "    session = factory(**kwargs)\n"
              '    tenant = session.info.get("tenant_id")\n'
              "    if tenant is not None:\n"
              "        session.execute(\n"
              "            text(\"SELECT set_config('app.tenant_id', :tenant, true)\"), {\"tenant\": str(tenant)}\n"
              "        )\n"
              "    return session\n\n"
              "return make"), T4),
    case("the tenant formatted into the SQL", "ts-bound", SESSIONS,
         slip(SESSIONS, ("text(\"SELECT set_config('app.tenant_id', :tenant, true)\"), {\"tenant\": str(tenant)}",
                         "text(f\"SELECT set_config('app.tenant_id', '{tenant}', true)\")")), T4),
    case("set_config(..., false): the tenant outlives the transaction", "ts-local", SESSIONS,
         slip(SESSIONS, (":tenant, true)", ":tenant, false)")), T4),
    case("no tenant: sets 'None'", "ts-none", SESSIONS,
         slip(SESSIONS, ("        if tenant is not None:\n            connection", "        if True:\n            connection")), T4),
    # ------------------------------------------------------------------ task 5
    case("spaces kept", "index-strip", INDEX, slip(INDEX, ("email.strip().lower()", "email.lower()")), T5),
    case("case kept", "index-lower", INDEX, slip(INDEX, ("email.strip().lower()", "email.strip()")), T5),
    case("SHA-256 of the key and the address: keyed, but not HMAC", "index-hmac", INDEX,
         slip(INDEX, ('hmac.new(key, normalized.encode("utf-8"), hashlib.sha256).hexdigest()',
                      'hashlib.sha256(key + normalized.encode("utf-8")).hexdigest()')), T5),
    case("Latin-1 bytes", "index-utf8", INDEX, slip(INDEX, ('encode("utf-8")', 'encode("latin-1")')), T5),
    case("a fixed key written in the code", "index-key", INDEX,
         slip(INDEX, ("hmac.new(key,", 'hmac.new(b"blind-index-key",')), T5),
    case("the raw digest (bytes)", "index-hex", INDEX, slip(INDEX, (".hexdigest()", ".digest()")), T5),
    case("hex in upper case", "index-hex", INDEX, slip(INDEX, (".hexdigest()", ".hexdigest().upper()")), T5),
    # ------------------------------------------------------------------ task 6
    case("no associated data", "enc-aad", ENCRYPT,
         slip(ENCRYPT, ('plaintext.encode("utf-8"), associated_data)', 'plaintext.encode("utf-8"), None)')), T6),
    case("Latin-1 bytes", "enc-utf8", ENCRYPT, slip(ENCRYPT, ('encode("utf-8")', 'encode("latin-1")')), T6),
    case("always the first key", "enc-key", ENCRYPT,
         slip(ENCRYPT, ("keys[key_id]", "next(iter(keys.values()))")), T6),
    case("a fixed nonce", "enc-nonce", ENCRYPT,
         slip(ENCRYPT, ("secrets.token_bytes(12)", 'b"\\x00" * 12')), T6),
    case("a 16-byte random nonce", "enc-nonce", ENCRYPT,
         slip(ENCRYPT, ("secrets.token_bytes(12)", "secrets.token_bytes(16)")), T6),
    case("the nonce after the ciphertext", "enc-format", ENCRYPT,
         slip(ENCRYPT, ("return nonce + AESGCM(key).encrypt(nonce, plaintext.encode(\"utf-8\"), associated_data)",
                        "return AESGCM(key).encrypt(nonce, plaintext.encode(\"utf-8\"), associated_data) + nonce")), T6),
    case("any key length AESGCM accepts", "enc-key-length", ENCRYPT,
         slip(ENCRYPT, ("    if len(key) != 32:\n", "    if len(key) not in (16, 24, 32):\n")), T6),
    case("returns bytes", "dec-str", DECRYPT, slip(DECRYPT, ('return plain.decode("utf-8")', "return plain")), T6),
    case("tries every key until one works", "dec-key-id", DECRYPT,
         body(DECRYPT, "decrypt_field(keys, key_id, blob, associated_data)",
              "for key in [keys[key_id], *keys.values()]:\n"
              "    try:\n"
              '        return AESGCM(key).decrypt(blob[:12], blob[12:], associated_data).decode("utf-8")\n'
              "    except InvalidTag:\n"
              "        continue\n"
              'raise InvalidTag("no key decrypts this value")'), T6),
    # ------------------------------------------------------------------ outside review
    case("the allowlist checked on the stripped name, the name quoted as given", "order-exact", ORDER,
         OUTSIDE["strip_check_quote_raw"], T2, by="outside review"),
    case("descending only when `descending is True`", "order-desc", ORDER,
         OUTSIDE["descending_is_True"], T2, by="outside review"),
    case("the after_begin listener on every Session of the program", "ts-scoped", SESSIONS,
         OUTSIDE["global_Session_listener"], T4, by="outside review"),
    case("casefold() instead of lower(): 'Straße' becomes 'strasse'", "index-lower", INDEX,
         OUTSIDE["casefold"], T5, by="outside review"),
    case("a counter nonce: restarts at 1 in every process", "enc-nonce", ENCRYPT,
         OUTSIDE["counter_nonce"], T6, by="outside review"),
    case("refuses short keys only, and cuts a longer key to 32 bytes", "enc-key-length", ENCRYPT,
         OUTSIDE["check_only_short_keys"], T6, by="outside review"),
    case("falls back to no associated data when the tag does not match", "dec-raise", DECRYPT,
         OUTSIDE["ad_ignored_on_decrypt"], T6, by="outside review"),
    # ------------------------------------------------------------------ course
    case("a value that fails to decrypt reads as empty", "dec-raise", DECRYPT,
         body(DECRYPT, "decrypt_field(keys, key_id, blob, associated_data)",
              "try:\n"
              "    plain = AESGCM(keys[key_id]).decrypt(blob[:12], blob[12:], associated_data)\n"
              "except InvalidTag:\n"
              '    return ""\n'
              'return plain.decode("utf-8")'), T6),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "lower() on both sides, '!' as the escape character, sql.Identifier from a dict",
        "notebook": NB,
        "answers": {
            SEARCH: body(SEARCH, "search_invoices(conn, tenant_id, term)",
                         "pattern = '%' + ''.join('!' + c if c in '!%_' else c for c in term.lower()) + '%'\n"
                         "cur = conn.execute(\n"
                         "    \"SELECT id FROM invoices WHERE tenant_id = %(t)s \"\n"
                         "    \"AND lower(customer) LIKE %(p)s ESCAPE '!' ORDER BY 1\",\n"
                         "    {'t': tenant_id, 'p': pattern},\n"
                         ")\n"
                         "return [i for (i,) in cur]"),
            ORDER: body(ORDER, "order_clause(column, descending=False)",
                        "allowed = {name: sql.Identifier(name) for name in SORTABLE}\n"
                        "if column not in allowed:\n"
                        "    raise ValueError('unknown column')\n"
                        "if descending:\n"
                        "    return sql.SQL('ORDER BY {} DESC, {} ASC').format(allowed[column], sql.Identifier('id'))\n"
                        "return sql.SQL('ORDER BY {}, {}').format(allowed[column], sql.Identifier('id'))"),
            RLS: body(RLS, "enable_tenant_rls(conn, table)",
                      "t = sql.Identifier(table)\n"
                      f'm = sql.SQL("{RLS_MATCH}")\n'
                      'conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t))\n'
                      'conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t))\n'
                      'conn.execute(sql.SQL("CREATE POLICY tenant_isolation ON {} AS PERMISSIVE FOR ALL TO PUBLIC '
                      'USING ({}) WITH CHECK ({})").format(t, m, m))'),
            SESSIONS: body(SESSIONS, "tenant_sessionmaker(engine)",
                           "from sqlalchemy.orm import Session\n\n"
                           "factory = sessionmaker(bind=engine, class_=Session)\n\n"
                           "def set_tenant(session, transaction, connection):\n"
                           "    if 'tenant_id' in session.info:\n"
                           "        connection.exec_driver_sql(\n"
                           "            \"SELECT set_config('app.tenant_id', %s, true)\", (str(session.info['tenant_id']),)\n"
                           "        )\n\n"
                           "event.listen(factory, 'after_begin', set_tenant)\n"
                           "return factory"),
            INDEX: body(INDEX, "email_index(key, email)",
                        "return hmac.digest(key, email.strip().lower().encode(), 'sha256').hex()"),
            ENCRYPT: body(ENCRYPT, "encrypt_field(keys, key_id, plaintext, associated_data)",
                          "import os\n\n"
                          "key = keys[key_id]\n"
                          "if len(key) * 8 != 256:\n"
                          "    raise ValueError('AES-256 needs 32 bytes')\n"
                          "nonce = os.urandom(12)\n"
                          "return b''.join([nonce, AESGCM(key).encrypt(nonce, plaintext.encode(), associated_data)])"),
            DECRYPT: body(DECRYPT, "decrypt_field(keys, key_id, blob, associated_data)",
                          "nonce, sealed = blob[:12], blob[12:]\n"
                          "return str(AESGCM(keys[key_id]).decrypt(nonce, sealed, associated_data), 'utf-8')"),
        },
    },
]  # fmt: skip
