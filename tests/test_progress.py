"""Progress is computed from the learner's own results — lessons that ran to their last
cell, and the latest check of each exercise notebook — per step and per phase, in the
notebook and on the command line. Nothing to tick by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from labkit.course import grading, progress

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def step(report: progress.Progress, number: int) -> dict:
    return next(row for row in report.steps if row["step"] == number)


def phase(report: progress.Progress, number: int) -> dict:
    return next(row for row in report.phases if row["phase"] == number)


def warmup_points() -> float:
    return sum(
        grading.grade_cells(ROOT / "grading" / "source" / "00-warmup" / "warmup.ipynb").values()
    )


def test_every_exercise_notebook_belongs_to_exactly_one_step():
    """The declarative table covers every notebook under grading/source, once."""
    import fnmatch

    for path in sorted((ROOT / "grading" / "source").glob("*/*.ipynb")):
        key = f"{path.parent.name}/{path.name}"
        steps = [
            s.step for s in progress.STEPS if any(fnmatch.fnmatch(key, p) for p in s.exercises)
        ]
        assert len(steps) == 1, f"{key} belongs to steps {steps}: fix labkit.course.progress.STEPS"


def test_every_lesson_records_that_it_ran_to_the_end():
    """The last code cell of every lesson calls progress.record_lesson('<its own name>')."""
    for path in LESSONS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        expected = f'progress.record_lesson("{path.stem}")'
        assert cells and expected in cells[-1].source, (
            f"{path.name}: make its last code cell `from labkit.course import progress` + `{expected}`"
        )


def test_empty_state(tmp_path):
    """No results yet: nothing is done, the points available come from the exercises."""
    report = progress.overview(tmp_path)
    assert report.evidence == 0 and "Nothing recorded yet" in report.note
    assert {row["status"] for row in report.steps} <= {"not started", "coming soon"}
    assert step(report, 0)["exercises"] == f"0 / {warmup_points():g} (not checked yet)"
    assert step(report, 0)["lesson"] == "not run yet"
    assert phase(report, 0)["steps done"] == "0 / 1"
    assert phase(report, 2)["status"] == "not started"  # its lesson and exercises are in
    assert phase(report, 3)["status"] == "not started"  # its exercises are in
    assert phase(report, 4)["status"] == "not started"  # its exercises are in
    html = report._repr_html_()
    assert "Per phase" in html and "Start here and warm-up" in html


def test_results_make_progress(tmp_path):
    """A lesson run and a partial check → in progress; full marks → done (step and phase)."""
    total = warmup_points()
    progress.record_lesson("00-start-here", tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["status"] == "in progress"
    assert step(report, 0)["lesson"].startswith("ran ")

    progress.record_exercise("00-warmup", "warmup.ipynb", 2, total, directory=tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["exercises"] == f"2 / {total:g}"
    assert step(report, 0)["status"] == "in progress"

    progress.record_exercise("00-warmup", "warmup.ipynb", total, total, directory=tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["status"] == "done"
    assert phase(report, 0)["status"] == "done" and phase(report, 0)["steps done"] == "1 / 1"
    assert phase(report, 1)["status"] in {"not started", "coming soon"}
    assert report.evidence == 2


def test_lessons_run_by_the_tests_do_not_count_as_the_learners(tmp_path):
    """The test run records lessons in its own folder, never in the learner's .labkit/."""
    assert os.environ.get("LABKIT_PROGRESS_DIR"), "tests/conftest.py must set LABKIT_PROGRESS_DIR"
    assert Path(os.environ["LABKIT_PROGRESS_DIR"]) != ROOT / ".labkit" / "progress"


def test_progress_command(tmp_path):
    """`python -m labkit progress` shows the same, as text or JSON."""
    progress.record_exercise("00-warmup", "warmup.ipynb", 4, warmup_points(), directory=tmp_path)
    env = {**os.environ, "LABKIT_PROGRESS_DIR": str(tmp_path)}
    text = subprocess.run(
        [sys.executable, "-m", "labkit", "progress"], capture_output=True, text=True, env=env
    )
    assert text.returncode == 0, text.stderr
    assert "Start here and warm-up" in text.stdout and f"4 / {warmup_points():g}" in text.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "labkit", "progress", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(as_json.stdout) == progress.overview(tmp_path).as_dict()
