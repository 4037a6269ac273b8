"""03-tenancy: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step12-tenancy.ipynb"
CHECK, PROVISION, DDL, FILTER, STAMP, UNFILTERED, MOVE = (
    "check_tenant_schema", "provision_tenant", "members_ddl", "filter_by_tenant", "stamp_tenant",
    "unfiltered", "move_tenant",
)  # fmt: skip
T1, T2, T3, T4, T5, T6 = (
    "test_check_tenant_schema", "test_provision_tenant", "test_members_ddl", "test_tenant_session",
    "test_unfiltered", "test_move_tenant",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("name-valid", NB, CHECK, "return `name` when it may be used as a schema name", T1),
    Requirement("name-message", NB, CHECK, "raise `ValueError` (with a message that says what is allowed) for anything else", T1),
    Requirement("name-first", NB, CHECK, "a lower-case ASCII letter (`a` to `z`), then", T1),
    Requirement("name-charset", NB, CHECK, "lower-case ASCII letters, digits and underscores, and nothing else", T1),
    Requirement("name-newline", NB, CHECK, "no trailing newline either", T1),
    Requirement("name-63", NB, CHECK, "At most 63 characters", T1),
    Requirement("name-pg", NB, CHECK, "Not a name that starts with `pg_`", T1),
    Requirement("name-reserved", NB, CHECK, "not `public` or `information_schema`", T1),
    Requirement("name-str", NB, CHECK, "Anything that is not a `str` raises `ValueError` too", T1),
    # Task 2
    Requirement("prov-tables", NB, PROVISION, "It gives a new tenant its own schema called `name`, with the tables of `TENANT_METADATA`", T2),
    Requirement("prov-check-first", NB, PROVISION, "Check the name with your `check_tenant_schema` before anything reaches the server", T2),
    Requirement("prov-exists", NB, PROVISION, "If a schema called `name` exists already, raise `ValueError`", T2),
    Requirement("prov-one-tx", NB, PROVISION, "Create the schema and its tables in one transaction", T2),
    Requirement("prov-map", NB, PROVISION, "create the tables with `TENANT_METADATA.create_all(...)` on a connection whose `schema_translate_map` sends `\"tenant\"` to `name`", T2),
    Requirement("prov-engine", NB, PROVISION, "Return an engine for the tenant", T2),
    # Task 3
    Requirement("ddl-fk", NB, DDL, "`tenant_id` an `int` that references `tenants (id)`", T3),
    Requirement("ddl-identity", NB, DDL, "`id` an `int` identity column (`GENERATED ALWAYS AS IDENTITY`): inserts do not give it", T3),
    Requirement("ddl-email", NB, DDL, "`email` `text` that is never NULL", T3),
    Requirement("ddl-pk", NB, DDL, "the primary key is `(tenant_id, id)`, in that order", T3),
    Requirement("ddl-unique", NB, DDL, "an e-mail is unique per tenant", T3),
    Requirement("ddl-unique-order", NB, DDL, "The unique key is `(tenant_id, email)`, in that order", T3),
    # Task 4
    Requirement("filter-select", NB, FILTER, "For SELECT", T4),
    Requirement("filter-writes", NB, FILTER, "and for ORM bulk UPDATE and DELETE", T4),
    Requirement("filter-aliases", NB, FILTER, "aliases included", T4),
    Requirement("filter-owned", NB, FILTER, "to every tenant-owned entity (`TenantOwned`)", T4),
    Requirement("stamp-new", NB, STAMP, "Every new `TenantOwned` object (`session.new`) without a `tenant_id` gets the session's tenant", T4),
    Requirement("stamp-refuse-new", NB, STAMP, "A new or changed object (`session.dirty`) whose `tenant_id` is another tenant's raises `ValueError`", T4),
    Requirement("stamp-refuse-changed", NB, STAMP, "or changed object (`session.dirty`)", T4),
    # Task 5
    Requirement("log-order", NB, UNFILTERED, "return the statements that are not tenant-filtered, in the order given", T5),
    Requirement("log-table", NB, UNFILTERED, "A statement that does not name the table `tickets`", T5),
    Requirement("log-word", NB, UNFILTERED, "as a whole word", T5),
    Requirement("log-case", NB, UNFILTERED, "in any case) is fine", T5),
    Requirement("log-insert-present", NB, UNFILTERED, "An `INSERT` is filtered when its parameters hold at least one named `tenant_id`", T5),
    Requirement("log-insert-many", NB, UNFILTERED, "`tenant_id__0`, `tenant_id__1`", T5),
    Requirement("log-insert-every", NB, UNFILTERED, "and every one of them, in every dict, equals `tenant_id`", T5),
    Requirement("log-predicate", NB, UNFILTERED, "Any other statement is filtered when its SQL holds at least one predicate", T5),
    Requirement("log-spaces", NB, UNFILTERED, "any spaces around `=`", T5),
    Requirement("log-predicate-case", NB, UNFILTERED, "any case), and the parameter", T5),
    Requirement("log-every-predicate", NB, UNFILTERED, "the parameter of every such predicate equals `tenant_id`", T5),
    # Task 6
    Requirement("move-copy", NB, MOVE, "copy the tenant's shared `tickets` rows into `<schema>.tickets`, keeping their `id`, `title` and `status`", T6),
    Requirement("move-verify", NB, MOVE, "check that the number of rows that landed in `<schema>.tickets` equals the number of the tenant's shared rows, and raise `ValueError` when it does not", T6),
    Requirement("move-delete", NB, MOVE, "delete the tenant's rows from the shared table", T6),
    Requirement("move-others", NB, MOVE, "leaving every other tenant's alone", T6),
    Requirement("move-one-tx", NB, MOVE, "do all of it in one transaction", T6),
    Requirement("move-lock", NB, MOVE, "lock the shared table against writers before the copy", T6),
    Requirement("move-lock-waits", NB, MOVE, "another connection's new or changed ticket of the tenant then waits until the move ends", T6),
    Requirement("move-quote", NB, MOVE, "quote the schema with the driver's tools", T6),
    Requirement("move-return", NB, MOVE, "return the number of rows moved", T6),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "A tenant's schema is named after the tenant",
        "PostgreSQL cuts longer names",
    ],
    (NB, "task2"): [
        "Complete `provision_tenant(name)`.",
        "a refused name creates nothing",
        "never reuse a schema",
        "if a table cannot be created, no schema is left behind",
        "Quote the schema with SQLAlchemy's tools",
    ],
    (NB, "task3"): [
        "In row-based tenancy every tenant-owned table carries the tenant.",
        "Write `MEMBERS_DDL`",
    ],
    (NB, "task4"): [
        "`session_for(tenant_id)` opens a `TenantSession`",
        "Complete them so that no code path of the application has to remember the tenant.",
        "`filter_by_tenant(state)` is called for every ORM statement",
        'The tenant is `state.session.info["tenant_id"]`.',
        "`stamp_tenant(session)` is called before every flush.",
    ],
    (NB, "task5"): ["A test records the statements of a workload"],
    (NB, "task6"): [
        "A tenant outgrew the shared tables.",
        "Its schema exists already",
        "Complete `move_tenant(tenant_id, schema)`:",
    ],
}

# ------------------------------------------------------------------ right answers, by parts

RIGHT_CHECK = (
    "def check_tenant_schema(name):\n"
    '    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):\n'
    '        raise ValueError(f"tenant schema name {name!r} is refused: use a-z, then a-z, 0-9 and _ (63 at most)")\n'
    '    if name.startswith("pg_") or name in ("public", "information_schema"):\n'
    '        raise ValueError(f"tenant schema name {name!r} is reserved: choose another")\n'
    "    return name\n"
)


def check_cell(**changes) -> str:
    cell = RIGHT_CHECK
    for old, new in changes.values():
        assert old in cell, old
        cell = cell.replace(old, new)
    return cell


def provision_cell(
    check="    if check_tenant_schema(name) in schemas():\n"
    '        raise ValueError(f"schema {name!r} exists already")\n',
    body="    with engine.begin() as conn:\n"
    "        conn.execute(CreateSchema(name))\n"
    '        TENANT_METADATA.create_all(conn.execution_options(schema_translate_map={"tenant": name}))\n',
    returned='engine.execution_options(schema_translate_map={"tenant": name})',
) -> str:
    return f"def provision_tenant(name):\n{check}{body}    return {returned}\n"


def ddl_cell(
    tenant="tenant_id int REFERENCES tenants (id)",
    ident="id int GENERATED ALWAYS AS IDENTITY",
    email="email text NOT NULL",
    pk="PRIMARY KEY (tenant_id, id)",
    unique="UNIQUE (tenant_id, email)",
) -> str:
    return (
        'MEMBERS_DDL = """\nCREATE TABLE members (\n'
        f'    {tenant},\n    {ident},\n    {email},\n    {pk},\n    {unique}\n)\n"""\n'
    )


def filter_cell(kinds="state.is_select or state.is_update or state.is_delete", options="include_aliases=True") -> str:  # fmt: skip
    return (
        "def filter_by_tenant(state):\n"
        f"    if {kinds}:\n"
        '        tenant_id = state.session.info["tenant_id"]\n'
        "        state.statement = state.statement.options(\n"
        f"            with_loader_criteria(TenantOwned, lambda cls: cls.tenant_id == tenant_id, {options})\n"
        "        )\n"
    )


def stamp_cell(objects="list(session.new) + list(session.dirty)", stamp="if obj.tenant_id is None:",
               refuse='raise ValueError("a row of another tenant")') -> str:  # fmt: skip
    return (
        "def stamp_tenant(session):\n"
        '    tenant_id = session.info["tenant_id"]\n'
        f"    for obj in {objects}:\n"
        "        if isinstance(obj, TenantOwned):\n"
        f"            {stamp}\n"
        "                obj.tenant_id = tenant_id\n"
        "            elif obj.tenant_id != tenant_id:\n"
        f"                {refuse}\n"
    )


def unfiltered_cell(
    table=r'not re.search(r"\btickets\b", statement.sql, re.IGNORECASE)',
    rows="statement.params if isinstance(statement.params, list) else [statement.params]",
    insert_keys=r're.fullmatch(r"tenant_id(__\d+)?", k)',
    predicate=r're.findall(r"\btickets\.tenant_id\s*=\s*%\((\w+)\)s", statement.sql, re.IGNORECASE)',
    insert_values="[v for row in rows for k, v in row.items() if {keys}]",
    select_values="[row.get(name) for row in rows for name in names]",
    verdict="not values or any(value != tenant_id for value in values)",
    append="offending.append(statement)",
) -> str:
    return (
        "def unfiltered(statements, tenant_id):\n"
        "    offending = []\n"
        "    for statement in statements:\n"
        f"        if {table}:\n"
        "            continue\n"
        f"        rows = {rows}\n"
        r'        if re.match(r"\s*INSERT\b", statement.sql, re.IGNORECASE):' + "\n"
        f"            values = {insert_values.format(keys=insert_keys)}\n"
        "        else:\n"
        f"            names = {predicate}\n"
        f"            values = {select_values}\n"
        f"        if {verdict}:\n"
        f"            {append}\n"
        "    return offending\n"
    )


def move_cell(
    target='sql.Identifier(schema, "tickets")',
    connect="demo.connect()",
    lock='conn.execute("LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE")',
    copy='"INSERT INTO {} (id, title, status) SELECT id, title, status FROM tickets WHERE tenant_id = %s"',
    check="if landed != shared:",
    delete='conn.execute("DELETE FROM tickets WHERE tenant_id = %s", (tenant_id,))',
    returned="shared",
) -> str:
    return (
        "def move_tenant(tenant_id, schema):\n"
        f"    target = {target}\n"
        f"    with {connect} as conn:\n"
        f"        {lock}\n"
        f"        conn.execute(sql.SQL({copy}).format(target), (tenant_id,))\n"
        "        landed, shared = conn.execute(\n"
        '            sql.SQL("SELECT (SELECT count(*) FROM {}), "\n'
        '                    "(SELECT count(*) FROM tickets WHERE tenant_id = %s)").format(target),\n'
        "            (tenant_id,),\n"
        "        ).fetchone()\n"
        f"        {check}\n"
        '            raise ValueError(f"{shared} shared rows, {landed} landed: nothing moved")\n'
        f"        {delete}\n"
        f"    return {returned}\n"
    )


def case(name, breaks, answer, source, loses, by="course"):
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": {answer: source},
            "loses": [loses], "source": by}  # fmt: skip


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    "t1_word_class_upper": '\ndef check_tenant_schema(name):\n    if not isinstance(name, str) or not re.fullmatch(r"[a-z]\\w{0,62}", name, re.ASCII):\n        raise ValueError("a schema name is a-z, then a-z 0-9 _, at most 63 characters")\n    if name.startswith("pg_") or name in ("public", "information_schema"):\n        raise ValueError("pg_ names, public and information_schema are reserved: choose another")\n    return name\n',
    "t1_str_coerce": '\ndef check_tenant_schema(name):\n    name = str(name)\n    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):\n        raise ValueError("a schema name is a-z, then a-z 0-9 _, at most 63 characters")\n    if name.startswith("pg_") or name in ("public", "information_schema"):\n        raise ValueError("pg_ names, public and information_schema are reserved: choose another")\n    return name\n',
    "t4f_ticket_only": '\ndef filter_by_tenant(state):\n    if state.is_select or state.is_update or state.is_delete:\n        tid = state.session.info["tenant_id"]\n        state.statement = state.statement.options(\n            with_loader_criteria(Ticket, Ticket.tenant_id == tid, include_aliases=True))\n',
    "t4s_ticket_only": '\ndef stamp_tenant(session):\n    tid = session.info["tenant_id"]\n    for obj in list(session.new) + list(session.dirty):\n        if not isinstance(obj, Ticket):\n            continue\n        if obj in session.new and obj.tenant_id is None:\n            obj.tenant_id = tid\n        elif obj.tenant_id != tid:\n            raise ValueError(f"object of tenant {obj.tenant_id} in tenant {tid}\'s session")\n',
    "t5_text_tenant_id": '\ndef unfiltered(statements, tenant_id):\n    out = []\n    for s in statements:\n        if not re.search(r"\\btickets\\b", s.sql, re.I):\n            continue\n        rows = s.params if isinstance(s.params, list) else [s.params or {}]\n        if re.match(r"\\s*insert\\b", s.sql, re.I):\n            vals = [v for r in rows for k, v in r.items() if re.fullmatch(r"tenant_id(__\\d+)?", k)]\n        else:\n            names = re.findall(r"tenant_id\\s*=\\s*%\\((\\w+)\\)s", s.sql, re.I)\n            vals = [r.get(n) for r in rows for n in names]\n        if not vals or any(v != tenant_id for v in vals):\n            out.append(s)\n    return out\n',
    "t5_insert_substring": '\ndef unfiltered(statements, tenant_id):\n    out = []\n    for s in statements:\n        if not re.search(r"\\btickets\\b", s.sql, re.I):\n            continue\n        rows = s.params if isinstance(s.params, list) else [s.params or {}]\n        if "INSERT" in s.sql.upper():\n            vals = [v for r in rows for k, v in r.items() if re.fullmatch(r"tenant_id(__\\d+)?", k)]\n        else:\n            names = re.findall(r"\\btickets\\.tenant_id\\s*=\\s*%\\((\\w+)\\)s", s.sql, re.I)\n            vals = [r.get(n) for r in rows for n in names]\n        if not vals or any(v != tenant_id for v in vals):\n            out.append(s)\n    return out\n',
    "t6_hand_quoted": '\ndef move_tenant(tenant_id, schema):\n    target = sql.SQL(\'"\' + schema + \'".tickets\')\n    with demo.connect() as conn:\n        conn.execute("SELECT 1 FROM tickets WHERE tenant_id = %s FOR UPDATE", (tenant_id,))\n        n = conn.execute("SELECT count(*) FROM tickets WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]\n        conn.execute(sql.SQL("INSERT INTO {} (id, title, status) SELECT id, title, status FROM tickets WHERE tenant_id = %s").format(target), (tenant_id,))\n        landed = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]\n        if landed != n:\n            raise ValueError(f"{landed} rows landed in {schema}.tickets, expected {n}")\n        conn.execute("DELETE FROM tickets WHERE tenant_id = %s", (tenant_id,))\n    return n\n',
    "t6_no_lock": '\ndef move_tenant(tenant_id, schema):\n    target = sql.Identifier(schema, "tickets")\n    with demo.connect() as conn:\n        n = conn.execute("SELECT count(*) FROM tickets WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]\n        conn.execute(sql.SQL("INSERT INTO {} (id, title, status) SELECT id, title, status FROM tickets WHERE tenant_id = %s").format(target), (tenant_id,))\n        landed = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]\n        if landed != n:\n            raise ValueError(f"{landed} rows landed in {schema}.tickets, expected {n}")\n        conn.execute("DELETE FROM tickets WHERE tenant_id = %s", (tenant_id,))\n    return n\n',
    "t6_delete_by_id": '\ndef move_tenant(tenant_id, schema):\n    target = sql.Identifier(schema, "tickets")\n    with demo.connect() as conn:\n        conn.execute("SELECT 1 FROM tickets WHERE tenant_id = %s FOR UPDATE", (tenant_id,))\n        n = conn.execute("SELECT count(*) FROM tickets WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]\n        conn.execute(sql.SQL("INSERT INTO {} (id, title, status) SELECT id, title, status FROM tickets WHERE tenant_id = %s").format(target), (tenant_id,))\n        landed = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]\n        if landed != n:\n            raise ValueError(f"{landed} rows landed in {schema}.tickets, expected {n}")\n        conn.execute(sql.SQL("DELETE FROM tickets WHERE id IN (SELECT id FROM {})").format(target))\n    return n\n',
}


REGEX = r'r"[a-z][a-z0-9_]{0,62}"'

CASES = [
    # ------------------------------------------------------------------ task 1
    case("returns True instead of the name", "name-valid", CHECK,
         check_cell(ret=("    return name\n", "    return True\n")), T1),
    case("a ValueError without a message", "name-message", CHECK,
         check_cell(a=('raise ValueError(f"tenant schema name {name!r} is refused: use a-z, then a-z, 0-9 and _ (63 at most)")', "raise ValueError()"),
                    b=('raise ValueError(f"tenant schema name {name!r} is reserved: choose another")', "raise ValueError()")), T1),
    case("a digit or an underscore may come first", "name-first", CHECK,
         check_cell(r=(REGEX, r'r"[a-z0-9_]{1,63}"')), T1),
    case("\\w lets other alphabets in", "name-charset", CHECK,
         check_cell(r=(REGEX, r'r"[a-z]\w{0,62}"')), T1),
    case("re.match with $ accepts a trailing newline", "name-newline", CHECK,
         check_cell(r=('re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name)', 're.match(r"[a-z][a-z0-9_]{0,62}$", name)')), T1),
    case("64 characters allowed", "name-63", CHECK, check_cell(r=(REGEX, r'r"[a-z][a-z0-9_]{0,63}"')), T1),
    case("only pg_catalog is reserved, not every pg_ name", "name-pg", CHECK,
         check_cell(r=('name.startswith("pg_")', 'name == "pg_catalog"')), T1),
    case("public and information_schema allowed", "name-reserved", CHECK,
         check_cell(r=(' or name in ("public", "information_schema")', "")), T1),
    case("no type check: None raises TypeError", "name-str", CHECK,
         check_cell(r=("not isinstance(name, str) or ", "")), T1),
    # ------------------------------------------------------------------ task 2
    case("creates the schema and no tables", "prov-tables", PROVISION,
         provision_cell(body="    with engine.begin() as conn:\n        conn.execute(CreateSchema(name))\n"), T2),
    case("checks the name after creating the schema", "prov-check-first", PROVISION,
         provision_cell(
             check="    if name in schemas():\n        raise ValueError('exists')\n",
             body="    with engine.begin() as conn:\n"
                  "        conn.execute(CreateSchema(name))\n"
                  '        TENANT_METADATA.create_all(conn.execution_options(schema_translate_map={"tenant": name}))\n'
                  "    check_tenant_schema(name)\n"), T2),
    case("IF NOT EXISTS: an existing schema is reused", "prov-exists", PROVISION,
         provision_cell(
             check="    check_tenant_schema(name)\n",
             body="    with engine.begin() as conn:\n"
                  "        conn.execute(CreateSchema(name, if_not_exists=True))\n"
                  '        TENANT_METADATA.create_all(conn.execution_options(schema_translate_map={"tenant": name}))\n'), T2),
    case("the schema and the tables in two transactions", "prov-one-tx", PROVISION,
         provision_cell(body="    with engine.begin() as conn:\n        conn.execute(CreateSchema(name))\n"
                             "    with engine.begin() as conn:\n"
                             '        TENANT_METADATA.create_all(conn.execution_options(schema_translate_map={"tenant": name}))\n'), T2),
    case("create_all without the map", "prov-map", PROVISION,
         provision_cell(body="    with engine.begin() as conn:\n"
                             "        conn.execute(CreateSchema(name))\n"
                             "        TENANT_METADATA.create_all(conn)\n"), T2),
    case("returns the shared engine", "prov-engine", PROVISION, provision_cell(returned="engine"), T2),
    # ------------------------------------------------------------------ task 3
    case("tenant_id references nothing", "ddl-fk", DDL, ddl_cell(tenant="tenant_id int"), T3),
    case("an identity the insert may override", "ddl-identity", DDL,
         ddl_cell(ident="id int GENERATED BY DEFAULT AS IDENTITY"), T3),
    case("email may be NULL", "ddl-email", DDL, ddl_cell(email="email text"), T3),
    case("primary key (id, tenant_id)", "ddl-pk", DDL, ddl_cell(pk="PRIMARY KEY (id, tenant_id)"), T3),
    case("e-mails unique across tenants", "ddl-unique", DDL, ddl_cell(unique="UNIQUE (email)"), T3),
    case("unique key (email, tenant_id)", "ddl-unique-order", DDL,
         ddl_cell(unique="UNIQUE (email, tenant_id)"), T3),
    # ------------------------------------------------------------------ task 4
    case("filters bulk writes and not reads", "filter-select", FILTER,
         filter_cell(kinds="state.is_update or state.is_delete"), T4),
    case("the guide's filter: reads only", "filter-writes", FILTER, filter_cell(kinds="state.is_select"), T4),
    case("aliases left out", "filter-aliases", FILTER, filter_cell(options="include_aliases=False"), T4),
    case("no stamping", "stamp-new", STAMP, stamp_cell(stamp="if obj.tenant_id is None and False:"), T4),
    case("the guide's stamping: overwrites another tenant's id", "stamp-refuse-new", STAMP,
         stamp_cell(objects="session.new", stamp="if True:", refuse="pass"), T4),
    case("checks new objects only", "stamp-refuse-changed", STAMP, stamp_cell(objects="session.new"), T4),
    # ------------------------------------------------------------------ task 5
    case("newest statement first", "log-order", UNFILTERED, unfiltered_cell(append="offending.insert(0, statement)"), T5),
    case("every statement needs the predicate", "log-table", UNFILTERED, unfiltered_cell(table="False"), T5),
    case("tickets as a substring", "log-word", UNFILTERED,
         unfiltered_cell(table='"tickets" not in statement.sql.lower()'), T5),
    case("the table name in lower case only", "log-case", UNFILTERED,
         unfiltered_cell(table=r'not re.search(r"\btickets\b", statement.sql)'), T5),
    case("an INSERT without tenant_id passes", "log-insert-present", UNFILTERED,
         unfiltered_cell(insert_values="[v for row in rows for k, v in row.items() if {keys}] or [tenant_id]"), T5),
    case("only the parameter named tenant_id", "log-insert-many", UNFILTERED,
         unfiltered_cell(insert_keys='k == "tenant_id"'), T5),
    case("the first row of an executemany only", "log-insert-every", UNFILTERED,
         unfiltered_cell(insert_values="[v for row in rows[:1] for k, v in row.items() if {keys}]"), T5),
    case("a SELECT without a predicate passes", "log-predicate", UNFILTERED,
         unfiltered_cell(select_values="[row.get(name) for row in rows for name in names] or [tenant_id]"), T5),
    case("exactly one space around =", "log-spaces", UNFILTERED,
         unfiltered_cell(predicate=r're.findall(r"\btickets\.tenant_id = %\((\w+)\)s", statement.sql, re.IGNORECASE)'), T5),
    case("the predicate in lower case only", "log-predicate-case", UNFILTERED,
         unfiltered_cell(predicate=r're.findall(r"\btickets\.tenant_id\s*=\s*%\((\w+)\)s", statement.sql)'), T5),
    case("one predicate of the tenant is enough", "log-every-predicate", UNFILTERED,
         unfiltered_cell(verdict="not values or all(value != tenant_id for value in values)"), T5),
    # ------------------------------------------------------------------ task 6
    case("every moved ticket is open", "move-copy", MOVE,
         move_cell(copy="\"INSERT INTO {} (id, title, status) SELECT id, title, 'open' FROM tickets WHERE tenant_id = %s\""), T6),
    case("no count check", "move-verify", MOVE, move_cell(check="if False:"), T6),
    case("copies and keeps the shared rows", "move-delete", MOVE, move_cell(delete="pass"), T6),
    case("deletes from this tenant on", "move-others", MOVE,
         move_cell(delete='conn.execute("DELETE FROM tickets WHERE tenant_id >= %s", (tenant_id,))'), T6),
    case("autocommit: each statement its own transaction", "move-one-tx", MOVE,
         move_cell(connect="demo.connect(autocommit=True)"), T6),
    case("the schema formatted into the SQL", "move-quote", MOVE,
         move_cell(target='sql.SQL(f"{schema}.tickets")'), T6),
    case("returns nothing", "move-return", MOVE,
         move_cell(returned="None"), T6),
    case("no lock: a ticket written between the copy and the delete is deleted uncopied", "move-lock", MOVE,
         move_cell(lock="pass"), T6),
    case("locks the tenant's existing rows (FOR UPDATE): a new ticket does not wait", "move-lock-waits", MOVE,
         move_cell(lock='conn.execute("SELECT 1 FROM tickets WHERE tenant_id = %s FOR UPDATE", (tenant_id,))'), T6),
    case("locks the tenant's row in tenants: a new ticket waits, a changed one does not", "move-lock-waits", MOVE,
         move_cell(lock='conn.execute("SELECT 1 FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,))'), T6),
    # ------------------------------------------------------------------ outside review
    case("\\w with re.ASCII: upper-case letters after the first", "name-charset", CHECK,
         OUTSIDE["t1_word_class_upper"], T1, by="outside review"),
    case("str(name) first: a str-like object passes", "name-str", CHECK,
         OUTSIDE["t1_str_coerce"], T1, by="outside review"),
    case("the criteria on Ticket only, not every TenantOwned", "filter-owned", FILTER,
         OUTSIDE["t4f_ticket_only"], T4, by="outside review"),
    case("stamps Ticket objects only, not every TenantOwned", "stamp-new", STAMP,
         OUTSIDE["t4s_ticket_only"], T4, by="outside review"),
    case("any table's tenant_id = %(name)s counts as the predicate", "log-predicate", UNFILTERED,
         OUTSIDE["t5_text_tenant_id"], T5, by="outside review"),
    case("an INSERT is any statement with INSERT in it", "log-predicate", UNFILTERED,
         OUTSIDE["t5_insert_substring"], T5, by="outside review"),
    case('the schema quoted by hand: \'"\' + schema + \'".tickets\'', "move-quote", MOVE,
         OUTSIDE["t6_hand_quoted"], T6, by="outside review"),
    case("deletes the shared rows whose id was copied, of any tenant", "move-others", MOVE,
         OUTSIDE["t6_delete_by_id"], T6, by="outside review"),
    case("no lock: another connection's new ticket of the tenant, committed between the copy and the "
         "delete, is deleted without being copied", "move-lock", MOVE,
         OUTSIDE["t6_no_lock"], T6, by="outside review"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "string methods instead of a regular expression; a separate existence query; "
        "new and changed objects checked in two loops; rowcount as the landed count; "
        "row locks (the tenant's row in tenants, its tickets) instead of a table lock",
        "notebook": NB,
        "answers": {
            CHECK: (
                "RESERVED = {'public', 'information_schema'}\n\n\n"
                "def check_tenant_schema(name):\n"
                "    ok = (\n"
                "        type(name) is str and 0 < len(name) <= 63 and name.isascii()\n"
                "        and 'a' <= name[0] <= 'z'\n"
                "        and all(c.isdigit() or c == '_' or 'a' <= c <= 'z' for c in name)\n"
                "        and not name.startswith('pg_') and name not in RESERVED\n"
                "    )\n"
                "    if not ok:\n"
                "        raise ValueError(f'{name!r}: use a-z first, then a-z, 0-9 or _, at most 63, not pg_*/public')\n"
                "    return name\n"
            ),
            PROVISION: (
                "def provision_tenant(name):\n"
                "    check_tenant_schema(name)\n"
                "    with engine.connect() as conn:\n"
                "        taken = conn.execute(text('SELECT count(*) FROM pg_namespace WHERE nspname = :n'), {'n': name}).scalar()\n"
                "    if taken:\n"
                "        raise ValueError(f'schema {name} exists')\n"
                "    tenant = engine.execution_options(schema_translate_map={'tenant': name})\n"
                "    with tenant.begin() as conn:\n"
                "        conn.execute(CreateSchema(name))\n"
                "        TENANT_METADATA.create_all(conn)\n"
                "    return tenant\n"
            ),
            STAMP: (
                "def stamp_tenant(session):\n"
                "    me = session.info['tenant_id']\n"
                "    for obj in session.new:\n"
                "        if isinstance(obj, TenantOwned) and obj.tenant_id is None:\n"
                "            obj.tenant_id = me\n"
                "    for obj in [*session.new, *session.dirty]:\n"
                "        if isinstance(obj, TenantOwned) and obj.tenant_id != me:\n"
                "            raise ValueError(f'tenant {obj.tenant_id} is not {me}')\n"
            ),
            MOVE: (
                "def move_tenant(tenant_id, schema):\n"
                "    with demo.connect() as conn:\n"
                "        with conn.transaction():\n"
                "            conn.execute('SELECT 1 FROM tenants WHERE id = %s FOR UPDATE', (tenant_id,))\n"
                "            shared = len(conn.execute('SELECT 1 FROM tickets WHERE tenant_id = %s FOR UPDATE', (tenant_id,)).fetchall())\n"
                "            landed = conn.execute(sql.SQL('INSERT INTO {} SELECT id, title, status FROM tickets WHERE tenant_id = %s').format(\n"
                "                sql.Identifier(schema, 'tickets')), (tenant_id,)).rowcount\n"
                "            if landed != shared:\n"
                "                raise ValueError('counts differ')\n"
                "            conn.execute('DELETE FROM tickets WHERE tenant_id = %s', (tenant_id,))\n"
                "    return landed\n"
            ),
        },
    },
]
