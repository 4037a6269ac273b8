"""04-testing: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step15-testing.ipynb"
ROLLED, AT_MOST, TRACED, RANK, KNEE, TEST = (
    "rolled_back", "at_most", "traced", "nearest_rank", "knee", "test_checkout",
)  # fmt: skip
T1, T2, T3, T4, T5 = (
    "test_rolled_back", "test_at_most", "test_traced", "test_percentiles", "test_test_checkout",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("fixture-begin", NB, ROLLED, "open a connection and begin a transaction on it", T1),
    Requirement("fixture-bind", NB, ROLLED, "bind a `Session` to that connection", T1),
    Requirement("fixture-savepoint", NB, ROLLED, 'with `join_transaction_mode="create_savepoint"`', T1),
    Requirement("fixture-rollback", NB, ROLLED, "when the block ends the outer transaction is rolled back, so nothing it committed reaches the database", T1),
    Requirement("fixture-code-rollback", NB, ROLLED, "undoes its work since its last commit only, not the test's earlier work in the same block", T1),
    Requirement("fixture-error", NB, ROLLED, "the error goes on to the caller", T1),
    Requirement("fixture-pool", NB, ROLLED, "the connection goes back to the pool", T1),
    # Task 2
    Requirement("count-sql", NB, AT_MOST, "record the SQL of every statement `engine` sends inside the block", T2),
    Requirement("count-engine", NB, AT_MOST, "event on that engine only", T2),
    Requirement("count-stop", NB, AT_MOST, "when the block ends, stop listening", T2),
    Requirement("count-stop-raised", NB, AT_MOST, "(also when it raised)", T2),
    Requirement("count-message", NB, AT_MOST, "raise `AssertionError` with a message that says how many", T2),
    Requirement("count-limit", NB, AT_MOST, "exactly `limit` is fine", T2),
    Requirement("count-through", NB, AT_MOST, "if the block itself raised, let its exception through unchanged", T2),
    # Task 3
    Requirement("span-name", NB, TRACED, "the span is called `name`", T3),
    Requirement("span-attributes", NB, TRACED, "carries the given attributes", T3),
    Requirement("span-function", NB, TRACED, "plus `code.function`", T3),
    Requirement("span-current", NB, TRACED, "it is the current span while the function runs", T3),
    Requirement("span-error", NB, TRACED, "the span records the exception and its status is `ERROR`", T3),
    Requirement("span-raise", NB, TRACED, "and the exception goes on to the caller", T3),
    Requirement("span-return", NB, TRACED, "the function's return value is returned", T3),
    Requirement("span-wraps", NB, TRACED, "the decorated function keeps its name and docstring", T3),
    # Task 4
    Requirement("rank-sort", NB, RANK, "sort the values", T4),
    Requirement("rank-position", NB, RANK, "take the one at position `ceil(q / 100 × n)` (counting from 1)", T4),
    Requirement("rank-measured", NB, RANK, "so the result is always one of the measured values", T4),
    Requirement("rank-errors", NB, RANK, "For an empty list, or `q` outside `0 < q <= 100`, raise `ValueError`", T4),
    Requirement("knee-aggregated", NB, KNEE, "read only the lines whose `Name` is `Aggregated`", T4),
    Requirement("knee-na", NB, KNEE, "skip lines whose `95%` is `N/A`", T4),
    Requirement("knee-last", NB, KNEE, "for each user count take the `95%` of its last line", T4),
    Requirement("knee-numbers", NB, KNEE, "compare user counts as numbers", T4),
    Requirement("knee-baseline", NB, KNEE, "the baseline is the p95 at the smallest user count", T4),
    Requirement("knee-twice", NB, KNEE, "return the smallest user count whose p95 is at least twice the baseline", T4),
    Requirement("knee-none", NB, KNEE, "or `None` when no user count reaches it", T4),
    # Task 5
    Requirement("mock-passes", NB, TEST, "which returns normally for the setup's `checkout`", T5),
    Requirement("mock-rolled-back", NB, TEST, "run `checkout` inside `testing.rolled_back(engine)`", T5),
    Requirement("mock-autospec", NB, TEST, "with a mock of the client built from the real class", T5),
    Requirement("mock-no-network", NB, TEST, "never the real client, which calls the network", T5),
    Requirement("mock-retry", NB, TEST, "call `checkout` a second time for the same order, as a retry would", T5),
    Requirement("mock-once", NB, TEST, "assert that the client was charged exactly once over both calls", T5),
    Requirement("mock-amount", NB, TEST, "with `amount_cents=1250`", T5),
    Requirement("mock-key", NB, TEST, 'and `idempotency_key="order-1"`', T5),
    Requirement("mock-status", NB, TEST, "assert that order 1's status is `paid`, read again from the database with a query", T5),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): [
        "The code under test calls `session.commit()`.",
        "Complete the context manager `rolled_back(engine)`",
    ],
    (NB, "task2"): ["Complete the context manager `at_most(engine, limit)`"],
    (NB, "task3"): [
        "Complete the decorator factory",
        "runs, at each call, inside a span of `tracer`",
    ],
    (NB, "task4"): [
        "Complete `nearest_rank(values, q)`",
        "`path` is a load test's history",
        "Return the user count at which latency broke",
    ],
    (NB, "task5"): [
        "`checkout(session, order_id, payments)` (in the setup) charges a pending order",
        "Grading runs your test against the setup's `checkout` and against broken versions of it.",
    ],
}

# ------------------------------------------------------------------ right answers, by parts


def rolled_cell(connect="engine.connect()", begin="connection.begin()",
                session='Session(bind=connection, join_transaction_mode="create_savepoint")') -> str:  # fmt: skip
    return (
        "@contextlib.contextmanager\n"
        "def rolled_back(engine):\n"
        f"    with {connect} as connection:\n"
        f"        {begin}\n"
        f"        with {session} as session:\n"
        "            yield session\n"
    )


def explicit_rolled_cell(guarded=True, swallow=False) -> str:
    body = "        yield session\n"
    if swallow:
        body = "        yield session\n    except Exception:\n        pass\n"
    return (
        "@contextlib.contextmanager\n"
        "def rolled_back(engine):\n"
        "    connection = engine.connect()\n"
        "    transaction = connection.begin()\n"
        '    session = Session(bind=connection, join_transaction_mode="create_savepoint")\n'
        + (
            ("    try:\n" + body + "    finally:\n")
            if guarded or swallow
            else "    yield session\n    if True:\n"
        )
        + "        session.close()\n        transaction.rollback()\n        connection.close()\n"
    )


def at_most_cell(record="statements.append(statement)", target="engine", finally_=True,
                 remove='event.remove({target}, "before_cursor_execute", record)',
                 check="len(statements) > limit",
                 message='f"{len(statements)} statements were sent, at most {limit} expected"',
                 check_in_finally=False) -> str:  # fmt: skip
    remove = remove.format(target=target)
    verdict = f"    if {check}:\n        raise AssertionError({message})\n"
    if check_in_finally:
        tail = (
            f"    try:\n        yield statements\n    finally:\n        {remove}\n"
            + verdict.replace("\n    ", "\n        ").replace("    if", "        if", 1)
        )
    elif finally_:
        tail = f"    try:\n        yield statements\n    finally:\n        {remove}\n" + verdict
    else:
        tail = f"    yield statements\n    {remove}\n" + verdict
    return (
        "@contextlib.contextmanager\n"
        "def at_most(engine, limit):\n"
        "    statements = []\n\n"
        "    def record(conn, cursor, statement, parameters, context, executemany):\n"
        f"        {record}\n\n"
        f'    event.listen({target}, "before_cursor_execute", record)\n' + tail
    )


def traced_cell(start="tracer.start_as_current_span", span_name="name",
                attributes='{**attributes, "code.function": function.__name__}', options="",
                call="return function(*args, **kwargs)", wraps="@functools.wraps(function)\n        ") -> str:  # fmt: skip
    return (
        "def traced(name, **attributes):\n"
        "    def decorate(function):\n"
        f"        {wraps}def wrapper(*args, **kwargs):\n"
        f"            with {start}({span_name}, attributes={attributes}{options}):\n"
        f"                {call}\n\n"
        "        return wrapper\n\n"
        "    return decorate\n"
    )


def rank_cell(guard="not values or not 0 < q <= 100", ordered="sorted(values)",
              at="math.ceil(q / 100 * len(ordered)) - 1") -> str:  # fmt: skip
    return (
        "def nearest_rank(values, q):\n"
        f"    if {guard}:\n"
        '        raise ValueError("need values and 0 < q <= 100")\n'
        f"    ordered = {ordered}\n"
        f"    return ordered[{at}]\n"
    )


def knee_cell(keep='line["Name"] == "Aggregated" and line["95%"] != "N/A"',
              store='p95[int(line["User Count"])] = float(line["95%"])',
              counts="sorted(p95)", baseline="p95[counts[0]]", reaches="p95[users] >= 2 * baseline",
              returned="next((users for users in counts if {reaches}), None)") -> str:  # fmt: skip
    return (
        "def knee(path):\n"
        "    p95 = {}\n"
        '    with open(path, newline="") as file:\n'
        "        for line in csv.DictReader(file):\n"
        f"            if {keep}:\n"
        f"                {store}\n"
        f"    counts = {counts}\n"
        f"    baseline = {baseline}\n"
        f"    return {returned.format(reaches=reaches)}\n"
    )


def test_cell(payments="mock.create_autospec(PaymentClient, instance=True)",
              fixture="testing.rolled_back(engine)", calls="checkout(session, 1, payments)\n        checkout(session, 1, payments)",
              status="session.scalar(select(Order.status).where(Order.id == 1))",
              verdict='status == "paid" and payments.charge.mock_calls == [mock.call(amount_cents=1250, idempotency_key="order-1")]') -> str:  # fmt: skip
    return (
        "def test_checkout(checkout):\n"
        f"    payments = {payments}\n"
        f"    with {fixture} as session:\n"
        f"        {calls}\n"
        f"        status = {status}\n"
        f"    assert {verdict}, (status, payments.charge.mock_calls)\n"
    )


INTERPOLATED = (
    "def nearest_rank(values, q):\n"
    "    if not values or not 0 < q <= 100:\n"
    '        raise ValueError("need values and 0 < q <= 100")\n'
    "    ordered = sorted(values)\n"
    "    at = (len(ordered) - 1) * q / 100\n"
    "    low = math.floor(at)\n"
    "    high = min(low + 1, len(ordered) - 1)\n"
    "    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)\n"
)


def case(name, breaks, answer, source, loses, origin="course"):
    answers = source if isinstance(source, dict) else {answer: source}
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": answers,
            "loses": [loses], "source": origin}  # fmt: skip


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    # WRONG: listens on the Engine class, so statements of every engine (not only `engine`) are recorded
    "at_most_all_engines": """@contextlib.contextmanager
def at_most(engine, limit):
    from sqlalchemy.engine import Engine

    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    if len(statements) > limit:
        raise AssertionError(f"{len(statements)} statements, more than {limit}")
""",
    # WRONG: checks the count in `finally`, so when the block raised after too many statements its own exception is replaced by the AssertionError
    "at_most_masks_error": """@contextlib.contextmanager
def at_most(engine, limit):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
        if len(statements) > limit:
            raise AssertionError(f"{len(statements)} statements, more than {limit}")
""",
    # WRONG: the AssertionError's message does not say how many statements were sent
    "at_most_no_count": """@contextlib.contextmanager
def at_most(engine, limit):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
    if len(statements) > limit:
        raise AssertionError("too many statements: N+1?")
""",
    # WRONG: removes the listener only when the block ends normally: after a block that raised, every later statement is still recorded
    "at_most_no_finally": """@contextlib.contextmanager
def at_most(engine, limit):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)
    if len(statements) > limit:
        raise AssertionError(f"{len(statements)} statements, more than {limit}")
""",
    # WRONG: accepts q = 0 (only q > 100 raises): nearest_rank(values, 0) returns the largest value through index -1
    "percentiles_accepts_zero": """def nearest_rank(values, q):
    if not values or q > 100:
        raise ValueError("empty values or q above 100")
    ordered = sorted(values)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]
""",
    # correct alternative: statistics-free nearest rank via integer arithmetic (-(-q*n // 100)), knee via one pass over sorted (users, p95) pairs
    "percentiles_correct_alternative__nearest_rank": """def nearest_rank(values, q):
    values = list(values)
    if len(values) == 0:
        raise ValueError("no values")
    if q <= 0 or q > 100:
        raise ValueError(f"q={q} is outside 0 < q <= 100")
    rank = math.ceil(q * len(values) / 100)
    return sorted(values)[rank - 1]
""",
    # correct alternative: statistics-free nearest rank via integer arithmetic (-(-q*n // 100)), knee via one pass over sorted (users, p95) pairs
    "percentiles_correct_alternative__knee": """def knee(path):
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["Name"] == "Aggregated" and row["95%"] != "N/A"]
    p95 = dict((int(row["User Count"]), float(row["95%"])) for row in rows)  # later lines win
    pairs = sorted(p95.items())
    if not pairs:
        return None
    baseline = pairs[0][1]
    return next((users for users, value in pairs if value >= 2 * baseline), None)
""",
    # WRONG: takes the FIRST line of each user count (setdefault), not its last
    "percentiles_knee_first_line": """def knee(path):
    first = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != "Aggregated" or row["95%"] == "N/A":
                continue
            first.setdefault(int(row["User Count"]), float(row["95%"]))
    if not first:
        return None
    counts = sorted(first)
    baseline = first[counts[0]]
    for users in counts:
        if first[users] >= 2 * baseline:
            return users
    return None
""",
    # WRONG: knee compares each user count with the previous one (the knee against the wrong baseline), not with the smallest user count
    "percentiles_knee_previous_step": """def knee(path):
    last = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != "Aggregated" or row["95%"] == "N/A":
                continue
            last[int(row["User Count"])] = float(row["95%"])
    counts = sorted(last)
    for before, users in zip(counts, counts[1:]):
        if last[users] >= 2 * last[before]:
            return users
    return None
""",
    # WRONG: "over twice" (>) instead of "at least twice" (>=): a p95 of exactly twice the baseline is not the knee
    "percentiles_knee_strictly_over": """def knee(path):
    last = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != "Aggregated" or row["95%"] == "N/A":
                continue
            last[int(row["User Count"])] = float(row["95%"])
    if not last:
        return None
    counts = sorted(last)
    baseline = last[counts[0]]
    for users in counts:
        if last[users] > 2 * baseline:
            return users
    return None
""",
    # WRONG: user counts kept as strings: "100" sorts before "20", so the baseline and the first count past it are wrong
    "percentiles_knee_string_counts": """def knee(path):
    last = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != "Aggregated" or row["95%"] == "N/A":
                continue
            last[row["User Count"]] = float(row["95%"])
    if not last:
        return None
    counts = sorted(last)
    baseline = last[counts[0]]
    for users in counts:
        if last[users] >= 2 * baseline:
            return int(users)
    return None
""",
    # WRONG: rounds the rank to the nearest integer instead of ceil (the 90th percentile of 15 values is then the 13th, not the 14th)
    "percentiles_round_rank": """def nearest_rank(values, q):
    if not values or not 0 < q <= 100:
        raise ValueError("empty values or q outside (0, 100]")
    ordered = sorted(values)
    return ordered[max(round(q / 100 * len(ordered)), 1) - 1]
""",
    # WRONG: no try/finally around the yield: when the block raises, the connection is never closed (it stays checked out of the pool, its transaction open)
    "rolled_back_no_finally": """@contextlib.contextmanager
def rolled_back(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    transaction.rollback()
    connection.close()
""",
    # WRONG: no join_transaction_mode="create_savepoint": the code's session.rollback() rolls back the whole outer transaction, the test's earlier work included
    "rolled_back_no_savepoint": """@contextlib.contextmanager
def rolled_back(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection)
    try:
        yield session
    finally:
        session.close()
        if transaction.is_active:
            transaction.rollback()
        connection.close()
""",
    # WRONG: catches the block's exception to roll back and never re-raises it: the test's failure disappears
    "rolled_back_swallows": """@contextlib.contextmanager
def rolled_back(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    except Exception:
        pass
    finally:
        session.close()
        transaction.rollback()
        connection.close()
""",
    # WRONG: asserts the charge happened once but not with which amount and key
    "test_checkout_called_once_only": """def test_checkout(checkout):
    payments = mock.create_autospec(PaymentClient, instance=True)
    with testing.rolled_back(engine) as session:
        checkout(session, 1, payments)
        checkout(session, 1, payments)
        payments.charge.assert_called_once()
        status = session.scalar(select(Order.status).where(Order.id == 1))
        assert status == "paid", f"order 1 is {status!r}"
""",
    # WRONG: calls checkout only once, so a checkout that charges again on a retry passes
    "test_checkout_no_retry": """def test_checkout(checkout):
    payments = mock.create_autospec(PaymentClient, instance=True)
    with testing.rolled_back(engine) as session:
        checkout(session, 1, payments)
        payments.charge.assert_called_once_with(amount_cents=1250, idempotency_key="order-1")
        status = session.scalar(select(Order.status).where(Order.id == 1))
        assert status == "paid", f"order 1 is {status!r}"
""",
    # WRONG: a plain mock.Mock() (accepts any method and any arguments) instead of create_autospec of the real class
    "test_checkout_plain_mock": """def test_checkout(checkout):
    payments = mock.Mock()
    with testing.rolled_back(engine) as session:
        checkout(session, 1, payments)
        checkout(session, 1, payments)
        payments.charge.assert_called_once_with(amount_cents=1250, idempotency_key="order-1")
        status = session.scalar(select(Order.status).where(Order.id == 1))
        assert status == "paid", f"order 1 is {status!r}"
""",
    # WRONG: runs checkout in a plain Session(engine), so order 1 stays paid in the database after the test
    "test_checkout_real_session": """def test_checkout(checkout):
    payments = mock.create_autospec(PaymentClient, instance=True)
    with Session(engine) as session:
        checkout(session, 1, payments)
        checkout(session, 1, payments)
        payments.charge.assert_called_once_with(amount_cents=1250, idempotency_key="order-1")
        status = session.scalar(select(Order.status).where(Order.id == 1))
        assert status == "paid", f"order 1 is {status!r}"
""",
    # WRONG: reads the status from the object checkout returned, not from the database
    "test_checkout_returned_object": """def test_checkout(checkout):
    payments = mock.create_autospec(PaymentClient, instance=True)
    with testing.rolled_back(engine) as session:
        checkout(session, 1, payments)
        order = checkout(session, 1, payments)
        payments.charge.assert_called_once_with(amount_cents=1250, idempotency_key="order-1")
        assert order.status == "paid", f"order 1 is {order.status!r}"
""",
    # WRONG: no functools.wraps: the decorated function is called "wrapper" and loses its docstring
    "traced_no_wraps": """def traced(name, **attributes):
    def decorator(function):
        def wrapper(*args, **kwargs):
            with tracer.start_as_current_span(name, attributes={**attributes, "code.function": function.__name__}):
                return function(*args, **kwargs)

        return wrapper

    return decorator
""",
    # WRONG: start_span (not current) and end() without try/finally: spans started inside are not its children, and on an error the span is never ended
    "traced_not_current": """def traced(name, **attributes):
    def decorator(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            span = tracer.start_span(name, attributes={**attributes, "code.function": function.__name__})
            result = function(*args, **kwargs)
            span.end()
            return result

        return wrapper

    return decorator
""",
    # WRONG: code.function is the __qualname__ ("outer.<locals>.f" for a nested function), not the __name__
    "traced_qualname": """def traced(name, **attributes):
    def decorator(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with tracer.start_as_current_span(name, attributes={**attributes, "code.function": function.__qualname__}):
                return function(*args, **kwargs)

        return wrapper

    return decorator
""",
    # WRONG: records the exception and sets ERROR but returns None instead of letting the exception go on to the caller
    "traced_swallows": """def traced(name, **attributes):
    def decorator(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with tracer.start_as_current_span(
                name, attributes={**attributes, "code.function": function.__name__},
                record_exception=False, set_status_on_exception=False,
            ) as span:
                try:
                    return function(*args, **kwargs)
                except Exception as error:
                    span.record_exception(error)
                    span.set_status(StatusCode.ERROR)
                    return None

        return wrapper

    return decorator
""",
}


CASES = [
    # ------------------------------------------------------------------ task 1
    case("no outer transaction: the code's commit is real", "fixture-begin", ROLLED, rolled_cell(begin="pass"), T1),
    case("a session of its own on the engine", "fixture-bind", ROLLED,
         rolled_cell(session='Session(bind=engine, join_transaction_mode="create_savepoint")'), T1),
    case("the default join mode: the code's rollback undoes the test's transaction", "fixture-savepoint", ROLLED,
         rolled_cell(session="Session(bind=connection)"), T1),
    case("engine.begin(): the outer transaction commits at the end", "fixture-rollback", ROLLED,
         rolled_cell(connect="engine.begin()", begin="pass"), T1),
    case("rollback_only: the code's rollback takes the test's work with it", "fixture-code-rollback", ROLLED,
         rolled_cell(session='Session(bind=connection, join_transaction_mode="rollback_only")'), T1),
    case("the test's error swallowed", "fixture-error", ROLLED, explicit_rolled_cell(swallow=True), T1),
    case("no try/finally: a block that raises keeps its connection", "fixture-pool", ROLLED,
         explicit_rolled_cell(guarded=False), T1),
    # ------------------------------------------------------------------ task 2
    case("records the parameters, not the SQL", "count-sql", AT_MOST,
         at_most_cell(record="statements.append(str(parameters))"), T2),
    case("listens on every engine", "count-engine", AT_MOST, at_most_cell(target="Engine").replace(
        "def at_most", "from sqlalchemy.engine import Engine\n\n\n@contextlib.contextmanager\ndef at_most").replace(
        "@contextlib.contextmanager\nfrom", "from"), T2),
    case("never stops listening", "count-stop", AT_MOST, at_most_cell(remove="pass"), T2),
    case("stops listening only when the block did not raise", "count-stop-raised", AT_MOST,
         at_most_cell(finally_=False), T2),
    case("an AssertionError without the count", "count-message", AT_MOST,
         at_most_cell(message='"too many statements: an N+1?"'), T2),
    case("the limit itself fails", "count-limit", AT_MOST, at_most_cell(check="len(statements) >= limit"), T2),
    case("the count checked in finally: the block's error is replaced", "count-through", AT_MOST,
         at_most_cell(check_in_finally=True), T2),
    # ------------------------------------------------------------------ task 3
    case("the span named after the function", "span-name", TRACED, traced_cell(span_name="function.__name__"), T3),
    case("code.function only", "span-attributes", TRACED,
         traced_cell(attributes='{"code.function": function.__name__}'), T3),
    case("no code.function", "span-function", TRACED, traced_cell(attributes="attributes"), T3),
    case("start_span: not the current span", "span-current", TRACED, traced_cell(start="tracer.start_span"), T3),
    case("exceptions neither recorded nor an error", "span-error", TRACED,
         traced_cell(options=", record_exception=False, set_status_on_exception=False"), T3),
    case("the exception swallowed", "span-raise", TRACED,
         traced_cell(call="try:\n                    return function(*args, **kwargs)\n"
                          "                except Exception as error:\n"
                          "                    trace.get_current_span().record_exception(error)\n"
                          "                    trace.get_current_span().set_status(StatusCode.ERROR)").replace(
             "def traced", "from opentelemetry import trace\n\n\ndef traced"), T3),
    case("the value dropped", "span-return", TRACED, traced_cell(call="function(*args, **kwargs)"), T3),
    case("no functools.wraps", "span-wraps", TRACED, traced_cell(wraps=""), T3),
    # ------------------------------------------------------------------ task 4
    case("the values as given, unsorted", "rank-sort", RANK, rank_cell(ordered="list(values)"), T4),
    case("round instead of ceil", "rank-position", RANK, rank_cell(at="max(0, round(q / 100 * len(ordered)) - 1)"), T4),
    case("int() truncates the rank", "rank-position", RANK, rank_cell(at="int(q / 100 * len(ordered))"), T4),
    case("interpolated between neighbours", "rank-measured", RANK,
         INTERPOLATED, T4),
    case("q = 0 and q over 100 accepted", "rank-errors", RANK, rank_cell(guard="not values"), T4),
    case("every line, not only the aggregate", "knee-aggregated", KNEE,
         knee_cell(keep='line["95%"] != "N/A"'), T4),
    case("N/A read as 0", "knee-na", KNEE,
         knee_cell(keep='line["Name"] == "Aggregated"',
                   store='p95[int(line["User Count"])] = 0.0 if line["95%"] == "N/A" else float(line["95%"])'), T4),
    case("the first line of each user count", "knee-last", KNEE,
         knee_cell(store='p95.setdefault(int(line["User Count"]), float(line["95%"]))'), T4),
    case("user counts compared as text", "knee-numbers", KNEE,
         knee_cell(store='p95[line["User Count"]] = float(line["95%"])',
                   returned="next((int(users) for users in counts if {reaches}), None)"), T4),
    case("the lowest p95 as the baseline", "knee-baseline", KNEE, knee_cell(baseline="min(p95.values())"), T4),
    case("more than twice, not at least", "knee-twice", KNEE, knee_cell(reaches="p95[users] > 2 * baseline"), T4),
    case("the largest user count when nothing breaks", "knee-none", KNEE,
         knee_cell(returned="next((users for users in counts if {reaches}), counts[-1])"), T4),
    # ------------------------------------------------------------------ task 5
    case("expects the order still pending", "mock-passes", TEST,
         test_cell(verdict='status == "pending"'), T5),
    case("a session that really commits", "mock-rolled-back", TEST,
         test_cell(fixture="Session(engine)"), T5),
    case("a plain Mock: a method the real client lacks goes unnoticed", "mock-autospec", TEST,
         test_cell(payments="mock.Mock()"), T5),
    case("the real client", "mock-no-network", TEST, test_cell(payments="PaymentClient()"), T5),
    case("one call only: a retry that charges again passes", "mock-retry", TEST,
         test_cell(calls="checkout(session, 1, payments)"), T5),
    case("assert_called_with: the last call only", "mock-once", TEST,
         test_cell(verdict='status == "paid"',
                   status='session.scalar(select(Order.status).where(Order.id == 1))\n'
                          '        payments.charge.assert_called_with(amount_cents=1250, idempotency_key="order-1")'), T5),
    case("the key checked, not the amount", "mock-amount", TEST,
         test_cell(verdict='status == "paid" and payments.charge.call_count == 1 and '
                           'payments.charge.call_args.kwargs["idempotency_key"] == "order-1"'), T5),
    case("the amount checked, not the key", "mock-key", TEST,
         test_cell(verdict='status == "paid" and payments.charge.call_count == 1 and '
                           'payments.charge.call_args.kwargs["amount_cents"] == 1250'), T5),
    case("the returned object's status", "mock-status", TEST,
         test_cell(calls="checkout(session, 1, payments)\n        order = checkout(session, 1, payments)",
                   status="order.status"), T5),
    # ------------------------------------------------------------------ outside review
    case("no join mode: the code's rollback takes the test's work", "fixture-savepoint", ROLLED,
         OUTSIDE["rolled_back_no_savepoint"], T1, origin="outside review"),
    case("no try/finally around the yield", "fixture-pool", ROLLED,
         OUTSIDE["rolled_back_no_finally"], T1, origin="outside review"),
    case("except Exception: pass", "fixture-error", ROLLED,
         OUTSIDE["rolled_back_swallows"], T1, origin="outside review"),
    case("event.remove after the yield, not in finally", "count-stop-raised", AT_MOST,
         OUTSIDE["at_most_no_finally"], T2, origin="outside review"),
    case("listens on the Engine class", "count-engine", AT_MOST,
         OUTSIDE["at_most_all_engines"], T2, origin="outside review"),
    case("the count checked inside finally", "count-through", AT_MOST,
         OUTSIDE["at_most_masks_error"], T2, origin="outside review"),
    case("a message without the count", "count-message", AT_MOST,
         OUTSIDE["at_most_no_count"], T2, origin="outside review"),
    case("no functools.wraps", "span-wraps", TRACED, OUTSIDE["traced_no_wraps"], T3, origin="outside review"),
    case("start_span and end() without try/finally", "span-current", TRACED,
         OUTSIDE["traced_not_current"], T3, origin="outside review"),
    case("code.function is the __qualname__", "span-function", TRACED,
         OUTSIDE["traced_qualname"], T3, origin="outside review"),
    case("records the error and returns None", "span-raise", TRACED,
         OUTSIDE["traced_swallows"], T3, origin="outside review"),
    case("round(rank), at least 1", "rank-position", RANK,
         OUTSIDE["percentiles_round_rank"], T4, origin="outside review"),
    case("q = 0 accepted (index -1: the largest value)", "rank-errors", RANK,
         OUTSIDE["percentiles_accepts_zero"], T4, origin="outside review"),
    case("each user count against the previous one", "knee-baseline", KNEE,
         OUTSIDE["percentiles_knee_previous_step"], T4, origin="outside review"),
    case("user counts kept as strings", "knee-numbers", KNEE,
         OUTSIDE["percentiles_knee_string_counts"], T4, origin="outside review"),
    case("the first line of each user count (setdefault)", "knee-last", KNEE,
         OUTSIDE["percentiles_knee_first_line"], T4, origin="outside review"),
    case("over twice (>), not at least twice", "knee-twice", KNEE,
         OUTSIDE["percentiles_knee_strictly_over"], T4, origin="outside review"),
    case("a plain mock.Mock()", "mock-autospec", TEST,
         OUTSIDE["test_checkout_plain_mock"], T5, origin="outside review"),
    case("assert_called_once(): neither amount nor key checked", "mock-amount", TEST,
         OUTSIDE["test_checkout_called_once_only"], T5, origin="outside review"),
    case("one call of checkout, no retry", "mock-retry", TEST,
         OUTSIDE["test_checkout_no_retry"], T5, origin="outside review"),
    case("the returned object's status", "mock-status", TEST,
         OUTSIDE["test_checkout_returned_object"], T5, origin="outside review"),
    case("a plain Session(engine): order 1 stays paid", "mock-rolled-back", TEST,
         OUTSIDE["test_checkout_real_session"], T5, origin="outside review"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "the fixture with explicit try/finally; a counter class; a span with explicit "
        "error handling; a percentile with an index loop; pandas-free CSV reading with a sort "
        "by user count; a test with assert_called_once_with",
        "notebook": NB,
        "answers": {
            ROLLED: explicit_rolled_cell(),
            AT_MOST: (
                "@contextlib.contextmanager\n"
                "def at_most(engine, limit):\n"
                "    seen = []\n"
                "    listener = lambda conn, cursor, statement, *rest: seen.append(statement)\n"
                "    event.listen(engine, 'before_cursor_execute', listener)\n"
                "    try:\n"
                "        yield seen\n"
                "    except BaseException:\n"
                "        event.remove(engine, 'before_cursor_execute', listener)\n"
                "        raise\n"
                "    event.remove(engine, 'before_cursor_execute', listener)\n"
                "    assert len(seen) <= limit, f'{len(seen)} statements (limit {limit}): an N+1?'\n"
            ),
            TRACED: (
                "def traced(name, **attributes):\n"
                "    def decorate(function):\n"
                "        @functools.wraps(function)\n"
                "        def wrapper(*args, **kwargs):\n"
                "            with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:\n"
                "                span.set_attributes(attributes)\n"
                "                span.set_attribute('code.function', function.__name__)\n"
                "                try:\n"
                "                    return function(*args, **kwargs)\n"
                "                except Exception as error:\n"
                "                    span.record_exception(error)\n"
                "                    span.set_status(StatusCode.ERROR, str(error))\n"
                "                    raise\n"
                "        return wrapper\n"
                "    return decorate\n"
            ),
            RANK: (
                "def nearest_rank(values, q):\n"
                "    if len(values) == 0 or q <= 0 or q > 100:\n"
                "        raise ValueError('no values, or q not in (0, 100]')\n"
                "    rank = math.ceil(len(values) * q / 100)\n"
                "    return sorted(values)[max(rank, 1) - 1]\n"
            ),
            KNEE: (
                "def knee(path):\n"
                "    with open(path, newline='') as file:\n"
                "        lines = [l for l in csv.DictReader(file) if l['Name'] == 'Aggregated' and l['95%'] != 'N/A']\n"
                "    last = {int(l['User Count']): float(l['95%']) for l in lines}\n"
                "    if not last:\n"
                "        return None\n"
                "    base = last[min(last)]\n"
                "    for users in sorted(last):\n"
                "        if last[users] >= base * 2:\n"
                "            return users\n"
                "    return None\n"
            ),
            TEST: (
                "def test_checkout(checkout):\n"
                "    client = mock.create_autospec(PaymentClient, instance=True)\n"
                "    with testing.rolled_back(engine) as session:\n"
                "        for _ in range(2):\n"
                "            checkout(session, 1, client)\n"
                "        status = session.execute(text('SELECT status FROM orders WHERE id = 1')).scalar_one()\n"
                "    client.charge.assert_called_once_with(amount_cents=1250, idempotency_key='order-1')\n"
                "    assert status == 'paid', f'order 1 is {status}'\n"
            ),
        },
    },
    {
        "name": "outside review: the rank as ceil(q * n / 100) with the checks apart; the knee by "
        "a dict of the kept lines (later lines win) and next() over the sorted pairs",
        "notebook": NB,
        "answers": {
            RANK: OUTSIDE["percentiles_correct_alternative__nearest_rank"],
            KNEE: OUTSIDE["percentiles_correct_alternative__knee"],
        },
    },
]
