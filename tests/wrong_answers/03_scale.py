"""03-scale: the requirement table of each task, and one plausible wrong answer (at least)
per requirement, which must lose exactly that requirement's test cell."""

from wrong_answers import Requirement

NB = "step13-scale.ipynb"
SHARD, ROUTE, RING, MOVED, TOPK, AVG, INSTR, P95, ALERT, REV = (
    "shard_for", "route", "ring", "moved_fraction", "merge_top_k", "merge_average", "instrument",
    "p95", "alert_states", "revenue_by_region",
)  # fmt: skip
T1, T2, T3, T4, T5, T6 = (
    "test_shard_for", "test_ring", "test_merges", "test_instrument", "test_alert",
    "test_revenue_by_region",
)  # fmt: skip

REQUIREMENTS = [
    # Task 1
    Requirement("shard-range", NB, SHARD, "the shard number (0 to `shards - 1`) of the string `key`", T1),
    Requirement("shard-sha256", NB, SHARD, "Read the first 8 bytes of the SHA-256 digest", T1),
    Requirement("shard-utf8", NB, SHARD, "of the key's UTF-8 bytes", T1),
    Requirement("shard-big-endian", NB, SHARD, "as a big-endian unsigned integer", T1),
    Requirement("shard-modulo", NB, SHARD, "take it modulo `shards`", T1),
    Requirement("shard-no-hash", NB, SHARD, "Never use Python's `hash()`", T1),
    Requirement("shard-raise", NB, SHARD, "When `shards` is less than 1, raise `ValueError`", T1),
    Requirement("route-numbers", NB, ROUTE, "a dict from every shard number (0 to `shards - 1`", T1),
    Requirement("route-empty", NB, ROUTE, "including shards that get no key", T1),
    Requirement("route-owner", NB, ROUTE, "to the list of keys it owns", T1),
    Requirement("route-order", NB, ROUTE, "in the order of `keys`", T1),
    # Task 2
    Requirement("ring-vnodes", NB, RING, "places each node at `vnodes` points of the ring", T2),
    Requirement("ring-labels", NB, RING, 'the points of node `n` are `point_of(f"{n}#{i}")`', T2),
    Requirement("ring-range", NB, RING, "for `i` from 0 to `vnodes - 1`", T2),
    Requirement("ring-at-or-after", NB, RING, "returns the node of the first point at or after `point_of(key)`", T2),
    Requirement("ring-wrap", NB, RING, "a key after the last point wraps around to the first point (the smallest)", T2),
    Requirement("ring-add", NB, RING, "`ring.add(node)` puts a new node's points on the ring", T2),
    Requirement("ring-add-twice", NB, RING, "adding a node that is already on it raises `ValueError`", T2),
    Requirement("moved-fraction", NB, MOVED, "the fraction (0 to 1) of `keys` whose node differs between the rings `before` and `after`", T2),
    # Task 3
    Requirement("topk-best", NB, TOPK, "Return a list of the best `k` rows over all shards", T3),
    Requirement("topk-order", NB, TOPK, "highest score first", T3),
    Requirement("topk-ties", NB, TOPK, "among equal scores the smaller id first", T3),
    Requirement("avg-all-rows", NB, AVG, "Return the average over all rows", T3),
    Requirement("avg-exact", NB, AVG, "exactly, as a `Fraction`", T3),
    Requirement("avg-empty-shard", NB, AVG, "a shard with no rows sends `(0, 0)`", T3),
    Requirement("avg-none", NB, AVG, "When no shard has any row, return `None`", T3),
    # Task 4
    Requirement("instr-registry", NB, INSTR, "Register on `registry` (not on prometheus_client's global registry)", T4),
    Requirement("instr-counter", NB, INSTR, "a counter named `db_queries` (exposed as `db_queries_total`)", T4),
    Requirement("instr-histogram", NB, INSTR, "a histogram named `db_query_duration_seconds`", T4),
    Requirement("instr-buckets", NB, INSTR, "with the bounds `BUCKETS`", T4),
    Requirement("instr-label", NB, INSTR, "both with one label, `operation`", T4),
    Requirement("instr-upper", NB, INSTR, "the statement's first word in upper case", T4),
    Requirement("instr-events", NB, INSTR, "with SQLAlchemy's `before_cursor_execute` and `after_cursor_execute` events", T4),
    Requirement("instr-engine-only", NB, INSTR, "on `engine` (that engine only)", T4),
    Requirement("instr-every", NB, INSTR, "count every statement the engine executes", T4),
    Requirement("instr-seconds", NB, INSTR, "observe its duration in seconds", T4),
    # Task 5
    Requirement("p95-sort", NB, P95, "sort them", T5),
    Requirement("p95-rank", NB, P95, "return the value at 1-based rank `math.ceil(0.95 * n)`", T5),
    Requirement("p95-empty", NB, P95, "An empty list raises `ValueError`.", T5),
    Requirement("alert-window", NB, ALERT, "take every latency of that tick and of the `window - 1` ticks before it", T5),
    Requirement("alert-start", NB, ALERT, "(fewer at the start)", T5),
    Requirement("alert-together", NB, ALERT, "compute the p95 of all of them together", T5),
    Requirement("alert-strict", NB, ALERT, 'give `"firing"` when it is above `threshold` (strictly), else `"ok"`', T5),
    Requirement("alert-empty", NB, ALERT, 'A window with no latency at all is `"ok"`.', T5),
    Requirement("alert-list", NB, ALERT, "Return the list of states, one per tick.", T5),
    # Task 6
    Requirement("rev-path", NB, REV, "query the Parquet file at `path` (not PostgreSQL)", T6),
    Requirement("rev-tuples", NB, REV, "return a list of tuples `(region, orders, revenue)`, one per region", T6),
    Requirement("rev-orders", NB, REV, "`orders` is its number of rows", T6),
    Requirement("rev-revenue", NB, REV, "`revenue` the sum of `quantity * price_cents`", T6),
    Requirement("rev-desc", NB, REV, "Order the list by revenue, highest first", T6),
    Requirement("rev-tie", NB, REV, "then by region name", T6),
]  # fmt: skip

CONTEXT = {
    (NB, "task1"): ["it is salted per process"],
    (NB, "task2"): ["Complete the class `Ring`."],
    (NB, "task3"): [
        "Each shard has answered the same question on its own rows",
        "`partials` holds one list per shard: that shard's best `k` rows (fewer if it has fewer)",
        "`partials` holds one `(total, count)` pair per shard",
    ],
    (NB, "task5"): [
        "Complete `alert_states(ticks, threshold, window)`.",
        "`ticks` holds one list of latencies per scrape, in time order.",
    ],
    (NB, "task6"): [
        "`SALES_PARQUET` is the path of a Parquet copy of the `sales` table.",
        "For the copy of `sales`, the list must equal what PostgreSQL answers",
    ],
}

# ------------------------------------------------------------------ cell builders


def shard_cell(
    check="shards < 1",
    digest='hashlib.sha256(key.encode("utf-8")).digest()',
    value='int.from_bytes(digest[:8], "big") % shards',
) -> str:
    return (
        "def shard_for(key, shards):\n"
        f"    if {check}:\n"
        "        raise ValueError('shards must be at least 1')\n"
        f"    digest = {digest}\n"
        f"    return {value}\n"
    )


def route_cell(start="{shard: [] for shard in range(shards)}", put="placed[shard_for(key, shards)].append(key)",
               keys="keys", result="placed") -> str:  # fmt: skip
    return (
        "def route(keys, shards):\n"
        f"    placed = {start}\n"
        f"    for key in {keys}:\n"
        f"        {put}\n"
        f"    return {result}\n"
    )


def ring_cell(
    label='f"{node}#{i}"',
    numbers="range(self.vnodes)",
    check="if any(owner == node for _, owner in self.points):\n            raise ValueError('already on the ring')\n        ",
    insert="bisect.insort(self.points, (point_of({label}), node))",
    find='at = bisect.bisect_left(self.points, (point_of(key), ""))',
    pick="self.points[at % len(self.points)][1]",
    init_vnodes="vnodes",
) -> str:
    return (
        "import bisect\n\n\n"
        "class Ring:\n"
        "    def __init__(self, nodes, vnodes):\n"
        f"        self.vnodes = {init_vnodes}\n"
        "        self.points = []\n"
        "        for node in nodes:\n"
        "            self.add(node)\n\n"
        "    def add(self, node):\n"
        f"        {check}for i in {numbers}:\n"
        f"            {insert.format(label=label)}\n\n"
        "    def node_for(self, key):\n"
        f"        {find}\n"
        f"        return {pick}\n"
    )


def moved_cell(value="moved / len(keys)") -> str:
    return (
        "def moved_fraction(keys, before, after):\n"
        "    moved = sum(before.node_for(key) != after.node_for(key) for key in keys)\n"
        f"    return {value}\n"
    )


def topk_cell(body="return sorted(rows, key=lambda row: (-row[1], row[0]))[:k]") -> str:
    return (
        "def merge_top_k(partials, k):\n"
        "    rows = [row for rows in partials for row in rows]\n"
        f"    {body}\n"
    )


def avg_cell(empty="return None", result="return Fraction(total, count)") -> str:
    return (
        "def merge_average(partials):\n"
        "    total = sum(part[0] for part in partials)\n"
        "    count = sum(part[1] for part in partials)\n"
        "    if count == 0:\n"
        f"        {empty}\n"
        f"    {result}\n"
    )


def instrument_cell(
    counter='Counter("db_queries", "Statements.", ["operation"], registry=registry)',
    histogram='Histogram("db_query_duration_seconds", "Duration.", ["operation"], buckets=BUCKETS, registry=registry)',
    target="engine",
    start="conn.info['started'] = time.perf_counter()",
    operation="statement.split()[0].upper()",
    record="queries.labels(operation).inc()\n        duration.labels(operation).observe(elapsed)",
    elapsed="time.perf_counter() - conn.info['started']",
    before_event="before_cursor_execute",
) -> str:
    return (
        "import time\n\n\n"
        "def instrument(engine, registry):\n"
        f"    queries = {counter}\n"
        f"    duration = {histogram}\n\n"
        f"    @event.listens_for({target}, {before_event!r})\n"
        "    def start(conn, cursor, statement, parameters, context, executemany):\n"
        f"        {start}\n\n"
        f"    @event.listens_for({target}, 'after_cursor_execute')\n"
        "    def stop(conn, cursor, statement, parameters, context, executemany):\n"
        f"        operation = {operation}\n"
        f"        elapsed = {elapsed}\n"
        f"        {record}\n"
    )


def p95_cell(check="if not latencies:\n        raise ValueError('no latency')\n    ",
             ordered="sorted(latencies)", index="math.ceil(0.95 * len(ordered)) - 1") -> str:  # fmt: skip
    return f"def p95(latencies):\n    {check}ordered = {ordered}\n    return ordered[{index}]\n"


def alert_cell(
    ticks_range="range(len(ticks))",
    window_slice="ticks[max(0, tick - window + 1) : tick + 1]",
    condition="seen and p95(seen) > threshold",
) -> str:
    return (
        "def alert_states(ticks, threshold, window):\n"
        "    states = []\n"
        f"    for tick in {ticks_range}:\n"
        f"        seen = [value for values in {window_slice} for value in values]\n"
        f'        states.append("firing" if {condition} else "ok")\n'
        "    return states\n"
    )


def rev_cell(
    select="region, count(*) AS orders, sum(quantity * price_cents) AS revenue",
    source="read_parquet(?)",
    order="revenue DESC, region",
    params="[str(path)]",
    fetch=".fetchall()",
) -> str:
    return (
        "def revenue_by_region(path):\n"
        "    with duckdb.connect() as con:\n"
        "        return con.execute(\n"
        f'            "SELECT {select} FROM {source} GROUP BY region ORDER BY {order}",\n'
        f"            {params},\n"
        f"        ){fetch}\n"
    )


def case(name, breaks, answer, source, loses, origin="course"):
    return {"name": name, "breaks": breaks, "notebook": NB, "answers": {answer: source},
            "loses": [loses], "source": origin}  # fmt: skip


# Written by the outside review (verbatim), from the student notebook and the task text.
OUTSIDE = {
    "dedup_keys": """def route(keys, shards):
    out = {s: [] for s in range(shards)}
    for key in dict.fromkeys(keys):
        out[shard_for(key, shards)].append(key)
    return out
""",
    "add_forgets_node": """import bisect


class Ring:
    def __init__(self, nodes, vnodes):
        self.vnodes = vnodes
        self.nodes = list(nodes)
        self.points = []
        self.owner = {}
        for n in nodes:
            self._place(n)

    def _place(self, node):
        for i in range(self.vnodes):
            p = point_of(f"{node}#{i}")
            self.owner[p] = node
            bisect.insort(self.points, p)

    def add(self, node):
        if node in self.nodes:
            raise ValueError(node)
        self._place(node)

    def node_for(self, key):
        i = bisect.bisect_left(self.points, point_of(key))
        if i == len(self.points):
            i = 0
        return self.owner[self.points[i]]
""",
    "only_new_nodes": """def moved_fraction(keys, before, after):
    old = {before.node_for(k) for k in keys}
    return sum(1 for k in keys if after.node_for(k) not in old) / len(keys)
""",
    "unique_keys": """def moved_fraction(keys, before, after):
    keys = set(keys)
    return sum(1 for k in keys if before.node_for(k) != after.node_for(k)) / len(keys)
""",
    "split_space": """import time


def instrument(engine, registry):
    queries = Counter("db_queries", "statements", ["operation"], registry=registry)
    duration = Histogram("db_query_duration_seconds", "duration", ["operation"],
                         buckets=BUCKETS, registry=registry)

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info["start"].pop()
        op = statement.split(" ")[0].upper()
        queries.labels(op).inc()
        duration.labels(op).observe(elapsed)
""",
    "count_column": """def revenue_by_region(path):
    return duckdb.sql(
        f"SELECT region, count(quantity), sum(quantity * price_cents) AS revenue "
        f"FROM read_parquet('{path}') GROUP BY region ORDER BY revenue DESC, region"
    ).fetchall()
""",
    "double_revenue": """def revenue_by_region(path):
    return duckdb.sql(
        f"SELECT region, count(*), sum(quantity::double * price_cents) AS revenue "
        f"FROM read_parquet('{path}') GROUP BY region ORDER BY revenue DESC, region"
    ).fetchall()
""",
    "six_letters": """import time


def instrument(engine, registry):
    queries = Counter("db_queries", "statements", ["operation"], registry=registry)
    duration = Histogram("db_query_duration_seconds", "duration", ["operation"],
                         buckets=BUCKETS, registry=registry)

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("start", []).append(time.perf_counter())
        pass

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info["start"].pop()
        op = statement.lstrip()[:6].upper()
        queries.labels(op).inc()
        duration.labels(op).observe(elapsed)
""",
    "avg_times_count": """def revenue_by_region(path):
    return duckdb.sql(
        f"SELECT region, count(*), avg(quantity * price_cents) * count(*) AS revenue "
        f"FROM read_parquet('{path}') GROUP BY region ORDER BY revenue DESC, region"
    ).fetchall()
""",
}


CASES = [
    # ------------------------------------------------------------------ task 1
    case("numbers the shards from 1", "shard-range", SHARD,
         shard_cell(value='int.from_bytes(digest[:8], "big") % shards + 1'), T1),
    case("hashes with MD5", "shard-sha256", SHARD,
         shard_cell(digest='hashlib.md5(key.encode("utf-8")).digest()'), T1),
    case("reads the last 8 bytes of the digest", "shard-sha256", SHARD,
         shard_cell(value='int.from_bytes(digest[-8:], "big") % shards'), T1),
    case("encodes the key in UTF-16", "shard-utf8", SHARD,
         shard_cell(digest='hashlib.sha256(key.encode("utf-16")).digest()'), T1),
    case("reads the bytes little-endian", "shard-big-endian", SHARD,
         shard_cell(value='int.from_bytes(digest[:8], "little") % shards'), T1),
    case("reads the bytes as a signed integer", "shard-big-endian", SHARD,
         shard_cell(value='int.from_bytes(digest[:8], "big", signed=True) % shards'), T1),
    case("maps the hash onto the shards by range (jump), not modulo", "shard-modulo", SHARD,
         shard_cell(value='int.from_bytes(digest[:8], "big") * shards >> 64'), T1),
    case("uses Python's hash()", "shard-no-hash", SHARD,
         shard_cell(digest="None", value="hash(key) % shards"), T1),
    case("refuses 0 shards but not negative ones", "shard-raise", SHARD,
         shard_cell(check="shards == 0"), T1),
    case("never checks the number of shards", "shard-raise", SHARD,
         shard_cell(check="False"), T1),
    case("routes to shards numbered from 1", "route-numbers", ROUTE,
         route_cell(start="{shard + 1: [] for shard in range(shards)}",
                    put="placed[shard_for(key, shards) + 1].append(key)"), T1),
    case("lists only the shards that got a key", "route-empty", ROUTE,
         route_cell(start="{}", put="placed.setdefault(shard_for(key, shards), []).append(key)"), T1),
    case("counts the keys instead of listing them", "route-owner", ROUTE,
         route_cell(start="{shard: 0 for shard in range(shards)}",
                    put="placed[shard_for(key, shards)] += 1"), T1),
    case("routes by Python's hash()", "route-owner", ROUTE,
         route_cell(put="placed[hash(key) % shards].append(key)"), T1),
    case("sorts the keys first", "route-order", ROUTE, route_cell(keys="sorted(keys)"), T1),
    # ------------------------------------------------------------------ task 2
    case("one point per node whatever vnodes says", "ring-vnodes", RING,
         ring_cell(init_vnodes="1"), T2),
    case("labels the points node-i", "ring-labels", RING, ring_cell(label='f"{node}-{i}"'), T2),
    case("numbers the virtual nodes from 1", "ring-range", RING,
         ring_cell(numbers="range(1, self.vnodes + 1)"), T2),
    case("the first point strictly after the key", "ring-at-or-after", RING,
         ring_cell(find='at = bisect.bisect_right(self.points, (point_of(key), "\\U0010ffff"))'), T2),
    case("keys past the last point go to the last point", "ring-wrap", RING,
         ring_cell(pick="self.points[min(at, len(self.points) - 1)][1]"), T2),
    case("add appends the points; only the constructor sorts them", "ring-add", RING,
         ring_cell(insert="self.points.append((point_of({label}), node))").replace(
             "            self.add(node)\n", "            self.add(node)\n        self.points.sort()\n"), T2),
    case("adds a node twice without a word", "ring-add-twice", RING, ring_cell(check=""), T2),
    case("returns the number of keys moved", "moved-fraction", MOVED, moved_cell("moved"), T2),
    case("returns the fraction of keys that stayed", "moved-fraction", MOVED,
         moved_cell("1 - moved / len(keys)"), T2),
    # ------------------------------------------------------------------ task 3
    case("keeps each shard's best row only", "topk-best", TOPK,
         topk_cell("return sorted((rows[0] for rows in partials if rows), key=lambda row: (-row[1], row[0]))[:k]"), T3),
    case("the best k, lowest score first", "topk-order", TOPK,
         topk_cell("return sorted(sorted(rows, key=lambda row: (-row[1], row[0]))[:k], key=lambda row: (row[1], row[0]))"), T3),
    case("breaks ties by shard order (a stable sort on the score)", "topk-ties", TOPK,
         topk_cell("return sorted(rows, key=lambda row: row[1], reverse=True)[:k]"), T3),
    case("breaks ties by the larger id", "topk-ties", TOPK,
         topk_cell("return sorted(rows, key=lambda row: (row[1], row[0]), reverse=True)[:k]"), T3),
    case("the average of the shards' averages", "avg-all-rows", AVG,
         "def merge_average(partials):\n"
         "    averages = [Fraction(total, count) for total, count in partials if count]\n"
         "    return sum(averages) / len(averages) if averages else None\n", T3),
    case("divides with floats", "avg-exact", AVG, avg_cell(result="return total / count"), T3),
    case("weighs each shard's average by its rows (a shard with none divides by zero)",
         "avg-empty-shard", AVG,
         "def merge_average(partials):\n"
         "    count = sum(c for _, c in partials)\n"
         "    if count == 0:\n"
         "        return None\n"
         "    return sum(Fraction(t, c) * c for t, c in partials) / count\n", T3),
    case("returns 0 when there is no row", "avg-none", AVG, avg_cell(empty="return Fraction(0)"), T3),
    # ------------------------------------------------------------------ task 4
    case("registers on the global registry", "instr-registry", INSTR,
         instrument_cell(counter='Counter("db_queries", "Statements.", ["operation"])',
                         histogram='Histogram("db_query_duration_seconds", "Duration.", ["operation"], buckets=BUCKETS)'), T4),
    case("names the counter queries", "instr-counter", INSTR,
         instrument_cell(counter='Counter("queries", "Statements.", ["operation"], registry=registry)'), T4),
    case("a summary instead of a histogram", "instr-histogram", INSTR,
         instrument_cell(histogram='Summary("db_query_duration_seconds", "Duration.", ["operation"], registry=registry)').replace(
             "def instrument", "from prometheus_client import Summary\n\n\ndef instrument"), T4),
    case("the default buckets", "instr-buckets", INSTR,
         instrument_cell(histogram='Histogram("db_query_duration_seconds", "Duration.", ["operation"], registry=registry)'), T4),
    case("a histogram without the operation label", "instr-label", INSTR,
         instrument_cell(histogram='Histogram("db_query_duration_seconds", "Duration.", buckets=BUCKETS, registry=registry)',
                         record="queries.labels(operation).inc()\n        duration.observe(elapsed)"), T4),
    case("keeps the first word as written", "instr-upper", INSTR,
         instrument_cell(operation="statement.split()[0]"), T4),
    case("times from the after event alone", "instr-events", INSTR,
         instrument_cell(start="pass", elapsed="time.perf_counter() - conn.info.get('started', time.perf_counter())"), T4),
    case("listens on every engine", "instr-engine-only", INSTR,
         instrument_cell(target="Engine").replace("def instrument", "from sqlalchemy.engine import Engine\n\n\ndef instrument"), T4),
    case("counts SELECTs only", "instr-every", INSTR,
         instrument_cell(record="if operation == 'SELECT':\n            queries.labels(operation).inc()\n"
                                "        duration.labels(operation).observe(elapsed)"), T4),
    case("observes milliseconds", "instr-seconds", INSTR,
         instrument_cell(elapsed="(time.perf_counter() - conn.info['started']) * 1000"), T4),
    # ------------------------------------------------------------------ task 5
    case("does not sort", "p95-sort", P95, p95_cell(ordered="list(latencies)"), T5),
    case("rank rounded, not rounded up", "p95-rank", P95,
         p95_cell(index="round(0.95 * len(ordered)) - 1"), T5),
    case("rank rounded down", "p95-rank", P95, p95_cell(index="int(0.95 * len(ordered)) - 1"), T5),
    case("an index of 0.95 n (one rank too high)", "p95-rank", P95,
         p95_cell(index="min(int(0.95 * len(ordered)), len(ordered) - 1)"), T5),
    case("an empty list gives None", "p95-empty", P95,
         p95_cell(check="if not latencies:\n        return None\n    "), T5),
    case("an empty list raises IndexError", "p95-empty", P95, p95_cell(check=""), T5),
    case("a window one tick too long", "alert-window", ALERT,
         alert_cell(window_slice="ticks[max(0, tick - window) : tick + 1]"), T5),
    case("a negative start at the beginning", "alert-start", ALERT,
         alert_cell(window_slice="ticks[tick - window + 1 : tick + 1]"), T5),
    case("fires when any tick's own p95 is above", "alert-together", ALERT,
         alert_cell(condition="any(values and p95(values) > threshold for values in ticks[max(0, tick - window + 1) : tick + 1])"), T5),
    case("fires at the threshold", "alert-strict", ALERT,
         alert_cell(condition="seen and p95(seen) >= threshold"), T5),
    case("an empty window raises", "alert-empty", ALERT, alert_cell(condition="p95(seen) > threshold"), T5),
    case("starts once a full window is there", "alert-list", ALERT,
         alert_cell(ticks_range="range(min(window - 1, len(ticks)), len(ticks))"), T5),
    # ------------------------------------------------------------------ task 6
    case("queries the PostgreSQL table", "rev-path", REV,
         "def revenue_by_region(path):\n"
         "    with demo.connect() as conn:\n"
         "        return conn.execute(\n"
         '            "SELECT region, count(*), sum(quantity * price_cents) AS revenue FROM sales "\n'
         '            "GROUP BY region ORDER BY revenue DESC, region"\n'
         "        ).fetchall()\n", T6),
    case("always reads SALES_PARQUET", "rev-path", REV, rev_cell(params="[str(SALES_PARQUET)]"), T6),
    case("returns a list of lists", "rev-tuples", REV,
         rev_cell(fetch=".fetchdf().values.tolist()"), T6),
    case("counts units sold, not rows", "rev-orders", REV,
         rev_cell(select="region, sum(quantity) AS orders, sum(quantity * price_cents) AS revenue"), T6),
    case("sums prices, not quantity times price", "rev-revenue", REV,
         rev_cell(select="region, count(*) AS orders, sum(price_cents) AS revenue"), T6),
    case("lowest revenue first", "rev-desc", REV, rev_cell(order="revenue, region"), T6),
    case("no tie-break on the region", "rev-tie", REV, rev_cell(order="revenue DESC"), T6),
    case("ties broken by region, reversed", "rev-tie", REV, rev_cell(order="revenue DESC, region DESC"), T6),
    # ------------------------------------------------------------------ outside review
    case("drops a key given twice (dict.fromkeys)", "route-owner", ROUTE,
         OUTSIDE["dedup_keys"], T1, origin="outside review"),
    case("add() never records its node: adding it a second time is silent", "ring-add-twice", RING,
         OUTSIDE["add_forgets_node"], T2, origin="outside review"),
    case("counts only the keys that land on a node absent from before (a removal moves nothing)",
         "moved-fraction", MOVED, OUTSIDE["only_new_nodes"], T2, origin="outside review"),
    case("the fraction of the distinct keys (set(keys)), not of keys", "moved-fraction", MOVED,
         OUTSIDE["unique_keys"], T2, origin="outside review"),
    case("the first word by split(' '): a statement starting with a newline gets the label '\\n'",
         "instr-upper", INSTR, OUTSIDE["split_space"], T4, origin="outside review"),
    case("the first six characters (SELECT, INSERT, CREATE ... but not DROP)", "instr-upper", INSTR,
         OUTSIDE["six_letters"], T4, origin="outside review"),
    case("count(quantity): a row without a quantity is not counted", "rev-orders", REV,
         OUTSIDE["count_column"], T6, origin="outside review"),
    case("revenue as a DOUBLE sum (floats)", "rev-revenue", REV,
         OUTSIDE["double_revenue"], T6, origin="outside review"),
    case("revenue as avg(quantity * price_cents) * count(*) (a float)", "rev-revenue", REV,
         OUTSIDE["avg_times_count"], T6, origin="outside review"),
]  # fmt: skip

ALTERNATIVES = [
    {
        "name": "other ways: point_of, sorted arrays, heapq, a stack of start times, a deque",
        "notebook": NB,
        "answers": {
            SHARD: (
                "def shard_for(key, shards):\n"
                "    if not shards >= 1:\n"
                "        raise ValueError(f'need at least one shard, got {shards}')\n"
                "    return point_of(key) % shards\n"
            ),
            ROUTE: (
                "def route(keys, shards):\n"
                "    placed = {}\n"
                "    for shard in range(shards):\n"
                "        placed[shard] = [k for k in keys if shard_for(k, shards) == shard]\n"
                "    return placed\n"
            ),
            RING: (
                "import bisect\n\n\n"
                "class Ring:\n"
                "    def __init__(self, nodes, vnodes):\n"
                "        self.vnodes, self.hashes, self.owners = vnodes, [], []\n"
                "        for node in nodes:\n"
                "            self.add(node)\n\n"
                "    def add(self, node):\n"
                "        if node in self.owners:\n"
                "            raise ValueError(node)\n"
                "        for i in range(self.vnodes):\n"
                "            h = point_of(f'{node}#{i}')\n"
                "            at = bisect.bisect_left(self.hashes, h)\n"
                "            self.hashes.insert(at, h)\n"
                "            self.owners.insert(at, node)\n\n"
                "    def node_for(self, key):\n"
                "        at = bisect.bisect_left(self.hashes, point_of(key))\n"
                "        return self.owners[0] if at == len(self.hashes) else self.owners[at]\n"
            ),
            MOVED: (
                "def moved_fraction(keys, before, after):\n"
                "    keys = list(keys)\n"
                "    return Fraction(sum(1 for k in keys if before.node_for(k) != after.node_for(k)), len(keys))\n"
            ),
            TOPK: (
                "import heapq\n\n\n"
                "def merge_top_k(partials, k):\n"
                "    return heapq.nsmallest(k, (r for p in partials for r in p), key=lambda r: (-r[1], r[0]))\n"
            ),
            AVG: (
                "def merge_average(partials):\n"
                "    count = sum(c for _, c in partials)\n"
                "    return Fraction(sum(t for t, _ in partials)) / count if count else None\n"
            ),
            INSTR: (
                "import time\n\n\n"
                "def instrument(engine, registry):\n"
                "    total = Counter('db_queries_total', 'Statements.', labelnames=('operation',), registry=registry)\n"
                "    seconds = Histogram('db_query_duration_seconds', 'Seconds.', labelnames=('operation',),\n"
                "                        registry=registry, buckets=list(BUCKETS))\n\n"
                "    def before(conn, cursor, statement, parameters, context, executemany):\n"
                "        conn.info.setdefault('t0', []).append(time.monotonic())\n\n"
                "    def after(conn, cursor, statement, parameters, context, executemany):\n"
                "        op = statement.lstrip().split(' ', 1)[0].upper()\n"
                "        total.labels(operation=op).inc()\n"
                "        seconds.labels(operation=op).observe(time.monotonic() - conn.info['t0'].pop())\n\n"
                "    event.listen(engine, 'before_cursor_execute', before)\n"
                "    event.listen(engine, 'after_cursor_execute', after)\n"
            ),
            P95: (
                "def p95(latencies):\n"
                "    if len(latencies) == 0:\n"
                "        raise ValueError('p95 of nothing')\n"
                "    n = len(latencies)\n"
                "    return sorted(latencies)[-(n - math.ceil(0.95 * n) + 1)]\n"
            ),
            ALERT: (
                "from collections import deque\n\n\n"
                "def alert_states(ticks, threshold, window):\n"
                "    recent, out = deque(maxlen=window), []\n"
                "    for values in ticks:\n"
                "        recent.append(list(values))\n"
                "        seen = [v for vs in recent for v in vs]\n"
                "        out.append('ok' if not seen or p95(seen) <= threshold else 'firing')\n"
                "    return out\n"
            ),
            REV: (
                "def revenue_by_region(path):\n"
                "    con = duckdb.connect()\n"
                '    con.execute("CREATE VIEW s AS SELECT * FROM read_parquet(\'" + str(path) + "\')")\n'
                "    rows = con.execute(\n"
                "        'SELECT region, count(id), sum(quantity * price_cents) FROM s GROUP BY 1 ORDER BY 3 DESC, 1'\n"
                "    ).fetchall()\n"
                "    con.close()\n"
                "    return [tuple(r) for r in rows]\n"
            ),
        },
    },
]
