"""04-realtime: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step14-realtime.ipynb"
WATCH, RESUME, HEARTBEAT, ONLINE, SAVE, SYNC, COMPACT = (
    "watch", "resume", "heartbeat", "online", "save_edit", "sync", "compact",
)  # fmt: skip
T1, T2, T3, T4, T5, T6 = (
    "test_watch", "test_resume", "test_presence", "test_save_edit", "test_sync", "test_compact",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("feed-row", NB, WATCH, "inserts one row into `feed` per changed row", T1),
    Requirement("feed-table", NB, WATCH, "`table_name` is the changed table's name (`TG_TABLE_NAME`)", T1),
    Requirement("feed-op", NB, WATCH, "`op` is `INSERT`, `UPDATE` or `DELETE` (`TG_OP`)", T1),
    Requirement("feed-row-data", NB, WATCH, "`row_data` is the row as JSON (`to_jsonb`): the new row", T1),
    Requirement("feed-delete-old", NB, WATCH, "or for a `DELETE` the old one", T1),
    Requirement("feed-channel", NB, WATCH, "notify `FEED_CHANNEL`", T1),
    Requirement("feed-payload", NB, WATCH, "with the new `feed` row's id as the payload", T1),
    Requirement("feed-events", NB, WATCH, "Create the trigger `AFTER INSERT OR UPDATE OR DELETE` on `table`", T1),
    Requirement("feed-each-row", NB, WATCH, "`FOR EACH ROW`", T1),
    Requirement("feed-quote", NB, WATCH, "with the table quoted by `sql.Identifier`", T1),
    Requirement("feed-second", NB, WATCH, "Watching a second table keeps the first one's changes recorded under the first one's name", T1),
    # Task 2
    Requirement("resume-pages", NB, RESUME, "page after page, until you have every committed change after `after`, however many there are", T2),
    Requirement("resume-page-size", NB, RESUME, "read the table with `read_feed(after, PAGE)`", T2),
    Requirement("resume-once", NB, RESUME, "return every change with an id above `after` exactly once", T2),
    Requirement("resume-order", NB, RESUME, "in id order", T2),
    Requirement("resume-handled", NB, RESUME, "leave out the changes of `live` with an id at or below `after`", T2),
    # Task 3
    Requirement("presence-key", NB, HEARTBEAT, '`heartbeat` sets the member\'s key `ns.key("presence", room, member)`', T3),
    Requirement("presence-ms", NB, HEARTBEAT, "with a time to live of `ttl_ms` milliseconds", T3),
    Requirement("presence-index", NB, HEARTBEAT, 'adds `member` to the room\'s index, the set `ns.key("presence", room)`', T3),
    Requirement("online-alive", NB, ONLINE, "returns the members of the room's index whose key still exists", T3),
    Requirement("online-sorted", NB, ONLINE, "whose key still exists, sorted", T3),
    Requirement("online-prune", NB, ONLINE, "a member whose key has expired is removed from the index by `online` (`SREM`)", T3),
    Requirement("online-rooms", NB, ONLINE, "every room is separate: a member online in one room is not online in another", T3),
    # Task 4
    Requirement("occ-bump", NB, SAVE, "version = version + 1", T4),
    Requirement("occ-check", NB, SAVE, "AND version = <the version read>", T4),
    Requirement("occ-id", NB, SAVE, "WHERE id = ...", T4),
    Requirement("occ-reread", NB, SAVE, "read the row again and apply `edit` to the newer body", T4),
    Requirement("occ-bounded", NB, SAVE, "retry at most `MAX_RETRIES` times", T4),
    Requirement("occ-raise", NB, SAVE, "when the last retry conflicts too, raise `ConflictError`", T4),
    Requirement("occ-return", NB, SAVE, "return the number of conflicts met (0 when the first write went through)", T4),
    # Task 5
    Requirement("sync-both", NB, SYNC, "so that both end with the same text, holding both sides' edits", T5),
    Requirement("sync-missing", NB, SYNC, "send only what is missing, computed from the receiver's state vector", T5),
    Requirement("sync-bytes", NB, SYNC, "return the number of bytes sent, both ways together", T5),
    # Task 6
    Requirement("compact-snapshot", NB, COMPACT, "read the document's snapshot `state` (if it has one)", T6),
    Requirement("compact-upsert", NB, COMPACT, "store the result as the document's snapshot, inserting or replacing its row", T6),
    Requirement("compact-exact", NB, COMPACT, "delete exactly the update rows it folded, by their ids", T6),
    Requirement("compact-order", NB, COMPACT, "write the snapshot before deleting", T6),
    Requirement("compact-others", NB, COMPACT, "leave other documents' updates alone", T6),
    Requirement("compact-return", NB, COMPACT, "return the number of updates folded", T6),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): ["Complete `watch(table)`", "A trigger runs inside the writer's transaction"],
    (NB, "task2"): [
        "A client of the feed was disconnected",
        "On reconnecting it joined the live stream first",
    ],
    (NB, "task3"): [
        "Complete `heartbeat(room, member, ttl_ms)` and `online(room)`",
        "A member that closes its laptop sends no more heartbeats",
    ],
    (NB, "task4"): ["Rows of `docs` carry a `version`.", "Complete `save_edit(doc_id, edit)`"],
    (NB, "task5"): ["Two replicas of one document"],
    (NB, "task6"): ["A document is stored as a snapshot", "Complete `compact(doc)`"],
}

# ------------------------------------------------------------------ right answers, by parts

FUNCTION = (
    "CREATE OR REPLACE FUNCTION record_change() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "DECLARE change_id bigint;\n"
    "BEGIN\n"
    "    INSERT INTO feed (table_name, op, row_data)\n"
    "    VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END))\n"
    "    RETURNING id INTO change_id;\n"
    "    PERFORM pg_notify('feed_changes', change_id::text);\n"
    "    RETURN NULL;\n"
    "END $$"
)
TRIGGER = "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION record_change()"


def watch_cell(function=FUNCTION, trigger=TRIGGER, table="sql.Identifier(table)", **changes) -> str:
    for old, new in changes.values():
        assert old in function, old
        function = function.replace(old, new)
    return (
        "def watch(table):\n"
        f"    conn.execute({function!r})\n"
        f"    conn.execute(sql.SQL({trigger!r}).format(sql.Identifier(table + '_feed'), {table}))\n"
    )


def resume_cell(
    read="read_feed(last, PAGE)",
    done="len(page) < PAGE",
    live="(change.id, change) for change in live if change.id > after",
    returned="[found[key] for key in sorted(found)]",
) -> str:
    return (
        "def resume(after, live):\n"
        "    found, last = {}, after\n"
        "    while True:\n"
        f"        page = {read}\n"
        "        found.update((change.id, change) for change in page)\n"
        f"        if {done}:\n"
        "            break\n"
        "        last = page[-1].id\n"
        f"    found.update({live})\n"
        f"    return {returned}\n"
    )


def heartbeat_cell(key='ns.key("presence", room, member)', ttl="px=ttl_ms",
                   index='r.sadd(ns.key("presence", room), member)') -> str:  # fmt: skip
    return f"def heartbeat(room, member, ttl_ms):\n    r.set({key}, 1, {ttl})\n    {index}\n"


def online_cell(alive='r.exists(ns.key("presence", room, member))', prune="r.srem(index, member)",
                returned="sorted(members)") -> str:  # fmt: skip
    return (
        "def online(room):\n"
        '    index, members = ns.key("presence", room), []\n'
        "    for member in r.smembers(index):\n"
        f"        if {alive}:\n"
        "            members.append(member)\n"
        "        else:\n"
        f"            {prune}\n"
        f"    return {returned}\n"
    )


def save_cell(
    update="UPDATE docs SET body = %s, version = version + 1 WHERE id = %s AND version = %s",
    params="(edit(body), doc_id, version)",
    reread='body, version = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()',
    bound="conflicts > MAX_RETRIES",
    give_up='raise ConflictError("the row kept changing")',
    returned="conflicts",
) -> str:
    return (
        "def save_edit(doc_id, edit):\n"
        "    conflicts = 0\n"
        '    body, version = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()\n'
        "    while True:\n"
        f"        saved = conn.execute({update!r}, {params}).rowcount\n"
        "        if saved:\n"
        f"            return {returned}\n"
        "        conflicts += 1\n"
        f"        if {bound}:\n"
        f"            {give_up}\n"
        f"        {reread}\n"
    )


def sync_cell(to_a="b.get_update(a.get_state())", to_b="a.get_update(b.get_state())",
              apply_b="b.apply_update(to_b)", returned="len(to_a) + len(to_b)") -> str:  # fmt: skip
    return (
        "def sync(a, b):\n"
        f"    to_a = {to_a}\n"
        f"    to_b = {to_b}\n"
        "    a.apply_update(to_a)\n"
        f"    {apply_b}\n"
        f"    return {returned}\n"
    )


UPSERT = (
    "INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s) "
    "ON CONFLICT (doc) DO UPDATE SET state = excluded.state"
)
DELETE = (
    'conn.execute("DELETE FROM crdt_updates WHERE id = ANY(%s)", ([row_id for row_id, _ in rows],))'
)


def compact_cell(
    stored='conn.execute("SELECT state FROM crdt_snapshots WHERE doc = %s", (doc,)).fetchall()',
    rows='conn.execute("SELECT id, update FROM crdt_updates WHERE doc = %s", (doc,)).fetchall()',
    upsert=UPSERT,
    delete=DELETE,
    delete_first=False,
    returned="len(rows)",
) -> str:
    write = f"    conn.execute({upsert!r}, (doc, state))\n"
    remove = f"    {delete}\n"
    return (
        "def compact(doc):\n"
        f"    stored = {stored}\n"
        f"    rows = {rows}\n"
        "    state = fold([state for (state,) in stored] + [update for _, update in rows])\n"
        + (remove + write if delete_first else write + remove)
        + f"    return {returned}\n"
    )


WATCH_LITERAL = (
    "def watch(table):\n"
    "    conn.execute(sql.SQL("
    + repr(FUNCTION.replace("VALUES (TG_TABLE_NAME,", "VALUES ({},"))
    + ").format(sql.Literal(table)))\n"
    "    conn.execute(sql.SQL("
    + repr(TRIGGER)
    + ").format(sql.Identifier(table + '_feed'), sql.Identifier(table)))\n"
)


def case(name, breaks, answer, source, loses, origin="course"):
    answers = source if isinstance(source, dict) else {answer: source}
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": answers,
            "loses": [loses], "source": origin}  # fmt: skip


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    # WRONG: deletes the folded updates before it stores the snapshot: if the snapshot write fails, the updates are gone
    "compact_delete_first": """def compact(doc):
    snapshot = conn.execute("SELECT state FROM crdt_snapshots WHERE doc = %s", (doc,)).fetchone()
    rows = conn.execute("SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)).fetchall()
    parts = ([snapshot[0]] if snapshot else []) + [update for _, update in rows]
    conn.execute("DELETE FROM crdt_updates WHERE id = ANY(%s)", ([i for i, _ in rows],))
    conn.execute(
        "INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s) "
        "ON CONFLICT (doc) DO UPDATE SET state = EXCLUDED.state",
        (doc, fold(parts)),
    )
    return len(rows)
""",
    # WRONG: deletes "id <= the largest folded id": an update that committed late with a lower id is deleted without being folded
    "compact_delete_up_to_max": """def compact(doc):
    snapshot = conn.execute("SELECT state FROM crdt_snapshots WHERE doc = %s", (doc,)).fetchone()
    rows = conn.execute("SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)).fetchall()
    if not rows:
        return 0
    parts = ([snapshot[0]] if snapshot else []) + [update for _, update in rows]
    conn.execute(
        "INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s) "
        "ON CONFLICT (doc) DO UPDATE SET state = EXCLUDED.state",
        (doc, fold(parts)),
    )
    conn.execute("DELETE FROM crdt_updates WHERE doc = %s AND id <= %s", (doc, rows[-1][0]))
    return len(rows)
""",
    # WRONG: folds only the updates and replaces the snapshot with them: everything the previous snapshot held is lost on the second compaction
    "compact_ignores_snapshot": """def compact(doc):
    rows = conn.execute("SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)).fetchall()
    if not rows:
        return 0
    conn.execute(
        "INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s) "
        "ON CONFLICT (doc) DO UPDATE SET state = EXCLUDED.state",
        (doc, fold([update for _, update in rows])),
    )
    conn.execute("DELETE FROM crdt_updates WHERE id = ANY(%s)", ([i for i, _ in rows],))
    return len(rows)
""",
    # WRONG: deletes every update of the document after folding (not the folded ids): an update appended in between is deleted unfolded
    "compact_whole_doc_delete": """def compact(doc):
    snapshot = conn.execute("SELECT state FROM crdt_snapshots WHERE doc = %s", (doc,)).fetchone()
    rows = conn.execute("SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)).fetchall()
    parts = ([snapshot[0]] if snapshot else []) + [update for _, update in rows]
    conn.execute(
        "INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s) "
        "ON CONFLICT (doc) DO UPDATE SET state = EXCLUDED.state",
        (doc, fold(parts)),
    )
    conn.execute("DELETE FROM crdt_updates WHERE doc = %s", (doc,))
    return len(rows)
""",
    # WRONG: the member's key leaves out the room, so a member who is online in one room is online in every room whose index lists them
    "presence_key_per_member__heartbeat": """def heartbeat(room, member, ttl_ms):
    r.set(ns.key("presence", member), "1", px=ttl_ms)
    r.sadd(ns.key("presence", room), member)
""",
    # WRONG: the member's key leaves out the room, so a member who is online in one room is online in every room whose index lists them
    "presence_key_per_member__online": """def online(room):
    alive = []
    for member in sorted(r.smembers(ns.key("presence", room))):
        if r.exists(ns.key("presence", member)):
            alive.append(member)
        else:
            r.srem(ns.key("presence", room), member)
    return alive
""",
    # WRONG: online filters out expired members but never removes them from the index (no SREM): the index grows forever
    "presence_no_srem": """def online(room):
    members = sorted(r.smembers(ns.key("presence", room)))
    return [m for m in members if r.exists(ns.key("presence", room, m))]
""",
    # WRONG: TTL in seconds (EX) with the milliseconds value: a 60_000 ms heartbeat lives 60_000 s
    "presence_ttl_seconds": """def heartbeat(room, member, ttl_ms):
    r.set(ns.key("presence", room, member), "1", ex=ttl_ms)
    r.sadd(ns.key("presence", room), member)
""",
    # WRONG: returns the members in SMEMBERS order (a set: any order), not sorted
    "presence_unsorted": """def online(room):
    alive = []
    for member in r.smembers(ns.key("presence", room)):
        if r.exists(ns.key("presence", room, member)):
            alive.append(member)
        else:
            r.srem(ns.key("presence", room), member)
    return alive
""",
    # correct alternative: pages until an empty page, then a sorted merge of both sources with duplicates skipped
    "resume_correct_alternative": """def resume(after, live):
    table = []
    while page := read_feed(table[-1].id if table else after, PAGE):
        table.extend(page)
    merged = sorted(table + [c for c in live if c.id > after], key=lambda c: c.id)
    return [c for i, c in enumerate(merged) if i == 0 or c.id != merged[i - 1].id]
""",
    # WRONG: keeps the live changes at or below `after` (already handled by the client)
    "resume_keeps_old_live": """def resume(after, live):
    got = {}
    cursor = after
    while True:
        page = read_feed(cursor, PAGE)
        for change in page:
            got[change.id] = change
        if len(page) < PAGE:
            break
        cursor = page[-1].id
    for change in live:
        got.setdefault(change.id, change)
    return [got[i] for i in sorted(got)]
""",
    # WRONG: reads a single page of the table and trusts live for the rest: more than PAGE missed changes leave a gap
    "resume_one_page": """def resume(after, live):
    got = {c.id: c for c in read_feed(after, PAGE)}
    for change in live:
        if change.id > after:
            got.setdefault(change.id, change)
    return [got[i] for i in sorted(got)]
""",
    # WRONG: off-by-one in paging: the next page starts after last id + 1, so the first change of every later page is skipped
    "resume_skip_one": """def resume(after, live):
    got = {}
    cursor = after
    while True:
        page = read_feed(cursor, PAGE)
        for change in page:
            got[change.id] = change
        if len(page) < PAGE:
            break
        cursor = page[-1].id + 1
    for change in live:
        if change.id > after:
            got.setdefault(change.id, change)
    return [got[i] for i in sorted(got)]
""",
    # WRONG: when the retries run out it forces the write without the version check (last writer wins) instead of raising ConflictError
    "save_edit_force_last": """def save_edit(doc_id, edit):
    for attempt in range(MAX_RETRIES + 1):
        body, version = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()
        updated = conn.execute(
            "UPDATE docs SET body = %s, version = version + 1 WHERE id = %s AND version = %s",
            (edit(body), doc_id, version),
        ).rowcount
        if updated:
            return attempt
    body, _ = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()
    conn.execute("UPDATE docs SET body = %s, version = version + 1 WHERE id = %s", (edit(body), doc_id))
    return MAX_RETRIES + 1
""",
    # WRONG: off-by-one: MAX_RETRIES attempts in all, i.e. MAX_RETRIES - 1 retries, so it gives up one retry too early
    "save_edit_one_retry_short": """def save_edit(doc_id, edit):
    for attempt in range(MAX_RETRIES):
        body, version = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()
        updated = conn.execute(
            "UPDATE docs SET body = %s, version = version + 1 WHERE id = %s AND version = %s",
            (edit(body), doc_id, version),
        ).rowcount
        if updated:
            return attempt
    raise ConflictError(doc_id)
""",
    # WRONG: on a conflict it re-reads the version only and writes the edit of the body it read first: the other user's edit is overwritten
    "save_edit_stale_body": """def save_edit(doc_id, edit):
    body, version = conn.execute("SELECT body, version FROM docs WHERE id = %s", (doc_id,)).fetchone()
    new_body = edit(body)
    for conflicts in range(MAX_RETRIES + 1):
        updated = conn.execute(
            "UPDATE docs SET body = %s, version = version + 1 WHERE id = %s AND version = %s",
            (new_body, doc_id, version),
        ).rowcount
        if updated:
            return conflicts
        (version,) = conn.execute("SELECT version FROM docs WHERE id = %s", (doc_id,)).fetchone()
    raise ConflictError(doc_id)
""",
    # WRONG (maybe ambiguous): counts the state vectors exchanged as bytes sent too, not only the updates
    "sync_counts_state_vectors": """def sync(a, b):
    state_a, state_b = a.get_state(), b.get_state()
    to_a = b.get_update(state_a)
    to_b = a.get_update(state_b)
    a.apply_update(to_a)
    b.apply_update(to_b)
    return len(state_a) + len(state_b) + len(to_a) + len(to_b)
""",
    # WRONG: returns the bytes sent one way only (b to a), not both ways together
    "sync_one_way_count": """def sync(a, b):
    to_a = b.get_update(a.get_state())
    to_b = a.get_update(b.get_state())
    a.apply_update(to_a)
    b.apply_update(to_b)
    return len(to_a)
""",
    # WRONG: sends each replica's whole document (get_update() without the receiver's state vector): converges, but far more bytes travel
    "sync_whole_doc": """def sync(a, b):
    to_a = b.get_update()
    to_b = a.get_update()
    a.apply_update(to_a)
    b.apply_update(to_b)
    return len(to_a) + len(to_b)
""",
    # WRONG: the table name is pasted into the SQL with an f-string (not sql.Identifier), so a table whose name needs quoting ("Order Items", "User") breaks
    "watch_fstring_table": r"""def watch(table):
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION feed_record() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "DECLARE new_id bigint;\n"
            "BEGIN\n"
            "  IF TG_OP = 'DELETE' THEN\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD)) RETURNING id INTO new_id;\n"
            "  ELSE\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW)) RETURNING id INTO new_id;\n"
            "  END IF;\n"
            "  PERFORM pg_notify({channel}, new_id::text);\n"
            "  RETURN NULL;\n"
            "END $$"
        ).format(channel=sql.Literal(FEED_CHANNEL))
    )
    conn.execute(
        f"CREATE TRIGGER {table}_feed AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION feed_record()"
    )
""",
    # WRONG: the table's name is baked into one shared trigger function, so watching a second table re-labels the first one's changes
    "watch_hardcoded_name": r"""def watch(table):
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION feed_record() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "DECLARE new_id bigint;\n"
            "BEGIN\n"
            "  IF TG_OP = 'DELETE' THEN\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES ({name}, TG_OP, to_jsonb(OLD)) RETURNING id INTO new_id;\n"
            "  ELSE\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES ({name}, TG_OP, to_jsonb(NEW)) RETURNING id INTO new_id;\n"
            "  END IF;\n"
            "  PERFORM pg_notify({channel}, new_id::text);\n"
            "  RETURN NULL;\n"
            "END $$"
        ).format(name=sql.Literal(table), channel=sql.Literal(FEED_CHANNEL))
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION feed_record()"
        ).format(trigger=sql.Identifier(f"{table}_feed"), table=sql.Identifier(table))
    )
""",
    # WRONG: notifies the changed row's own id (NEW.id) instead of the new feed row's id
    "watch_notify_row_id": r"""def watch(table):
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION feed_record() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  IF TG_OP = 'DELETE' THEN\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD));\n"
            "    PERFORM pg_notify({channel}, (to_jsonb(OLD)->>'id'));\n"
            "  ELSE\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));\n"
            "    PERFORM pg_notify({channel}, (to_jsonb(NEW)->>'id'));\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        ).format(channel=sql.Literal(FEED_CHANNEL))
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION feed_record()"
        ).format(trigger=sql.Identifier(f"{table}_feed"), table=sql.Identifier(table))
    )
""",
    # WRONG: records OLD for every op other than INSERT (misreads "the new row, or for a DELETE the old one"): an UPDATE's row_data is the row before the change
    "watch_old_on_update": r"""def watch(table):
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION feed_record() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "DECLARE new_id bigint;\n"
            "BEGIN\n"
            "  IF TG_OP = 'INSERT' THEN\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW)) RETURNING id INTO new_id;\n"
            "  ELSE\n"
            "    INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD)) RETURNING id INTO new_id;\n"
            "  END IF;\n"
            "  PERFORM pg_notify({channel}, new_id::text);\n"
            "  RETURN NULL;\n"
            "END $$"
        ).format(channel=sql.Literal(FEED_CHANNEL))
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION feed_record()"
        ).format(trigger=sql.Identifier(f"{table}_feed"), table=sql.Identifier(table))
    )
""",
}


CASES = [
    # ------------------------------------------------------------------ task 1
    case("notifies without recording the change", "feed-row", WATCH,
         watch_cell(a=("    INSERT INTO feed (table_name, op, row_data)\n"
                       "    VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END))\n"
                       "    RETURNING id INTO change_id;\n",
                       "    change_id := 0;\n")), T1),
    case("the schema-qualified table name", "feed-table", WATCH,
         watch_cell(a=("VALUES (TG_TABLE_NAME,", "VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,")), T1),
    case("the operation in lower case", "feed-op", WATCH,
         watch_cell(a=("TG_TABLE_NAME, TG_OP,", "TG_TABLE_NAME, lower(TG_OP),")), T1),
    case("only the row's id", "feed-row-data", WATCH,
         watch_cell(a=("to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END)",
                       "jsonb_build_object('id', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)")), T1),
    case("NEW for a DELETE too", "feed-delete-old", WATCH,
         watch_cell(a=("to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END)", "to_jsonb(NEW)")), T1),
    case("another channel", "feed-channel", WATCH, watch_cell(a=("pg_notify('feed_changes'", "pg_notify('feed'")), T1),
    case("an empty payload", "feed-payload", WATCH, watch_cell(a=("change_id::text", "''")), T1),
    case("the changed row's id as the payload", "feed-payload", WATCH,
         watch_cell(a=("change_id::text", "(CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text")), T1),
    case("no DELETE", "feed-events", WATCH,
         watch_cell(trigger=TRIGGER.replace("INSERT OR UPDATE OR DELETE", "INSERT OR UPDATE")), T1),
    case("a BEFORE trigger that returns NULL: the change is cancelled", "feed-events", WATCH,
         watch_cell(trigger=TRIGGER.replace("AFTER", "BEFORE")), T1),
    case("FOR EACH STATEMENT", "feed-each-row", WATCH,
         watch_cell(trigger=TRIGGER.replace("FOR EACH ROW", "FOR EACH STATEMENT")), T1),
    case("the table name formatted in unquoted", "feed-quote", WATCH, watch_cell(table="sql.SQL(table)"), T1),
    case("the table's name written into the function", "feed-second", WATCH, WATCH_LITERAL, T1),
    # ------------------------------------------------------------------ task 2
    case("one page only", "resume-pages", RESUME, resume_cell(done="True"), T2),
    case("one read of up to 1,000 rows", "resume-page-size", RESUME,
         resume_cell(read="read_feed(last, 1000)", done="len(page) < 1000"), T2),
    case("the table and live concatenated: duplicates", "resume-once", RESUME,
         resume_cell(returned="[found[key] for key in sorted(found)] + [c for c in live if c.id > after]"), T2),
    case("live first, then the table, unsorted", "resume-order", RESUME,
         resume_cell(returned="list({**{c.id: c for c in live if c.id > after}, **found}.values())"), T2),
    case("live changes at the last id kept", "resume-handled", RESUME,
         resume_cell(live="(change.id, change) for change in live if change.id >= after"), T2),
    case("every live change kept", "resume-handled", RESUME,
         resume_cell(live="(change.id, change) for change in live"), T2),
    # ------------------------------------------------------------------ task 3
    case("the key without the room", "presence-key", HEARTBEAT,
         heartbeat_cell(key='ns.key("presence", member)'), T3),
    case("EX: seconds, not milliseconds", "presence-ms", HEARTBEAT, heartbeat_cell(ttl="ex=ttl_ms"), T3),
    case("no index", "presence-index", HEARTBEAT, heartbeat_cell(index="pass"), T3),
    case("the index as it is", "online-alive", ONLINE, online_cell(alive="True"), T3),
    case("in the set's order", "online-sorted", ONLINE, online_cell(returned="members"), T3),
    case("expired members filtered out but left in the index", "online-prune", ONLINE,
         online_cell(prune="pass"), T3),
    case("a member alive in any room counts", "online-rooms", ONLINE,
         online_cell(alive='r.keys(ns.key("presence", "*", member))'), T3),
    # ------------------------------------------------------------------ task 4
    case("the version never moves", "occ-bump", SAVE,
         save_cell(update="UPDATE docs SET body = %s WHERE id = %s AND version = %s"), T4),
    case("last write wins: no version check", "occ-check", SAVE,
         save_cell(update="UPDATE docs SET body = %s, version = version + 1 WHERE id = %s AND %s IS NOT NULL"), T4),
    case("the version only: another document with that version is overwritten", "occ-id", SAVE,
         save_cell(update="UPDATE docs SET body = %s, version = version + 1 WHERE version = %s AND %s IS NOT NULL",
                   params="(edit(body), version, doc_id)"), T4),
    case("retries with the body read first", "occ-reread", SAVE,
         save_cell(reread='version = conn.execute("SELECT version FROM docs WHERE id = %s", (doc_id,)).fetchone()[0]'), T4),
    case("gives up one retry early", "occ-bounded", SAVE, save_cell(bound="conflicts >= MAX_RETRIES"), T4),
    case("never gives up", "occ-bounded", SAVE, save_cell(bound="False"), T4),
    case("gives up silently", "occ-raise", SAVE, save_cell(give_up="return None"), T4),
    case("returns the writes, not the conflicts", "occ-return", SAVE, save_cell(returned="conflicts + 1"), T4),
    # ------------------------------------------------------------------ task 5
    case("one way only", "sync-both", SYNC, sync_cell(apply_b="pass"), T5),
    case("whole documents both ways", "sync-missing", SYNC,
         sync_cell(to_a="b.get_update()", to_b="a.get_update()"), T5),
    case("counts one direction", "sync-bytes", SYNC, sync_cell(returned="len(to_a)"), T5),
    # ------------------------------------------------------------------ task 6
    case("the old snapshot ignored", "compact-snapshot", COMPACT, compact_cell(stored="[]"), T6),
    case("a plain INSERT: the second compaction fails", "compact-upsert", COMPACT,
         compact_cell(upsert="INSERT INTO crdt_snapshots (doc, state) VALUES (%s, %s)"), T6),
    case("deletes every id up to the largest folded", "compact-exact", COMPACT,
         compact_cell(delete='conn.execute("DELETE FROM crdt_updates WHERE doc = %s AND id <= %s", (doc, max(i for i, _ in rows)))'), T6),
    case("deletes the document's updates", "compact-exact", COMPACT,
         compact_cell(delete='conn.execute("DELETE FROM crdt_updates WHERE doc = %s", (doc,))'), T6),
    case("deletes before the snapshot is stored", "compact-order", COMPACT, compact_cell(delete_first=True), T6),
    case("every document's updates folded", "compact-others", COMPACT,
         compact_cell(rows='conn.execute("SELECT id, update FROM crdt_updates").fetchall()'), T6),
    case("counts the snapshot as folded", "compact-return", COMPACT,
         compact_cell(returned="len(stored) + len(rows)"), T6),
    # ------------------------------------------------------------------ outside review
    case("one shared function with the table's name as a literal: a second watch relabels the first",
         "feed-second", WATCH, OUTSIDE["watch_hardcoded_name"], T1, origin="outside review"),
    case("OLD for an UPDATE too (only an INSERT records NEW)", "feed-row-data", WATCH,
         OUTSIDE["watch_old_on_update"], T1, origin="outside review"),
    case("the table name in an f-string, unquoted", "feed-quote", WATCH,
         OUTSIDE["watch_fstring_table"], T1, origin="outside review"),
    case("the changed row's id (->>'id') as the payload", "feed-payload", WATCH,
         OUTSIDE["watch_notify_row_id"], T1, origin="outside review"),
    case("one page of the table, then live", "resume-pages", RESUME,
         OUTSIDE["resume_one_page"], T2, origin="outside review"),
    case("the next page after the last id + 1: one change skipped per page", "resume-pages", RESUME,
         OUTSIDE["resume_skip_one"], T2, origin="outside review"),
    case("live changes at or below after kept", "resume-handled", RESUME,
         OUTSIDE["resume_keeps_old_live"], T2, origin="outside review"),
    case("the member's key without the room, in heartbeat and online", "presence-key", HEARTBEAT,
         {HEARTBEAT: OUTSIDE["presence_key_per_member__heartbeat"],
          ONLINE: OUTSIDE["presence_key_per_member__online"]}, T3, origin="outside review"),
    case("EX with the milliseconds", "presence-ms", HEARTBEAT,
         OUTSIDE["presence_ttl_seconds"], T3, origin="outside review"),
    case("expired members filtered, never SREM'd", "online-prune", ONLINE,
         OUTSIDE["presence_no_srem"], T3, origin="outside review"),
    case("SMEMBERS order, unsorted", "online-sorted", ONLINE,
         OUTSIDE["presence_unsorted"], T3, origin="outside review"),
    case("re-reads the version only and writes the first body's edit", "occ-reread", SAVE,
         OUTSIDE["save_edit_stale_body"], T4, origin="outside review"),
    case("MAX_RETRIES attempts in all: one retry short", "occ-bounded", SAVE,
         OUTSIDE["save_edit_one_retry_short"], T4, origin="outside review"),
    case("forces the write without the version check when the retries run out", "occ-raise", SAVE,
         OUTSIDE["save_edit_force_last"], T4, origin="outside review"),
    case("whole documents both ways", "sync-missing", SYNC,
         OUTSIDE["sync_whole_doc"], T5, origin="outside review"),
    case("the bytes of one direction", "sync-bytes", SYNC,
         OUTSIDE["sync_one_way_count"], T5, origin="outside review"),
    case("the state vectors counted as bytes sent", "sync-bytes", SYNC,
         OUTSIDE["sync_counts_state_vectors"], T5, origin="outside review"),
    case("deletes id <= the largest folded", "compact-exact", COMPACT,
         OUTSIDE["compact_delete_up_to_max"], T6, origin="outside review"),
    case("deletes every update of the document", "compact-exact", COMPACT,
         OUTSIDE["compact_whole_doc_delete"], T6, origin="outside review"),
    case("folds the updates only: the old snapshot is replaced", "compact-snapshot", COMPACT,
         OUTSIDE["compact_ignores_snapshot"], T6, origin="outside review"),
    case("deletes before it stores the snapshot", "compact-order", COMPACT,
         OUTSIDE["compact_delete_first"], T6, origin="outside review"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "a trigger per table name with DROP ... IF EXISTS; paging until an empty page; "
        "one pipeline per heartbeat; a for loop with an else for the retries; "
        "the missing updates computed after the first apply; the snapshot read with fetchone",
        "notebook": NB,
        "answers": {
            WATCH: (
                "def watch(table):\n"
                "    conn.execute('''\n"
                "        CREATE OR REPLACE FUNCTION record_change() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                "        DECLARE new_id bigint;\n"
                "        BEGIN\n"
                "            IF TG_OP = 'DELETE' THEN\n"
                "                INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD)) RETURNING id INTO new_id;\n"
                "            ELSE\n"
                "                INSERT INTO feed (table_name, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW)) RETURNING id INTO new_id;\n"
                "            END IF;\n"
                "            PERFORM pg_notify('feed_changes', new_id::text);\n"
                "            RETURN NULL;\n"
                "        END $$''')\n"
                "    name, target = sql.Identifier('feed_' + table), sql.Identifier('public', table)\n"
                "    conn.execute(sql.SQL('DROP TRIGGER IF EXISTS {} ON {}').format(name, target))\n"
                "    conn.execute(sql.SQL('CREATE TRIGGER {} AFTER DELETE OR INSERT OR UPDATE ON {} '\n"
                "                         'FOR EACH ROW EXECUTE PROCEDURE record_change()').format(name, target))\n"
            ),
            RESUME: (
                "def resume(after, live):\n"
                "    out, last = [], after\n"
                "    while page := read_feed(last, PAGE):\n"
                "        out += page\n"
                "        last = page[-1].id\n"
                "    seen = {c.id for c in out}\n"
                "    out += [c for c in live if c.id > after and c.id not in seen]\n"
                "    return sorted(out, key=lambda c: c.id)\n"
            ),
            HEARTBEAT: (
                "def heartbeat(room, member, ttl_ms):\n"
                "    with r.pipeline() as pipe:\n"
                "        pipe.set(ns.key('presence', room, member), 'here', px=ttl_ms)\n"
                "        pipe.sadd(ns.key('presence', room), member)\n"
                "        pipe.execute()\n"
            ),
            ONLINE: (
                "def online(room):\n"
                "    index = ns.key('presence', room)\n"
                "    members = sorted(r.smembers(index))\n"
                "    alive = [m for m in members if r.exists(ns.key('presence', room, m))]\n"
                "    gone = [m for m in members if m not in alive]\n"
                "    if gone:\n"
                "        r.srem(index, *gone)\n"
                "    return alive\n"
            ),
            SAVE: (
                "def save_edit(doc_id, edit):\n"
                "    for attempt in range(MAX_RETRIES + 1):\n"
                "        body, version = conn.execute('SELECT body, version FROM docs WHERE id = %s', (doc_id,)).fetchone()\n"
                "        cur = conn.execute('UPDATE docs SET body = %s, version = %s WHERE id = %s AND version = %s',\n"
                "                           (edit(body), version + 1, doc_id, version))\n"
                "        if cur.rowcount == 1:\n"
                "            return attempt\n"
                "    raise ConflictError(f'gave up after {MAX_RETRIES} retries')\n"
            ),
            SYNC: (
                "def sync(a, b):\n"
                "    to_a = b.get_update(a.get_state())\n"
                "    a.apply_update(to_a)\n"
                "    to_b = a.get_update(b.get_state())\n"
                "    b.apply_update(to_b)\n"
                "    return len(to_a) + len(to_b)\n"
            ),
            COMPACT: (
                "def compact(doc):\n"
                "    snap = conn.execute('SELECT state FROM crdt_snapshots WHERE doc = %s', (doc,)).fetchone()\n"
                "    rows = conn.execute('SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id', (doc,)).fetchall()\n"
                "    parts = ([snap[0]] if snap else []) + [u for _, u in rows]\n"
                "    with conn.transaction():\n"
                "        conn.execute('DELETE FROM crdt_snapshots WHERE doc = %s', (doc,))\n"
                "        conn.execute('INSERT INTO crdt_snapshots VALUES (%s, %s)', (doc, fold(parts)))\n"
                "    ids = [i for i, _ in rows]\n"
                "    conn.execute('DELETE FROM crdt_updates WHERE id IN (SELECT unnest(%s::bigint[]))', (ids,))\n"
                "    return len(ids)\n"
            ),
        },
    },
    {
        "name": "outside review: paging until an empty page, a sorted merge that skips repeated ids",
        "notebook": NB,
        "answers": {RESUME: OUTSIDE["resume_correct_alternative"]},
    },
]
