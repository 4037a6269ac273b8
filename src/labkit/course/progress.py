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

From a terminal: ``python -m labkit progress``.

Two kinds of evidence, both written on your machine only (``<state dir>/progress/``, or
``LABKIT_PROGRESS_DIR``; git-ignored):

- a lesson counts as run when its last cell called :func:`record_lesson` — which only
  happens when every cell above it ran without an error;
- an exercise notebook counts with the score of your latest full check
  (``python -m labkit check <assignment>``, which autogrades it with the hidden tests).

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
    "PHASES",
    "STEPS",
    "Progress",
    "Step",
    "overview",
    "progress_dir",
    "record_exercise",
    "record_lesson",
]

PHASES: dict[int, str] = {
    0: "Start",
    1: "Performance and optimization",
    2: "Production architecture",
    3: "Security and scale",
    4: "Specialized topics",
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


def _read_all(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a damaged record counts as no record
    return records


def _available_exercises(root: Path) -> dict[tuple[str, str], float]:
    """(assignment, notebook file) → points, for every exercise notebook in ``grading/source``."""
    from labkit.course.grading import grade_cells

    source = root / "grading" / "source"
    found = {}
    for path in sorted(source.glob("*/*.ipynb")) if source.is_dir() else []:
        found[(path.parent.name, path.name)] = sum(grade_cells(path).values())
    return found


def _points(value: float) -> str:
    return f"{value:g}"


@dataclass(repr=False)
class Progress:
    """Per-step and per-phase progress; a table in a notebook, text in a terminal."""

    steps: list[dict]
    phases: list[dict]
    evidence: int

    @property
    def note(self) -> str:
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
    lesson_files = sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))

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
        earned = sum(min(float(r["score"]), notebooks[k]) for k, r in checked.items())
        total = sum(notebooks.values())
        full = all(
            k in checked and float(checked[k]["score"]) >= points - 1e-9
            for k, points in notebooks.items()
        )
        if not lesson_exists and not notebooks:
            status = "coming soon"
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
        if not notebooks:
            exercise_text = "—"
        elif not checked:
            exercise_text = f"0 / {_points(total)} (not checked yet)"
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
                "exercise points": f"{_points(earned)} / {_points(total)}" if total else "—",
                "status": status,
            }
        )
    for row in steps:
        del row["_earned"], row["_total"]
    return Progress(steps, phases, evidence=len(lessons) + len(results))
