"""A learner checks their own notebook: visible tests at once, then nbgrader's full
autograde with hidden tests — per-task scores and messages, no hidden test code — and
the result is recorded for progress tracking. The learner's file and their own
database are left alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import wrong_answers
from notebook_text import HIDDEN, normalize, secret_lines

from labkit import db
from labkit.course import grading, selfcheck

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading", autograded=True)


def learner_notebooks(assignment: str, folder: Path, answers_for) -> dict[str, Path]:
    """The learner's work: the committed student copies with some answers filled in."""
    source = ROOT / "grading" / "source" / assignment
    written = {}
    for path in sorted(source.glob("*.ipynb")):
        written[path.name] = grading.apply_answers(
            ROOT / "exercises" / assignment / path.name,
            answers_for(path.name, grading.solution_cells(path)),
            folder / path.name,
        )
    return written


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_check_scores_like_the_instructor(assignment, tmp_path, monkeypatch):
    """All answers right but one plausible wrong one: the check takes away exactly the marks
    of the tests it targets, says why, shows no hidden test code, and records the result."""
    monkeypatch.setenv("LABKIT_PROGRESS_DIR", str(tmp_path / "progress"))
    case = wrong_answers.cases(assignment)[0]

    def answers(name, solutions):
        return {**solutions, **case["answers"]} if name == case["notebook"] else solutions

    mine = learner_notebooks(assignment, tmp_path / "mine", answers)
    before = {name: path.read_bytes() for name, path in mine.items()}

    result = selfcheck.check(assignment, tmp_path / "mine")

    assert {name: path.read_bytes() for name, path in mine.items()} == before
    lost = sorted(t.task for t in result.tasks if t.score < t.points)
    assert lost == sorted(case["loses"]), f"{case['name']!r} lost {lost}"
    points = {
        (name, grade_id): value
        for name in mine
        for grade_id, value in grading.grade_cells(
            ROOT / "grading" / "source" / assignment / name
        ).items()
    }
    assert {(t.notebook, t.task): t.points for t in result.tasks} == points
    assert result.max_score == sum(points.values())
    assert result.score == result.max_score - sum(
        points[(case["notebook"], grade_id)] for grade_id in case["loses"]
    )
    hidden = {
        line
        for name in mine
        for line in secret_lines(ROOT / "grading" / "source" / assignment / name, HIDDEN)
    }
    for task in result.tasks:
        assert task.visible in {"pass", "fail"}, f"{task.task}: visible tests not run"
        if task.task in case["loses"]:
            assert task.message, f"{task.task} lost its marks without a message"
        else:
            assert task.message == "", f"{task.task} passed but says {task.message!r}"
            assert task.visible == "pass", f"{task.task}: a right answer fails a visible test"
        assert not any(line in normalize(task.message) for line in hidden), task.message
        assert task.checks, f"{task.task}: the test cell's docstring is missing"

    for name in mine:
        recorded = json.loads(
            (
                tmp_path / "progress" / "exercises" / assignment / f"{Path(name).stem}.json"
            ).read_text()
        )
        mine_tasks = [t for t in result.tasks if t.notebook == name]
        assert recorded["score"] == sum(t.score for t in mine_tasks)
        assert recorded["max_score"] == sum(t.points for t in mine_tasks)
    text = str(result)
    assert f"{result.score:g} / {result.max_score:g} points" in text


def test_check_command(tmp_path):
    """`python -m labkit check A NOTEBOOK --quick` runs the visible tests and says which
    tasks are not answered yet, without touching the learner's own database (the one their
    open notebook uses); a wrong assignment name is a clear error."""
    mine = learner_notebooks(
        "00-warmup", tmp_path, lambda name, solutions: {"top_authors": solutions["top_authors"]}
    )["warmup.ipynb"]
    own = db.fresh_database("ex_00_warmup")
    with own.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE my_notes (note text)")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "labkit", "check", "00-warmup", str(mine), "--quick"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        with own.connect() as conn:
            assert conn.execute("SELECT count(*) FROM my_notes").fetchone()[0] == 0
    finally:
        db.drop_database("ex_00_warmup")
    assert proc.returncode == 0, proc.stderr
    assert "[pass] test_top_authors" in proc.stdout, proc.stdout
    assert "[FAIL] test_published_titles" in proc.stdout, proc.stdout
    assert proc.stdout.count(selfcheck.NOT_ANSWERED) >= 2, proc.stdout
    assert "visible tests pass in 1 of 3" in proc.stdout, proc.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "labkit", "check", "no-such-assignment"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "no assignment 'no-such-assignment'" in wrong.stderr
