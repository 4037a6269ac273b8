"""02-microservices: the requirement table of each task of Step 9's exercises, and one
plausible wrong answer (at least) per requirement, which must lose exactly that requirement's
test cell. The hidden tests inject failures (an effect that fails, a broken publish, a lock
held by another relay, a consumer process SIGKILLed, a saga step that fails), so most of the
wrong answers below pass the visible tests and lose marks only there."""

from pathlib import Path

from labkit.course import grading
from wrong_answers import Requirement

NB = "step09-microservices.ipynb"


def r9(id, answer, text, test):  # noqa: A002
    return Requirement(id, NB, answer, text, test)


SHIP, PLACE, RELAY, SAGA = "ship_once", "place_order", "relay_once", "run_saga"
CLAIM, RESCUE = "claim_stuck", "rescue"

REQUIREMENTS = [
    # Task 1
    r9("ship-row", SHIP, "insert a row `(order_id, event_id)` into `shipments`", "test_ship_once"),
    r9("ship-only-new", SHIP, "ship only if the mark is new", "test_ship_once"),
    r9("ship-event-id", SHIP, "the message id `message.event_id`", "test_ship_once"),
    r9("ship-consumer", SHIP, "under the consumer name `CONSUMER`", "test_ship_once"),
    r9("ship-concurrent", SHIP, "even when two deliveries of the event run at the same time", "test_ship_once"),
    r9("ship-one-transaction", SHIP, "the mark and the shipment in one transaction", "test_ship_once"),
    r9("ship-raises", SHIP, "let the exception propagate", "test_ship_once"),
    r9("ship-returns", SHIP, "Return `True` if the order was shipped now, `False` if the event had been processed already", "test_ship_once"),
    # Task 2
    r9("order-row", PLACE, "insert the order into `orders` (`id`, `item`, `quantity`)", "test_place_order"),
    r9("event-id", PLACE, '`event_id` `"order-<order_id>"`', "test_place_order"),
    r9("event-type", PLACE, '`event_type` `"OrderPlaced"`', "test_place_order"),
    r9("event-payload", PLACE, '`payload` the JSON object `{"order_id": ..., "item": ..., "quantity": ...}`', "test_place_order"),
    r9("event-unpublished", PLACE, "leave `published_at` empty", "test_place_order"),
    r9("order-one-transaction", PLACE, "both in one transaction: either both rows are committed, or neither", "test_place_order"),
    r9("order-raises", PLACE, "if an insert fails, let its exception propagate", "test_place_order"),
    r9("order-returns", PLACE, "Return the event id", "test_place_order"),
    r9("order-no-publish", PLACE, "Do not publish anything", "test_place_order"),
    # Task 3
    r9("relay-unsent", RELAY, "take the unsent rows (`published_at IS NULL`)", "test_relay_once"),
    r9("relay-oldest", RELAY, "oldest first (by `id`)", "test_relay_once"),
    r9("relay-batch", RELAY, "at most `batch` of them", "test_relay_once"),
    r9("relay-lock-batch", RELAY, "lock only those", "test_relay_once"),
    r9("relay-skip-locked", RELAY, "with `FOR UPDATE SKIP LOCKED`, so that a second relay running at the same time skips them", "test_relay_once"),
    r9("relay-publish", RELAY, "publish each with `bus.publish(event_type, payload, event_id=event_id)`", "test_relay_once"),
    r9("relay-mark", RELAY, "mark them sent (`published_at = now()`) in the same transaction", "test_relay_once"),
    r9("relay-returns", RELAY, "return how many rows were published", "test_relay_once"),
    r9("relay-publish-first", RELAY, "Never commit a row as sent before it was published", "test_relay_once"),
    r9("relay-raises", RELAY, "if publishing fails, let the exception propagate", "test_relay_once"),
    # Task 4
    r9("claim-idle", CLAIM, "have left pending for at least `min_idle_ms` milliseconds", "test_claim_stuck"),
    r9("claim-pages", CLAIM, 'call it again from the cursor it returned until that cursor is `"0-0"`, whatever the size of the pages', "test_claim_stuck"),
    r9("claim-returns", CLAIM, "return the claimed `(entry_id, fields)` pairs, in the order claimed", "test_claim_stuck"),
    # Task 5
    r9("rescue-own-count", RESCUE, "For each entry, read how many times it has been delivered from `XPENDING`", "test_rescue"),
    r9("rescue-threshold", RESCUE, "If it was delivered more than `MAX_DELIVERIES` times", "test_rescue"),
    r9("rescue-dead-letter", RESCUE, "add its fields, unchanged, to the stream `DEAD_LETTER` and `XACK` it", "test_rescue"),
    r9("rescue-atomic", RESCUE, "both in one `MULTI` (with `r.pipeline()`)", "test_rescue"),
    r9("rescue-dead-unhandled", RESCUE, "do not handle it", "test_rescue"),
    r9("rescue-handle", RESCUE, "Otherwise call `handle_entry(entry_id, fields)`", "test_rescue"),
    r9("rescue-ack", RESCUE, "`XACK` the entry if it returned", "test_rescue"),
    r9("rescue-any-exception", RESCUE, "if it raised any exception", "test_rescue"),
    r9("rescue-keep-failed", RESCUE, "leave the entry pending, to be retried", "test_rescue"),
    r9("rescue-go-on", RESCUE, "go on with the next entry", "test_rescue"),
    r9("rescue-returns", RESCUE, 'Return `{"handled": [...], "dead": [...]}`: the entry ids handled and dead-lettered', "test_rescue"),
    # Task 6
    r9("saga-in-order", SAGA, "Run the actions in order", "test_run_saga"),
    r9("saga-stop", SAGA, "stop: run the compensations", "test_run_saga"),
    r9("saga-any-exception", SAGA, "If an action raises an exception (any exception, not only `StepFailed`)", "test_run_saga"),
    r9("saga-completed-only", SAGA, "run the compensations of the steps whose actions completed", "test_run_saga"),
    r9("saga-reverse", SAGA, "in reverse order", "test_run_saga"),
    r9("saga-skip-none", SAGA, "skip `None`", "test_run_saga"),
    r9("saga-compensated-result", SAGA, '"compensated": [<names of the steps compensated, in the order compensated>]', "test_run_saga"),
    r9("saga-completed-result", SAGA, 'If every action succeeds, return `{"status": "completed", "failed": None, "compensated": []}`', "test_run_saga"),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "Delivery is at-least-once: the shipping service may receive the same event twice",
        "Complete `ship_once(conn, message)`, which ships the order",
        "Hint: `INSERT ...",
        "ON CONFLICT DO NOTHING RETURNING message_id` returns a row only when the mark is new.",
    ],
    (NB, "task2"): [
        "The orders service must not commit an order and then publish its event",
        "Complete `place_order(conn, order_id, item, quantity)`:",
    ],
    (NB, "task3"): [
        "The relay is a separate process that publishes the outbox's rows.",
        "Complete `relay_once(conn, bus, batch)`, one pass of its loop:",
        "(A relay that dies after publishing and before marking publishes the row again",
    ],
    (NB, "task4"): [
        "A consumer that reads an entry (`XREADGROUP`) and dies before its `XACK`",
        "Complete `claim_stuck(r, consumer, min_idle_ms)`, run by a healthy instance",
        "Once claimed, the entries are pending on `consumer`",
        "(No entry is ever deleted from `STREAM` here",
    ],
    (NB, "task5"): [
        "A poison message fails every time it is handled",
        "Complete `rescue(r, claimed)`: `claimed` holds the",
    ],
    (NB, "task6"): [
        "Placing an order spans services: reserve stock, charge the payment, confirm the order.",
        "No transaction covers them all; a saga runs the steps one by one",
        "Complete `run_saga(steps)`: `steps` is a list of `(name, action, compensation)`",
        "builds the three steps of an order",
        "`SAGA_LOG` records what the steps did.",
    ],
}

SOURCE = Path(__file__).resolve().parents[2] / "grading" / "source" / "02-microservices"
SOLUTIONS = grading.solution_cells(SOURCE / NB)
BY_ID = {r.id: r for r in REQUIREMENTS}


def variant(requirement: Requirement, *edits: tuple[str, str]) -> str:
    """The solution of the requirement's answer cell with each (old, new) edit applied once."""
    text = SOLUTIONS[requirement.answer]
    for old, new in edits:
        assert old in text, f"{requirement.id}: {old!r} is not in the solution"
        text = text.replace(old, new, 1)
    return text


def case(breaks: str, name: str, *edits: tuple[str, str], answer: str | None = None,
         source: str = "course") -> dict:  # fmt: skip
    """A wrong answer that breaks only ``breaks``: the solution with ``edits`` (or ``answer``)."""
    requirement = BY_ID[breaks]
    return {
        "name": name,
        "breaks": breaks,
        "notebook": NB,
        "answers": {requirement.answer: answer or variant(requirement, *edits)},
        "loses": [requirement.test],
        "source": source,
    }


SHIP_TWO_STEPS = """def ship_once(conn, message) -> bool:
    marked = conn.execute(
        "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING RETURNING message_id",
        (CONSUMER, message.event_id),
    ).fetchone()
    if marked is None:
        return False
    conn.execute(
        "INSERT INTO shipments (order_id, event_id) VALUES (%s, %s)",
        (message.data["order_id"], message.event_id),
    )
    return True
"""

SHIP_ANY_CONSUMER = """def ship_once(conn, message) -> bool:
    with conn.transaction():
        seen = conn.execute(
            "SELECT 1 FROM processed_messages WHERE message_id = %s", (message.event_id,)
        ).fetchone()
        if seen:
            return False
        conn.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s)",
            (CONSUMER, message.event_id),
        )
        conn.execute(
            "INSERT INTO shipments (order_id, event_id) VALUES (%s, %s)",
            (message.data["order_id"], message.event_id),
        )
    return True
"""

PLACE_TWO_STEPS = """def place_order(conn, order_id: int, item: str, quantity: int) -> str:
    conn.execute(
        "INSERT INTO orders (id, item, quantity) VALUES (%s, %s, %s)", (order_id, item, quantity)
    )
    payload = {"order_id": order_id, "item": item, "quantity": quantity}
    conn.execute(
        "INSERT INTO outbox (event_id, event_type, payload) VALUES (%s, 'OrderPlaced', %s)",
        (f"order-{order_id}", json.dumps(payload)),
    )
    return f"order-{order_id}"
"""

RELAY_MARK_FIRST = """def relay_once(conn, bus, batch: int = 100) -> int:
    rows = conn.execute(
        "UPDATE outbox SET published_at = now() WHERE id IN (SELECT id FROM outbox "
        "WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
        "RETURNING id, event_id, event_type, payload",
        (batch,),
    ).fetchall()
    for _, event_id, event_type, payload in sorted(rows):
        bus.publish(event_type, payload, event_id=event_id)
    return len(rows)
"""

CLAIM_ONE_PAGE = """def claim_stuck(r, consumer: str, min_idle_ms: int) -> list:
    _, entries, *_ = r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms)
    return entries
"""

SAGA_FORWARD = """def run_saga(steps) -> dict:
    done = []
    for name, action, compensation in steps:
        try:
            action()
        except Exception:
            undone = []
            for done_name, undo in done:
                if undo is not None:
                    undo()
                    undone.append(done_name)
            return {"status": "compensated", "failed": name, "compensated": undone}
        done.append((name, compensation))
    return {"status": "completed", "failed": None, "compensated": []}
"""

SAGA_NO_STOP = """def run_saga(steps) -> dict:
    done, failed = [], None
    for name, action, compensation in steps:
        try:
            action()
        except Exception:
            failed = failed or name
            continue
        done.append((name, compensation))
    if failed is None:
        return {"status": "completed", "failed": None, "compensated": []}
    undone = []
    for done_name, undo in reversed(done):
        if undo is not None:
            undo()
            undone.append(done_name)
    return {"status": "compensated", "failed": failed, "compensated": undone}
"""


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    "w1c_check_then_act": """def ship_once(conn, message) -> bool:
    seen = conn.execute(
        "SELECT 1 FROM processed_messages WHERE consumer = %s AND message_id = %s",
        (CONSUMER, message.event_id),
    ).fetchone()
    if seen:
        return False
    with conn.transaction():
        conn.execute(
            "INSERT INTO shipments (order_id, event_id) VALUES (%s, %s)",
            (message.data["order_id"], message.event_id),
        )
        conn.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (CONSUMER, message.event_id),
        )
    return True
""",
    "w2b_separate_outbox_first": """def place_order(conn, order_id: int, item: str, quantity: int) -> str:
    event_id = f"order-{order_id}"
    conn.execute(
        "INSERT INTO outbox (event_id, event_type, payload) VALUES (%s, 'OrderPlaced', %s)",
        (event_id, json.dumps({"order_id": order_id, "item": item, "quantity": quantity})),
    )
    conn.execute(
        "INSERT INTO orders (id, item, quantity) VALUES (%s, %s, %s)",
        (order_id, item, quantity),
    )
    return event_id
""",
    "w3f_order_by_event_id": """def relay_once(conn, bus, batch: int = 100) -> int:
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
            "ORDER BY event_id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall()
        for _, event_id, event_type, payload in rows:
            bus.publish(event_type, payload, event_id=event_id)
        if rows:
            conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
                ([row[0] for row in rows],),
            )
    return len(rows)
""",
    "w3q_lock_all_slice": """def relay_once(conn, bus, batch: int = 100) -> int:
    with conn.transaction():
        cursor = conn.execute(
            "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
            "ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        rows = cursor.fetchmany(batch)
        for _, event_id, event_type, payload in rows:
            bus.publish(event_type, payload, event_id=event_id)
        if rows:
            conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
                ([row[0] for row in rows],),
            )
    return len(rows)
""",
    "w4c_stop_on_short_page": """def claim_stuck(r, consumer: str, min_idle_ms: int) -> list:
    claimed = []
    start = "0-0"
    while True:
        reply = r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, start_id=start)
        start, entries = reply[0], reply[1]
        claimed.extend((entry_id, fields) for entry_id, fields in entries if fields)
        if start == "0-0" or not entries:
            return claimed
""",
    "w4f_count_small_pages": """def claim_stuck(r, consumer: str, min_idle_ms: int) -> list:
    claimed = []
    start = "0-0"
    while True:
        reply = r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, start_id=start, count=100)
        start, entries = reply[0], reply[1]
        claimed.extend((entry_id, fields) for entry_id, fields in entries if fields)
        if len(entries) < 100:
            return claimed
""",
    "w4j_one_big_call": """def claim_stuck(r, consumer: str, min_idle_ms: int) -> list:
    cursor, entries = r.xautoclaim(
        STREAM, GROUP, consumer, min_idle_ms, start_id="0-0", count=10000
    )[:2]
    return [(entry_id, fields) for entry_id, fields in entries if fields]
""",
    "w5d_fields_changed": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
        times = info[0]["times_delivered"] if info else 1
        if times > MAX_DELIVERIES:
            with r.pipeline() as pipe:
                pipe.xadd(DEAD_LETTER, {**fields, "original_id": entry_id, "deliveries": times})
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except Exception:
            continue
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w5e_no_multi": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
        times = info[0]["times_delivered"] if info else 1
        if times > MAX_DELIVERIES:
            r.xadd(DEAD_LETTER, fields)
            r.xack(STREAM, GROUP, entry_id)
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except Exception:
            continue
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w5g_wrong_pending_range": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, "-", "+", 1)
        times = info[0]["times_delivered"] if info else 1
        if times > MAX_DELIVERIES:
            with r.pipeline() as pipe:
                pipe.xadd(DEAD_LETTER, fields)
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except Exception:
            continue
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w5h_break_on_failure": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
        times = info[0]["times_delivered"] if info else 1
        if times > MAX_DELIVERIES:
            with r.pipeline() as pipe:
                pipe.xadd(DEAD_LETTER, fields)
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except Exception:
            break
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w5i_catch_valueerror_only": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
        times = info[0]["times_delivered"] if info else 1
        if times > MAX_DELIVERIES:
            with r.pipeline() as pipe:
                pipe.xadd(DEAD_LETTER, fields)
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except ValueError:
            continue
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w5p_hardcoded_3": """def rescue(r, claimed: list) -> dict:
    result = {"handled": [], "dead": []}
    for entry_id, fields in claimed:
        info = r.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
        times = info[0]["times_delivered"] if info else 1
        if times > 3:
            with r.pipeline() as pipe:
                pipe.xadd(DEAD_LETTER, fields)
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
            result["dead"].append(entry_id)
            continue
        try:
            handle_entry(entry_id, fields)
        except Exception:
            continue
        r.xack(STREAM, GROUP, entry_id)
        result["handled"].append(entry_id)
    return result
""",
    "w6d_catch_stepfailed_only": """def run_saga(steps) -> dict:
    done = []
    for name, action, compensation in steps:
        try:
            action()
        except StepFailed:
            compensated = []
            for done_name, done_compensation in reversed(done):
                if done_compensation is not None:
                    done_compensation()
                    compensated.append(done_name)
            return {"status": "compensated", "failed": name, "compensated": compensated}
        done.append((name, compensation))
    return {"status": "completed", "failed": None, "compensated": []}
""",
}

OUTSIDE_ALTERNATIVES = {
    "w3b_mark_then_publish_same_txn": """def relay_once(conn, bus, batch: int = 100) -> int:
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall()
        conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
            ([row[0] for row in rows],),
        )
        for _, event_id, event_type, payload in rows:
            bus.publish(event_type, payload, event_id=event_id)
    return len(rows)
""",
    "w4m_no_deleted_filter": """def claim_stuck(r, consumer: str, min_idle_ms: int) -> list:
    claimed = []
    start = "0-0"
    while True:
        reply = r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, start_id=start)
        start = reply[0]
        claimed.extend(reply[1])
        if start == "0-0":
            return claimed
""",
}

SHIP_SWALLOWS = """def ship_once(conn, message) -> bool:
    try:
        with conn.transaction():
            marked = conn.execute(
                "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING RETURNING message_id",
                (CONSUMER, message.event_id),
            ).fetchone()
            if marked is None:
                return False
            conn.execute(
                "INSERT INTO shipments (order_id, event_id) VALUES (%s, %s)",
                (message.data["order_id"], message.event_id),
            )
    except psycopg.Error:
        return False
    return True
"""

PLACE_SWALLOWS = """def place_order(conn, order_id: int, item: str, quantity: int) -> str:
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO orders (id, item, quantity) VALUES (%s, %s, %s)",
                (order_id, item, quantity),
            )
            conn.execute(
                "INSERT INTO outbox (event_id, event_type, payload) VALUES (%s, 'OrderPlaced', %s)",
                (f"order-{order_id}",
                 json.dumps({"order_id": order_id, "item": item, "quantity": quantity})),
            )
    except psycopg.Error:
        pass
    return f"order-{order_id}"
"""

RELAY_SWALLOWS = """def relay_once(conn, bus, batch: int = 100) -> int:
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (batch,),
            ).fetchall()
            for _, event_id, event_type, payload in rows:
                bus.publish(event_type, payload, event_id=event_id)
            conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([row[0] for row in rows],)
            )
    except Exception:
        return 0
    return len(rows)
"""

CASES = [
    # ------------------------------------------------------------------ task 1
    case("ship-row", "ships the stream entry id instead of the event id",
         ("(message.data[\"order_id\"], message.event_id),", "(message.data[\"order_id\"], message.stream_id),")),
    case("ship-only-new", "marks the event but ships every delivery",
         ("        if marked is None:\n            return False\n", "")),
    case("ship-event-id", "deduplicates on the stream entry id: a republished event ships twice",
         ("(CONSUMER, message.event_id),", "(CONSUMER, message.stream_id),")),
    case("ship-consumer", "any service's mark counts as shipping's", answer=SHIP_ANY_CONSUMER),
    case("ship-one-transaction", "commits the mark, then ships: a failed shipment keeps its mark",
         answer=SHIP_TWO_STEPS),
    case("ship-returns", "returns the RETURNING row instead of a bool",
         ("            return False\n", "            return marked\n"),
         ("    return True\n", "    return marked\n")),
    # ------------------------------------------------------------------ task 2
    case("order-row", "stores a quantity of 1 whatever was ordered",
         ("            (order_id, item, quantity),\n", "            (order_id, item, 1),\n")),
    case("event-id", "the order id alone as the event id",
         ('                f"order-{order_id}",\n', "                str(order_id),\n")),
    case("event-type", "a snake-case event type",
         ("VALUES (%s, 'OrderPlaced', %s)", "VALUES (%s, 'order_placed', %s)")),
    case("event-payload", "leaves the quantity out of the payload",
         ('json.dumps({"order_id": order_id, "item": item, "quantity": quantity})',
          'json.dumps({"order_id": order_id, "item": item})')),
    case("event-unpublished", "stamps published_at when writing the row",
         ('"INSERT INTO outbox (event_id, event_type, payload) VALUES (%s, \'OrderPlaced\', %s)"',
          '"INSERT INTO outbox (event_id, event_type, payload, published_at) '
          'VALUES (%s, \'OrderPlaced\', %s, now())"')),
    case("order-one-transaction", "two autocommitted inserts: the order stays when the event fails",
         answer=PLACE_TWO_STEPS),
    case("order-returns", "returns the order id",
         ('    return f"order-{order_id}"\n', "    return order_id\n")),
    case("order-no-publish", "also publishes the event at once (dual-write)",
         ('    return f"order-{order_id}"\n',
          '    bus.publish("OrderPlaced", {"order_id": order_id, "item": item, '
          '"quantity": quantity}, event_id=f"order-{order_id}")\n'
          '    return f"order-{order_id}"\n')),
    # ------------------------------------------------------------------ task 3
    case("relay-unsent", "selects every row, sent or not",
         ("FROM outbox WHERE published_at IS NULL ", "FROM outbox ")),
    case("relay-oldest", "no ORDER BY: rows come in the table's physical order",
         ('"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"', '"LIMIT %s FOR UPDATE SKIP LOCKED"')),
    case("relay-batch", "ignores batch: publishes every unsent row",
         ('"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",\n            (batch,),',
          '"ORDER BY id FOR UPDATE SKIP LOCKED",')),
    case("relay-skip-locked", "FOR UPDATE without SKIP LOCKED: waits for the other relay",
         ("FOR UPDATE SKIP LOCKED", "FOR UPDATE")),
    case("relay-publish", "lets the bus invent a new event id",
         ("bus.publish(event_type, payload, event_id=event_id)", "bus.publish(event_type, payload)")),
    case("relay-mark", "never marks the rows sent",
         ('        conn.execute(\n            "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", '
          "([row[0] for row in rows],)\n        )\n", "")),
    case("relay-returns", "returns nothing",
         ("    return len(rows)\n", "    return None\n")),
    case("relay-publish-first", "marks the rows sent (and commits) before publishing them",
         answer=RELAY_MARK_FIRST),
    # ------------------------------------------------------------------ task 4
    case("claim-idle", "claims everything pending, however recently delivered",
         ("r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, start_id=cursor)",
          "r.xautoclaim(STREAM, GROUP, consumer, 0, start_id=cursor)")),
    case("claim-pages", "one XAUTOCLAIM call: at most 100 entries", answer=CLAIM_ONE_PAGE),
    case("claim-pages", "restarts every XAUTOCLAIM from the beginning (never ends)",
         ("r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, start_id=cursor)",
          "r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms)")),
    case("claim-returns", "puts each new page before the pages claimed earlier",
         ("        claimed += entries\n", "        claimed = entries + claimed\n")),
    # ------------------------------------------------------------------ task 5
    case("rescue-threshold", "dead-letters after MAX_DELIVERIES - 1 deliveries",
         ('if pending["times_delivered"] > MAX_DELIVERIES:',
          'if pending["times_delivered"] >= MAX_DELIVERIES:')),
    case("rescue-dead-letter", "acks the poison entry without keeping it anywhere",
         ("r.pipeline().xadd(DEAD_LETTER, fields).xack(STREAM, GROUP, entry_id).execute()",
          "r.xack(STREAM, GROUP, entry_id)")),
    case("rescue-dead-unhandled", "tries the poison entry one last time before dead-lettering it",
         ("            r.pipeline().xadd(DEAD_LETTER",
          "            with contextlib.suppress(Exception):\n"
          "                handle_entry(entry_id, fields)\n"
          "            r.pipeline().xadd(DEAD_LETTER")),
    case("rescue-handle", "acks the claimed entries without handling them",
         ("            handle_entry(entry_id, fields)\n", "            pass\n")),
    case("rescue-ack", "handles the entries but never acks them",
         ("        r.xack(STREAM, GROUP, entry_id)\n        handled", "        handled")),
    case("rescue-keep-failed", "acks an entry whose handler raised",
         ("        except Exception:\n            continue\n",
          "        except Exception:\n            pass\n")),
    case("rescue-returns", "returns the event ids instead of the entry ids",
         ("        handled.append(entry_id)", '        handled.append(fields["event_id"])')),
    # ------------------------------------------------------------------ task 6
    case("saga-in-order", "runs the steps last first",
         ("    for name, action, compensation in steps:", "    for name, action, compensation in reversed(steps):")),
    case("saga-stop", "carries on after a failed step, compensating at the end", answer=SAGA_NO_STOP),
    case("saga-completed-only", "also compensates the step that failed",
         ("        try:\n            action()\n", "        done.append((name, compensation))\n        try:\n            action()\n"),
         ("        done.append((name, compensation))\n    return", "    return")),
    case("saga-reverse", "compensates oldest first", answer=SAGA_FORWARD),
    case("saga-skip-none", "calls every compensation, None included",
         ("                if undo is not None:\n                    undo()\n                    undone.append(done_name)\n",
          "                undo()\n                undone.append(done_name)\n")),
    case("saga-compensated-result", "lists every completed step as compensated, with or without compensation",
         ("                if undo is not None:\n                    undo()\n                    undone.append(done_name)\n",
          "                if undo is not None:\n                    undo()\n                undone.append(done_name)\n")),
    case("saga-completed-result", "reports success as status ok",
         ('    return {"status": "completed", "failed": None, "compensated": []}',
          '    return {"status": "ok", "failed": None, "compensated": []}')),
    # ------------------------------------------------------------------ outside review
    case("ship-concurrent", "checks for the mark, then ships and marks ON CONFLICT DO NOTHING: two deliveries at once both ship", answer=OUTSIDE["w1c_check_then_act"], source="outside review"),
    case("order-one-transaction", "two autocommitted inserts, outbox first: a refused order leaves its event", answer=OUTSIDE["w2b_separate_outbox_first"], source="outside review"),
    case("relay-oldest", "orders by event_id: 'order-10' comes before 'order-8'", answer=OUTSIDE["w3f_order_by_event_id"], source="outside review"),
    case("relay-lock-batch", "locks every unsent row and publishes fetchmany(batch): a second relay finds nothing", answer=OUTSIDE["w3q_lock_all_slice"], source="outside review"),
    case("claim-pages", "stops at the first empty page, before the cursor is 0-0", answer=OUTSIDE["w4c_stop_on_short_page"], source="outside review"),
    case("claim-pages", "stops at the first page shorter than COUNT", answer=OUTSIDE["w4f_count_small_pages"], source="outside review"),
    case("claim-pages", "one XAUTOCLAIM with COUNT 10000", answer=OUTSIDE["w4j_one_big_call"], source="outside review"),
    case("rescue-dead-letter", "adds original_id and deliveries to the dead-lettered fields", answer=OUTSIDE["w5d_fields_changed"], source="outside review"),
    case("rescue-atomic", "XADD then XACK, two round trips: a crash between leaves the entry in both streams", answer=OUTSIDE["w5e_no_multi"], source="outside review"),
    case("rescue-own-count", "reads the delivery count of the group's first pending entry for every entry", answer=OUTSIDE["w5g_wrong_pending_range"], source="outside review"),
    case("rescue-go-on", "stops at the first entry whose handler raised", answer=OUTSIDE["w5h_break_on_failure"], source="outside review"),
    case("rescue-any-exception", "catches ValueError only", answer=OUTSIDE["w5i_catch_valueerror_only"], source="outside review"),
    case("rescue-threshold", "compares with 3 instead of MAX_DELIVERIES", answer=OUTSIDE["w5p_hardcoded_3"], source="outside review"),
    case("saga-any-exception", "catches StepFailed only", answer=OUTSIDE["w6d_catch_stepfailed_only"], source="outside review"),
    # ------------------------------------------------------------------ let it raise
    case("ship-raises", "returns False when the shipment fails (rolled back, but the caller thinks it was a duplicate)",
         answer=SHIP_SWALLOWS),
    case("order-raises", "returns the event id when the transaction failed", answer=PLACE_SWALLOWS),
    case("relay-raises", "returns 0 when publishing failed", answer=RELAY_SWALLOWS),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "ship_once checks the mark with SELECT ... FOR UPDATE-free ON CONFLICT, via rowcount",
        "notebook": NB,
        "answers": {
            SHIP: """def ship_once(conn, message) -> bool:
    with conn.transaction():
        cursor = conn.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s) "
            "ON CONFLICT (consumer, message_id) DO NOTHING",
            (CONSUMER, message.event_id),
        )
        if cursor.rowcount == 0:
            return False
        conn.execute(
            "INSERT INTO shipments (order_id, event_id) VALUES (%s, %s)",
            (message.data["order_id"], message.event_id),
        )
        return True
"""
        },
    },
    {
        "name": "relay_once marks each row right after publishing it, in the same transaction",
        "notebook": NB,
        "answers": {
            RELAY: """def relay_once(conn, bus, batch: int = 100) -> int:
    count = 0
    with conn.transaction():
        for row_id, event_id, event_type, payload in conn.execute(
            "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall():
            bus.publish(event_type, payload, event_id=event_id)
            conn.execute("UPDATE outbox SET published_at = now() WHERE id = %s", (row_id,))
            count += 1
    return count
"""
        },
    },
    {
        "name": "run_saga keeps a stack of compensations and pops it",
        "notebook": NB,
        "answers": {
            SAGA: """def run_saga(steps) -> dict:
    stack = []
    for name, action, compensation in steps:
        try:
            action()
        except Exception:
            undone = []
            while stack:
                done_name, undo = stack.pop()
                if undo:
                    undo()
                    undone.append(done_name)
            return {"status": "compensated", "failed": name, "compensated": undone}
        stack.append((name, compensation))
    return {"status": "completed", "failed": None, "compensated": []}
"""
        },
    },
    {
        "name": "relay_once marks the rows before publishing them, in the same transaction (outside "
        "review: nothing is committed before the publishes, and a failed publish rolls the marks back)",
        "notebook": NB,
        "answers": {RELAY: OUTSIDE_ALTERNATIVES["w3b_mark_then_publish_same_txn"]},
    },
    {
        "name": "claim_stuck keeps a deleted entry's (None, None) (outside review: no entry of STREAM "
        "is ever deleted, as the task says)",
        "notebook": NB,
        "answers": {CLAIM: OUTSIDE_ALTERNATIVES["w4m_no_deleted_filter"]},
    },
]
