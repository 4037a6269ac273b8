"""Your progress through the course, computed from your own results — nothing to tick.

For example, in a folder of records of its own::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from labkit.course import progress
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = progress.record_lesson("00-start-here", folder)  # a lesson's last cell
    Recorded: 00-start-here ran to the end (...).
    >>> report = progress.overview(folder)  # a table in a notebook
    >>> report.frame().loc[(0, 0), "status"]
    'in progress'

From a terminal: ``python -m labkit progress``; ``python -m labkit progress --journal``
writes your learning journal (:func:`journal`: the guide's weekly checklists, each box ticked
by the evidence shown beside it, with the numbers your own runs measured).

Two kinds of evidence, both written on your machine only (``<state dir>/progress/``, or
``LABKIT_PROGRESS_DIR``; git-ignored):

- a lesson counts as run when its last cell called :func:`record_lesson` — which only
  happens when every cell above it ran without an error;
- an exercise notebook counts with the score of your latest full check
  (``python -m labkit check <assignment>``, which autogrades it with the hidden tests).

In the student edition (no hidden tests: :mod:`labkit.course.edition`), a check records
which visible tests passed (:func:`record_visible`), and progress counts those, saying so:
the score comes from the instructor's grading.

Two more feed the journal: the numbers a lesson measured (:func:`record_numbers`, called by
its summary cells) and each capstone's latest acceptance run (:func:`record_capstone`).

Which lessons and exercises make up each step is the declarative table :data:`STEPS`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labkit import config

__all__ = [
    "JOURNAL",
    "NUMBERS",
    "PHASES",
    "STEPS",
    "Journal",
    "Progress",
    "Step",
    "journal",
    "overview",
    "progress_dir",
    "record_capstone",
    "record_exercise",
    "record_lesson",
    "record_numbers",
    "record_visible",
    "write_journal",
]

PHASES: dict[int, str] = {
    0: "Start",
    1: "Performance and optimization",
    2: "Production architecture",
    3: "Security and scale",
    4: "Specialized topics",
    5: "Capstone projects",
}


@dataclass(frozen=True)
class Step:
    """One step of the course: its lesson notebook (a glob over ``notebooks/*.ipynb`` stems)
    and its exercise notebooks (``<assignment>/<notebook glob>`` under ``grading/source``)."""

    phase: int
    step: int
    title: str
    lesson: str | None = None
    exercises: tuple[str, ...] = ()
    capstone: str | None = None  # done when its acceptance suite passed (record_capstone)


# Later phases: add the exercise globs when their assignments land.
STEPS: tuple[Step, ...] = (
    Step(0, 0, "Start here and warm-up", "00-*", ("00-warmup/*",)),
    Step(1, 6, "Query optimization", "01-*", ("01-performance/step06-*",)),
    Step(1, 7, "Caching with Redis", "01-*", ("01-performance/step07-*",)),
    Step(2, 8, "GraphQL API", "02-*", ("02-graphql/*",)),
    Step(2, 9, "Microservices", "02-*", ("02-microservices/*",)),
    Step(2, 10, "Serverless", "02-*", ("02-serverless/*",)),
    Step(3, 11, "Security", "03-*", ("03-security/*",)),
    Step(3, 12, "Multi-tenant SaaS", "03-*", ("03-tenancy/*",)),
    Step(3, 13, "Scale", "03-*", ("03-scale/*",)),
    Step(4, 14, "Real-time", "04-*", ("04-realtime/*",)),
    Step(4, 15, "Testing and monitoring", "04-*", ("04-testing/*",)),
    # The capstones: briefs in notebooks/, acceptance suites run by `labkit check
    # capstone-<name>`; their write-ups (05-capstones) are graded by hand by the instructor.
    Step(5, 16, "Capstone: real-time collaboration", "05-capstone-collab", capstone="collab"),
    Step(
        5, 17, "Capstone: e-commerce marketplace", "05-capstone-marketplace", capstone="marketplace"
    ),
    Step(5, 18, "Capstone: analytics dashboard", "05-capstone-analytics", capstone="analytics"),
)


def progress_dir() -> Path:
    """Where results are recorded: ``LABKIT_PROGRESS_DIR``, else ``<state dir>/progress``."""
    if env := os.environ.get("LABKIT_PROGRESS_DIR"):
        return Path(env).resolve()
    return config.state_dir() / "progress"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, path)  # readers never see half a file
    return path


def _safe(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a usable name for a progress record: {name!r}")
    return name


def record_lesson(name: str, directory: Path | None = None) -> Path:
    """Record that lesson ``name`` (its notebook's stem) ran to its last cell."""
    path = (directory or progress_dir()) / "lessons" / f"{_safe(name)}.json"
    _write(path, {"lesson": name, "completed_at": _now()})
    print(f"Recorded: {name} ran to the end ({_now()[:10]}).")
    return path


def record_exercise(
    assignment: str,
    notebook: str,
    score: float,
    max_score: float,
    tasks: Mapping[str, tuple[float, float]] | None = None,
    directory: Path | None = None,
) -> Path:
    """Record the result of a full check of one exercise notebook (``tasks``: grade id →
    (score, max score))."""
    stem = Path(_safe(notebook)).stem
    path = (directory or progress_dir()) / "exercises" / _safe(assignment) / f"{stem}.json"
    record = {
        "assignment": assignment,
        "notebook": notebook,
        "score": score,
        "max_score": max_score,
        "tasks": {k: {"score": s, "max_score": m} for k, (s, m) in (tasks or {}).items()},
        "checked_at": _now(),
    }
    return _write(path, record)


def record_visible(
    assignment: str,
    notebook: str,
    tasks: Mapping[str, str],
    directory: Path | None = None,
) -> Path:
    """Record a check in the student edition, which has no hidden tests: each test cell's
    visible tests (grade id → ``"pass"`` / ``"fail"`` / ``"not run"``), and no score."""
    stem = Path(_safe(notebook)).stem
    path = (directory or progress_dir()) / "exercises" / _safe(assignment) / f"{stem}.json"
    record = {
        "assignment": assignment,
        "notebook": notebook,
        "visible": dict(tasks),
        "checked_at": _now(),
    }
    return _write(path, record)


def _visible_passed(record: Mapping) -> tuple[int, int]:
    """(test cells whose visible tests passed, test cells) of a :func:`record_visible`."""
    visible = record.get("visible") if isinstance(record.get("visible"), dict) else {}
    return sum(v == "pass" for v in visible.values()), len(visible)


def record_capstone(
    name: str,
    passed: bool,
    numbers: Mapping[str, object] | None = None,
    size: str = "ci",
    directory: Path | None = None,
    project: str | None = None,
) -> Path:
    """Record a full run of capstone ``name``'s acceptance suite: passed or not, at which
    size, and the learner's measured numbers (``labkit check capstone-<name>``)."""
    path = (directory or progress_dir()) / "capstones" / f"{_safe(name)}.json"
    record = {
        "capstone": name,
        "passed": bool(passed),
        "size": size,
        "numbers": dict(numbers or {}),
        "project": project,
        "checked_at": _now(),
    }
    return _write(path, record)


def _measured(value: object) -> bool:
    """None, NaN and a note in parentheses, such as ``(section not run in this kernel)``,
    say that nothing was measured."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return not (isinstance(value, str) and value.startswith("(") and value.endswith(")"))


def record_numbers(
    lesson: str, numbers: Mapping[str, object], directory: Path | None = None
) -> Path:
    """Keep numbers that lesson ``lesson`` measured, for your journal (``name`` → a number or
    a short text such as ``"1,204 → 12"``). Each name must be in :data:`NUMBERS`, which says
    what it is. A later run replaces a name's value; names it did not measure keep theirs."""
    path = (directory or progress_dir()) / "numbers" / f"{_safe(lesson)}.json"
    unknown = sorted(set(numbers.keys()) - set(NUMBERS))  # keys(): a pandas Series too
    if unknown:
        raise ValueError(f"add {unknown} to labkit.course.progress.NUMBERS (what each one is)")
    try:
        record = json.loads(path.read_text())
        kept = dict(record["numbers"])
    except (OSError, ValueError, KeyError, TypeError):
        kept = {}  # none yet, or a damaged record: start again
    now = _now()
    for name, value in numbers.items():
        if _measured(value):
            value = value.item() if hasattr(value, "item") else value  # numpy → Python
            if not isinstance(value, bool | int | float | str):
                value = str(value)
            kept[name] = {"value": value, "recorded_at": now}
    return _write(path, {"lesson": lesson, "numbers": kept})


def _read_all(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a damaged record counts as no record
    return records


def _available_exercises(root: Path) -> dict[tuple[str, str], float]:
    """(assignment, notebook file) → points, for every autograded exercise notebook in
    ``grading/source`` (the capstones' write-ups are graded by hand, in the instructor's
    gradebook, which a learner's progress cannot see). In the student edition: the test
    cells of each student copy in ``exercises/`` (→ their number; no points are earned
    there, only visible tests passed)."""
    from labkit.course.edition import assignment_folder, is_student_edition
    from labkit.course.grading import grade_cells

    source = assignment_folder("_", root).parent
    found = {}
    for path in sorted(source.glob("*/*.ipynb")) if source.is_dir() else []:
        if points := grade_cells(path):
            found[(path.parent.name, path.name)] = (
                float(len(points)) if is_student_edition(root) else sum(points.values())
            )
    return found


def _points(value: float) -> str:
    return f"{value:g}"


@dataclass(repr=False)
class Progress:
    """Per-step and per-phase progress; a table in a notebook, text in a terminal."""

    steps: list[dict]
    phases: list[dict]
    evidence: int
    visible_only: bool = False  # the student edition: visible tests, no score

    @property
    def note(self) -> str:
        if self.evidence and self.visible_only:
            return (
                "Computed from your results: lessons that ran to their last cell, and the "
                "visible tests of your latest check of each exercise (its last cell, or "
                "`make check A=<assignment>`). A step is done once its lesson ran and every "
                "visible test of its exercises passes. Your score comes from your "
                "instructor's grading, with hidden tests this edition does not have."
            )
        if self.evidence:
            return (
                "Computed from your results: lessons that ran to their last cell, and the "
                "score of your latest check of each exercise (its last cell, or "
                "`make check A=<assignment>`). A step is done once its lesson ran and its "
                "exercises have full marks."
            )
        return (
            "Nothing recorded yet — this is a fresh start. A lesson counts once it has run "
            "to its last cell; an exercise counts once you check it: run its last cell, or "
            "`make check A=<assignment>` in a terminal (start with `00-warmup`)."
        )

    def frame(self, level: str = "steps"):
        import pandas as pd

        rows = self.steps if level == "steps" else self.phases
        index = ["phase", "step"] if level == "steps" else ["phase"]
        return pd.DataFrame(rows).set_index(index)

    def __str__(self) -> str:
        return "\n\n".join(
            [
                self.note,
                self.frame("phases").to_string(),
                self.frame("steps").to_string(),
            ]
        )

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import re
        from html import escape

        from labkit.measure import table

        note = re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(self.note))
        return (
            f"<p>{note}</p><h4>Per phase</h4>{table(self.frame('phases'))._repr_html_()}"
            f"<h4>Per step</h4>{table(self.frame('steps'))._repr_html_()}"
        )

    def as_dict(self) -> dict:
        return {"steps": self.steps, "phases": self.phases, "evidence": self.evidence}


def overview(directory: Path | None = None, root: Path | None = None) -> Progress:
    """Progress per step and per phase, from the records in ``directory`` (default
    :func:`progress_dir`) and the course in ``root`` (default: the checkout)."""
    root = root or config.project_root()
    directory = directory or progress_dir()
    lessons = {r["lesson"]: r for r in _read_all(directory / "lessons") if "lesson" in r}
    results = {
        (r["assignment"], r["notebook"]): r
        for r in _read_all(directory / "exercises")
        if "assignment" in r and "notebook" in r
    }
    available = _available_exercises(root)
    from labkit.course.edition import is_student_edition

    visible_only = is_student_edition(root)  # counts test cells whose visible tests passed
    if visible_only:  # a record from a full check elsewhere has no place here, and vice versa
        results = {key: r for key, r in results.items() if "visible" in r}
    else:
        results = {key: r for key, r in results.items() if "score" in r}
    lesson_files = sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))
    accepted = {r["capstone"]: r for r in _read_all(directory / "capstones") if "capstone" in r}

    steps = []
    for step in STEPS:
        lesson_exists = bool(step.lesson and fnmatch.filter(lesson_files, step.lesson))
        ran = sorted(
            (
                r["completed_at"]
                for n, r in lessons.items()
                if step.lesson and fnmatch.fnmatch(n, step.lesson)
            ),
            reverse=True,
        )
        notebooks = {
            key: points
            for key, points in available.items()
            if any(fnmatch.fnmatch(f"{key[0]}/{key[1]}", pattern) for pattern in step.exercises)
        }
        checked = {key: results[key] for key in notebooks if key in results}
        if visible_only:
            earned = sum(min(_visible_passed(r)[0], notebooks[k]) for k, r in checked.items())
        else:
            earned = sum(min(float(r["score"]), notebooks[k]) for k, r in checked.items())
        total = sum(notebooks.values())

        def earned_in(record: dict) -> float:
            return _visible_passed(record)[0] if visible_only else float(record["score"])

        full = all(
            k in checked and earned_in(checked[k]) >= points - 1e-9
            for k, points in notebooks.items()
        )
        acceptance = accepted.get(step.capstone) if step.capstone else None
        if step.capstone:  # done when the acceptance suite passed, whatever the brief
            full = bool(acceptance and acceptance.get("passed") is True)
            checked = {"acceptance": acceptance} if acceptance else {}
        if not lesson_exists and not notebooks and not step.capstone:
            status = "coming soon"
        elif step.capstone and full:
            status = "done"
        elif (ran or not lesson_exists) and full and (ran or notebooks):
            status = "done"
        elif ran or checked:
            status = "in progress"
        else:
            status = "not started"
        if not lesson_exists:
            lesson_text = "—"
        else:
            lesson_text = f"ran {ran[0][:10]}" if ran else "not run yet"
        if step.capstone:
            if not acceptance:
                exercise_text = f"acceptance not run yet (labkit check capstone-{step.capstone})"
            else:
                verdict = "passed" if full else "failed"
                exercise_text = (
                    f"acceptance {verdict} {str(acceptance.get('checked_at', ''))[:10]} "
                    f"(size {acceptance.get('size', '?')})"
                )
        elif not notebooks:
            exercise_text = "—"
        elif not checked:
            cells = " test cells" if visible_only else ""
            exercise_text = f"0 / {_points(total)}{cells} (not checked yet)"
        elif visible_only:
            exercise_text = f"visible tests pass in {_points(earned)} / {_points(total)} cells"
        else:
            exercise_text = f"{_points(earned)} / {_points(total)}"
            if len(checked) < len(notebooks):
                exercise_text += f" ({len(checked)} of {len(notebooks)} notebooks checked)"
        steps.append(
            {
                "phase": step.phase,
                "step": step.step,
                "title": step.title,
                "lesson": lesson_text,
                "exercises": exercise_text,
                "status": status,
                "_earned": earned,
                "_total": total,
            }
        )

    # In the edition, exercises count test cells whose visible tests passed, not points.
    points_column = "visible test cells passed" if visible_only else "exercise points"
    phases = []
    for phase, title in PHASES.items():
        rows = [row for row in steps if row["phase"] == phase]
        open_rows = [row for row in rows if row["status"] != "coming soon"]
        done = sum(row["status"] == "done" for row in open_rows)
        with_lesson = [row for row in open_rows if row["lesson"] != "—"]
        lessons_run = sum(row["lesson"].startswith("ran") for row in with_lesson)
        earned = sum(row["_earned"] for row in rows)
        total = sum(row["_total"] for row in rows)
        if not open_rows:
            status = "coming soon"
        elif done == len(open_rows):
            status = "done"
        elif any(row["status"] != "not started" for row in open_rows):
            status = "in progress"
        else:
            status = "not started"
        phases.append(
            {
                "phase": phase,
                "title": title,
                "lessons run": f"{lessons_run} / {len(with_lesson)}" if with_lesson else "—",
                "steps done": f"{done} / {len(open_rows)}" if open_rows else "—",
                points_column: f"{_points(earned)} / {_points(total)}" if total else "—",
                "status": status,
            }
        )
    for row in steps:
        del row["_earned"], row["_total"]
    return Progress(steps, phases, evidence=len(lessons) + len(results), visible_only=visible_only)


# --- The learning journal ------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A number a lesson measures and records (:func:`record_numbers`): which lesson, in
    which step, what it is, and how to show it."""

    lesson: str
    step: int
    what: str = ""  # empty: the name says what it is
    fmt: str = "{}"


_L01, _L02 = "01-performance-and-optimization", "02-production-architecture"
_L03, _L04 = "03-security-and-scale", "04-realtime-and-testing"

# Lesson 01 records its "Your numbers" table (labkit.sections.numbers): the label says what
# it is and, in parentheses, the section. Lessons 02-04 record from their summary cells.
NUMBERS: dict[str, Number] = {
    "author lookup: buffers, no index → index (4)": Number(_L01, 6),
    "author lookup: median ms (4)": Number(_L01, 6),
    "N+1: statements, lazy → selectinload (6)": Number(_L01, 6),
    "connection: new → pooled checkout, median ms (7)": Number(_L01, 6),
    "practice run: profile page statements (8)": Number(_L01, 6),
    "TTL jitter: most entries expiring in one second, same TTL → ±10% (10)": Number(_L01, 7),
    "cache workload: statements, none → warmed cache (16)": Number(_L01, 7),
    "cache workload: hit rate, cold / warmed (16)": Number(_L01, 7),
    "hot row: row updates, UPDATE per view → HINCRBY + flush (16)": Number(_L01, 7),
    "hot row: lock waits seen, UPDATE per view → HINCRBY + flush (16)": Number(_L01, 7),
    "stampede: computations, no lock → lock (17)": Number(_L01, 7),
    "stale-while-revalidate: readers served stale at once, loads (17)": Number(_L01, 7),
    "Redis down: reads answered correctly (18)": Number(_L01, 7),
    "Redis hung: reads that waited for the timeout, no breaker → breaker (18)": Number(_L01, 7),
    "graphql_users": Number(_L02, 8, "GraphQL: users in the largest request (8.2)", "{:,}"),
    "graphql_naive_statements": Number(
        _L02, 8, "GraphQL: statements for that request, a resolver per field (8.2)", "{:,}"
    ),
    "graphql_dataloader_statements": Number(
        _L02, 8, "GraphQL: statements for the same request with DataLoaders (8.2)", "{:,}"
    ),
    "dual_write_events_lost": Number(
        _L02, 9, "dual write, writer killed after commit: orders that lost their event", "{}"
    ),
    "outbox_events_lost": Number(
        _L02, 9, "outbox, every kill point: orders that lost their event", "{}"
    ),
    "serverless_cold_ms": Number(
        _L02, 10, "serverless: a cold invocation, process start included (ms)", "{:,.0f}"
    ),
    "serverless_warm_ms": Number(_L02, 10, "serverless: a warm invocation, median (ms)", "{:,.1f}"),
    "rls_attacks_tried": Number(_L03, 11, "RLS: attacks tried (11.6)", "{:,}"),
    "rls_attacks_leaking": Number(
        _L03, 11, "RLS: attacks that still saw other tenants' rows under RLS (11.6)", "{:,}"
    ),
    "quiet_p95_ms_alone": Number(_L03, 12, "quiet tenants' p95, alone (ms)", "{:,.1f}"),
    "quiet_p95_ms_noisy": Number(
        _L03, 12, "quiet tenants' p95 beside a noisy tenant (ms)", "{:,.1f}"
    ),
    "quiet_p95_ms_contained": Number(
        _L03, 12, "quiet tenants' p95 with the noisy tenant contained (ms)", "{:,.1f}"
    ),
    "replica_load_requests_per_s": Number(
        _L03, 13, "load test with a read replica: requests per second (13.5)", "{:,.0f}"
    ),
    "replica_read_share": Number(
        _L03, 13, "load test: share of the reads the replica ran (13.5)", "{:.0%}"
    ),
    "resharding_moved_modulo": Number(
        _L03, 13, "adding a shard: keys moved with hash % N (13.8)", "{:.1%}"
    ),
    "resharding_moved_ring": Number(
        _L03, 13, "adding a shard: keys moved with a consistent-hash ring (13.8)", "{:.1%}"
    ),
    "postgres_report_ms": Number(
        _L03, 13, "analytics report in PostgreSQL, median (ms) (13.9)", "{:,.1f}"
    ),
    "duckdb_report_ms": Number(
        _L03, 13, "the same report in DuckDB over Parquet, median (ms) (13.9)", "{:,.1f}"
    ),
    "duckdb_speedup": Number(
        _L03, 13, "DuckDB's speed-up over PostgreSQL on that report (13.9)", "{:.1f}×"
    ),
    "feed_p95_ms": Number(_L04, 14, "change feed: COMMIT to client, p95 (ms) (14.3)", "{:,.1f}"),
    "feed_changes_missed": Number(_L04, 14, "change feed: changes missed (14.3)", "{:,}"),
    "conflict_edits": Number(_L04, 14, "conflicting edits compared (14.8)", "{:,}"),
    "lww_lost_updates": Number(_L04, 14, "last write wins: edits lost (14.8)", "{:,}"),
    "crdt_lost_updates": Number(_L04, 14, "CRDT: edits lost (14.8)", "{:,}"),
    "ws_clients_held": Number(
        _L04, 14, "WebSocket clients one process held, no failure (14.9)", "{:,}"
    ),
    "ws_p95_ms_at_most": Number(_L04, 14, "p95 at that many clients (ms) (14.9)", "{:,.0f}"),
    "load_peak_requests_per_s": Number(
        _L04, 15, "locust: peak throughput (requests/s) (15.4)", "{:,.0f}"
    ),
    "load_peak_users": Number(_L04, 15, "locust: users at the peak (15.4)", "{:,}"),
    "load_knee_users": Number(_L04, 15, "locust: users at the knee, p95 doubled (15.4)", "{:,}"),
}

CAPSTONES: dict[str, str] = {
    "collab": "Real-time collaboration platform",
    "marketplace": "E-commerce marketplace",
    "analytics": "Analytics dashboard on time-series data",
}


@dataclass(frozen=True)
class Lesson:
    """Evidence: the lesson (a notebook stem glob) ran to its last cell."""

    lesson: str


@dataclass(frozen=True)
class Tasks:
    """Evidence: these tasks (nbgrader grade ids; none = every task) of an exercise notebook
    (``<assignment>/<notebook glob>``) had full marks in your latest check."""

    notebook: str
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measured:
    """Evidence: a lesson recorded each of these numbers (keys of :data:`NUMBERS`)."""

    numbers: tuple[str, ...]


@dataclass(frozen=True)
class Capstone:
    """Evidence: the capstone's acceptance suite passed in full (``labkit check capstone-<name>``)."""

    name: str


@dataclass(frozen=True)
class Item:
    """One box of the journal: ticked when every piece of its evidence holds."""

    text: str
    evidence: tuple[Lesson | Tasks | Measured | Capstone, ...]


@dataclass(frozen=True)
class Week:
    title: str
    steps: tuple[int, ...]
    items: tuple[Item, ...]


_S06, _S07 = "01-performance/step06-*", "01-performance/step07-*"
_S08, _S09, _S10 = "02-graphql/step08-*", "02-microservices/step09-*", "02-serverless/step10-*"
_S11, _S12, _S13 = "03-security/step11-*", "03-tenancy/step12-*", "03-scale/step13-*"
_S14, _S15 = "04-realtime/step14-*", "04-testing/step15-*"

# The guide's checklists (its "Progress Tracking": weeks 1-10), extended to the whole
# syllabus. The guide's own items come first in each week, in its words.
JOURNAL: tuple[Week, ...] = (
    Week(
        "Week 0: Start here",
        (0,),
        (
            Item("Ran the start-here notebook", (Lesson("00-*"),)),
            Item("Completed the warm-up exercises", (Tasks("00-warmup/*"),)),
        ),
    ),
    Week(
        "Week 1-2: Performance",
        (6, 7),
        (
            Item("Completed query optimization exercises", (Tasks(_S06),)),
            Item("Implemented Redis caching", (Tasks(_S07),)),
            Item(
                "Measured performance improvements",
                (
                    Lesson("01-*"),
                    Measured(tuple(k for k, n in NUMBERS.items() if n.lesson == _L01)),
                ),
            ),
        ),
    ),
    Week(
        "Week 3-4: GraphQL",
        (8,),
        (
            Item(
                "Built GraphQL API",
                (Tasks(_S08, ("test_email_for", "test_edit_post", "test_build_schema")),),
            ),
            Item("Added subscriptions", (Tasks(_S08, ("test_post_created",)),)),
            Item(
                "Implemented DataLoader",
                (Tasks(_S08, ("test_load_posts_by_author", "test_make_context")),),
            ),
            Item(
                "Measured statements per request, with and without DataLoaders",
                (Measured(("graphql_naive_statements", "graphql_dataloader_statements")),),
            ),
        ),
    ),
    Week(
        "Week 5-6: Microservices (and serverless)",
        (9, 10),
        (
            Item("Created service separation", (Lesson("02-*"),)),
            Item(
                "Implemented event bus",
                (
                    Tasks(
                        _S09,
                        (
                            "test_ship_once",
                            "test_place_order",
                            "test_relay_once",
                            "test_claim_stuck",
                            "test_rescue",
                        ),
                    ),
                ),
            ),
            Item("Handled distributed transactions", (Tasks(_S09, ("test_run_saga",)),)),
            Item(
                "Measured events lost: dual write against the outbox",
                (Measured(("dual_write_events_lost", "outbox_events_lost")),),
            ),
            Item("Made a function serverless-safe (Step 10 exercises)", (Tasks(_S10),)),
        ),
    ),
    Week(
        "Week 7-8: Security (and multi-tenancy)",
        (11, 12),
        (
            Item(
                "Added RLS", (Tasks(_S11, ("test_enable_tenant_rls", "test_tenant_sessionmaker")),)
            ),
            Item(
                "Implemented encryption",
                (Tasks(_S11, ("test_email_index", "test_field_encryption")),),
            ),
            Item("Created audit logs", (Lesson("03-*"),)),
            Item(
                "Kept user input out of SQL text",
                (Tasks(_S11, ("test_search_invoices", "test_order_clause")),),
            ),
            Item(
                "Measured which attacks RLS stops",
                (Measured(("rls_attacks_tried", "rls_attacks_leaking")),),
            ),
            Item("Built a multi-tenant SaaS data layer (Step 12 exercises)", (Tasks(_S12),)),
        ),
    ),
    Week(
        "Week 9-10: Scale",
        (13,),
        (
            Item(
                "Set up read replicas",
                (Lesson("03-*"), Measured(("replica_load_requests_per_s", "replica_read_share"))),
            ),
            Item(
                "Implemented sharding",
                (Tasks(_S13, ("test_shard_for", "test_ring", "test_merges")),),
            ),
            Item("Created monitoring dashboard", (Tasks(_S13, ("test_instrument", "test_alert")),)),
            Item(
                "Ran the heavy analytics on a Parquet copy with DuckDB",
                (Tasks(_S13, ("test_revenue_by_region",)), Measured(("duckdb_speedup",))),
            ),
        ),
    ),
    Week(
        "Week 11-12: Real-time, testing and monitoring",
        (14, 15),
        (
            Item(
                "Built a change feed that resumes without gaps",
                (Tasks(_S14, ("test_watch", "test_resume")),),
            ),
            Item("Added presence", (Tasks(_S14, ("test_presence",)),)),
            Item(
                "Resolved conflicts: optimistic locking and a CRDT",
                (Tasks(_S14, ("test_save_edit", "test_sync", "test_compact")),),
            ),
            Item(
                "Measured how many WebSocket clients one process holds",
                (Measured(("ws_clients_held", "ws_p95_ms_at_most")),),
            ),
            Item(
                "Wrote integration tests against the real servers",
                (Tasks(_S15, ("test_rolled_back", "test_at_most", "test_test_checkout")),),
            ),
            Item(
                "Traced requests and load-tested them",
                (
                    Tasks(_S15, ("test_traced", "test_percentiles")),
                    Measured(("load_peak_requests_per_s",)),
                ),
            ),
            Item("Ran the Phase 4 lesson", (Lesson("04-*"),)),
        ),
    ),
    Week(
        "After week 12: the capstone projects",
        tuple(s.step for s in STEPS if s.capstone),
        tuple(
            Item(f"{title}: acceptance suite passed", (Capstone(name),))
            for name, title in CAPSTONES.items()
        ),
    ),
)


def _score(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0  # a damaged score counts as none


def _fmt(number: Number | None, value: object) -> str:
    if number is not None and not isinstance(value, str):
        try:
            return number.fmt.format(value)
        except (ValueError, TypeError):
            pass
    if isinstance(value, float):
        return f"{value:,.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


@dataclass(repr=False)
class Journal:
    """The learning journal: weekly checklists ticked from your records, and your numbers.
    ``markdown()`` is the text; a notebook shows it as Markdown."""

    weeks: list[dict]
    written_at: str
    directory: Path
    path: Path | None = None  # where write_journal wrote it

    @property
    def ticked(self) -> int:
        return sum(item["done"] for week in self.weeks for item in week["items"])

    @property
    def total(self) -> int:
        return sum(len(week["items"]) for week in self.weeks)

    def markdown(self) -> str:
        lines = [
            "# My learning journal",
            "",
            f"Written {self.written_at[:16].replace('T', ' ')} UTC from my own results: "
            f"{self.ticked} of {self.total} boxes ticked. Each box is ticked by the evidence "
            "beside it, never by hand: a lesson that ran to its last cell, an exercise's tasks "
            "with full marks in my latest check (`python -m labkit check <assignment>`), a "
            "number a lesson measured, or a capstone's acceptance suite passed in full "
            "(`python -m labkit check capstone-<name>`). Run a lesson or a check again, then "
            "`python -m labkit progress --journal`, to bring it up to date.",
        ]
        for week in self.weeks:
            lines += ["", f"## {week['title']}", ""]
            for item in week["items"]:
                box = "x" if item["done"] else " "
                lines.append(f"- [{box}] {item['text']} — *{'; '.join(item['evidence'])}*")
            if week["numbers"]:
                lines += ["", "My numbers:", "", "| what | my value | from | recorded |"]
                lines.append("| --- | --- | --- | --- |")
                for row in week["numbers"]:
                    cells = [row[k].replace("|", "\\|") for k in ("what", "value", "from", "at")]
                    lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()

    __repr__ = __str__


def journal(directory: Path | None = None, root: Path | None = None) -> Journal:
    """The learning journal from the records in ``directory`` (default :func:`progress_dir`)
    and the exercises in ``root`` (default: the checkout); see :data:`JOURNAL`."""
    from labkit.course.grading import grade_cells

    root = root or config.project_root()
    directory = directory or progress_dir()

    def records(folder: str, *keys: str) -> list[dict]:  # a record of another shape: none
        found = _read_all(directory / folder)
        return [r for r in found if isinstance(r, dict) and all(k in r for k in keys)]

    lessons = {str(r["lesson"]): r for r in records("lessons", "lesson")}
    results = {
        f"{r['assignment']}/{r['notebook']}": r
        for r in records("exercises", "assignment", "notebook")
    }
    measured: dict[str, dict] = {}
    for record in records("numbers", "numbers"):
        entries = record["numbers"] if isinstance(record["numbers"], dict) else {}
        for key, entry in entries.items():
            if isinstance(entry, dict) and "value" in entry and key in NUMBERS:
                measured[key] = entry
    capstones = {str(r["capstone"]): r for r in records("capstones", "capstone")}
    from labkit.course.edition import assignment_folder, is_student_edition

    visible_only = is_student_edition(root)  # the student edition: visible tests, no score
    source = assignment_folder("_", root).parent
    notebooks = sorted(source.glob("*/*.ipynb")) if source.is_dir() else []
    lesson_files = sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))
    points_of: dict[Path, dict[str, float]] = {}  # grade id → points, per exercise notebook

    def lesson_evidence(evidence: Lesson) -> tuple[bool, str]:
        ran = sorted(
            (
                r.get("completed_at", "")
                for n, r in lessons.items()
                if fnmatch.fnmatch(n, evidence.lesson)
            ),
            reverse=True,
        )
        name = next(iter(fnmatch.filter(lesson_files, evidence.lesson)), evidence.lesson)
        if ran:
            return True, f"lesson {name} ran to the end {ran[0][:10]}"
        return False, f"lesson {name} has not run to its last cell yet"

    def tasks_evidence(evidence: Tasks) -> tuple[bool, str]:
        found = [
            p for p in notebooks if fnmatch.fnmatch(f"{p.parent.name}/{p.name}", evidence.notebook)
        ]
        if not found:
            return False, f"{evidence.notebook}: no such exercise in this course"
        path = found[0]
        key = f"{path.parent.name}/{path.name}"
        if path not in points_of:
            points_of[path] = grade_cells(path)
        points = points_of[path]
        wanted = evidence.tasks or tuple(points)
        record = results.get(key)
        if record is None:
            return (
                False,
                f"{path.name} not checked yet (`python -m labkit check {path.parent.name}`)",
            )
        if visible_only:
            visible = record.get("visible") if isinstance(record.get("visible"), dict) else {}
            passed = [t for t in wanted if visible.get(t) == "pass"]
            when = str(record.get("checked_at", ""))[:10]
            return len(passed) == len(wanted), (
                f"{path.name}: visible tests pass in {len(passed)} of {len(wanted)} test cells "
                f"(checked {when}; the hidden tests run when your instructor grades)"
            )
        full_notebook = _score(record.get("score")) >= sum(points.values()) - 1e-9
        scores = record.get("tasks") if isinstance(record.get("tasks"), dict) else {}
        earned = {}
        for task in wanted:
            top = points.get(task, 0.0)
            entry = scores.get(task)
            if isinstance(entry, dict) and "score" in entry:
                earned[task] = min(_score(entry["score"]), top)
            else:
                earned[task] = top if full_notebook else 0.0
        when = str(record.get("checked_at", ""))[:10]
        if evidence.tasks:
            done = all(earned[t] >= points.get(t, 0.0) - 1e-9 for t in wanted)
            parts = ", ".join(
                f"{t} {_points(earned[t])}/{_points(points.get(t, 0))}" for t in wanted
            )
        else:  # the whole notebook: its score
            total = sum(points.values())
            done = full_notebook
            parts = f"{_points(min(_score(record.get('score')), total))} / {_points(total)} points"
        return done, f"{path.name}: {parts} (checked {when})"

    def measured_evidence(evidence: Measured) -> tuple[bool, str]:
        have = [k for k in evidence.numbers if k in measured]
        lessons_named = sorted({NUMBERS[k].lesson for k in evidence.numbers})
        where = "lesson " + ", ".join(lessons_named)
        if len(have) == len(evidence.numbers):
            if len(have) == 1:
                return (
                    True,
                    f"{where} measured {_fmt(NUMBERS[have[0]], measured[have[0]]['value'])}",
                )
            return True, f"{where} recorded {len(have)} numbers (below)"
        return False, f"{where} recorded {len(have)} of {len(evidence.numbers)} numbers"

    def capstone_evidence(evidence: Capstone) -> tuple[bool, str]:
        record = capstones.get(evidence.name)
        command = f"`python -m labkit check capstone-{evidence.name}`"
        if record is None:
            return False, f"not run yet ({command})"
        when = str(record.get("checked_at", ""))[:10]
        size = record.get("size", "?")
        if record.get("passed") is True:
            return True, f"passed at size {size} ({when})"
        return False, f"last run at size {size} failed ({when}): run {command} for what to fix"

    check = {
        Lesson: lesson_evidence,
        Tasks: tasks_evidence,
        Measured: measured_evidence,
        Capstone: capstone_evidence,
    }
    weeks = []
    for week in JOURNAL:
        items = []
        for item in week.items:
            outcomes = [check[type(e)](e) for e in item.evidence]
            items.append(
                {
                    "text": item.text,
                    "done": all(ok for ok, _ in outcomes),
                    "evidence": [text for _, text in outcomes],
                }
            )
        numbers = [
            {
                "what": number.what or key,
                "value": _fmt(number, measured[key]["value"]),
                "from": f"lesson {number.lesson}, Step {number.step}",
                "at": str(measured[key].get("recorded_at", ""))[:10],
            }
            for key, number in NUMBERS.items()
            if number.step in week.steps and key in measured
        ]
        if any(s.capstone and s.step in week.steps for s in STEPS):  # acceptance numbers
            for name, record in capstones.items():
                found = record.get("numbers")
                for key, value in (found if isinstance(found, dict) else {}).items():
                    numbers.append(
                        {
                            "what": str(key),
                            "value": _fmt(None, value),
                            "from": f"capstone {name} (size {record.get('size', '?')}"
                            + (")" if record.get("passed") is True else ", a failed run)"),
                            "at": str(record.get("checked_at", ""))[:10],
                        }
                    )
        weeks.append({"title": week.title, "items": items, "numbers": numbers})
    return Journal(weeks, _now(), directory)


def write_journal(path: Path | None = None, directory: Path | None = None) -> Journal:
    """Write :func:`journal` as Markdown to ``path`` (default ``<progress dir>/journal.md``)."""
    directory = directory or progress_dir()
    report = journal(directory)
    target = Path(path) if path else directory / "journal.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.markdown())
    report.path = target
    return report
