"""The capstones' write-ups: an nbgrader assignment (``grading/source/05-capstones/``) whose
answers the instructor grades by hand in formgrader, with the rubric under each question.

Proved here with nbgrader's real pipeline, as for the exercises: the release holds no model
answer; an untouched copy scores 0 without a grader's time; a written answer waits for a
hand grade; the grades an instructor gives (formgrader writes them to the gradebook, as
this test does) reach the CSV export and the student's feedback, comments included."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest

from labkit.course import cells, grading
from labkit.errors import GradingError

ROOT = Path(__file__).resolve().parents[2]
MANUAL = grading.assignments(ROOT / "grading", autograded=False)
RUBRIC_LINE = re.compile(r"^\s*[-*]\s*\**(\d+(?:\.\d+)?)\s+points?\b", re.I | re.M)

pytestmark = pytest.mark.capstone


def notebooks(assignment: str) -> list[Path]:
    return sorted((ROOT / "grading" / "source" / assignment).glob("*.ipynb"))


def test_the_capstones_write_ups_are_graded_by_hand():
    assert MANUAL == ["05-capstones"], MANUAL
    names = sorted(p.stem for p in notebooks("05-capstones"))
    assert names == ["analytics", "collab", "marketplace"], names


@pytest.mark.parametrize(
    "path", [p for a in MANUAL for p in notebooks(a)], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_each_question_carries_its_rubric(path: Path):
    """Every answer graded by hand follows a locked question whose rubric lines
    (``- N points: what earns them``) add up to the answer's points; the model answer is
    between the solution markers (nbgrader replaces it for students)."""
    read = cells.read(path)
    manual = [c for c in read if c.kind == "manual"]
    assert len(manual) >= 3, f"{path.name}: {len(manual)} questions graded by hand (3-5 wanted)"
    assert not cells.tests(path) and not cells.answers(path), "a write-up holds no code task"
    for cell in manual:
        question = read[cell.index - 1]
        assert question.kind == "task", f"{cell.grade_id}: the cell before it is not a question"
        points = [float(p) for p in RUBRIC_LINE.findall(question.source)]
        assert points and sum(points) == cell.points > 0, (
            f"{path.name} {cell.grade_id}: rubric lines give {points} for {cell.points} points"
        )
        body = cell.source.split("### BEGIN SOLUTION", 1)[-1].split("### END SOLUTION", 1)[0]
        assert "### BEGIN SOLUTION" in cell.source and len(body.split()) >= 30, (
            f"{cell.grade_id}: the model answer (for instructors) is missing or too short"
        )


@pytest.mark.parametrize("assignment", MANUAL)
def test_write_ups_round_trip_through_nbgrader(assignment: str, tmp_path: Path):
    """release → no model answer; untouched → 0, nothing to grade by hand; model answers and
    a half-written copy → each written answer waits for a hand grade; the instructor's
    grades and comments → the CSV export and the feedback page."""
    from nbgrader.api import Gradebook

    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(assignment)
        source = course.source_dir(assignment)
        names = course.notebooks(assignment)
        model_lines = {
            line.strip()
            for name in names
            for cell in cells.read(source / name)
            if cell.kind == "manual"
            for line in cell.source.split("### BEGIN SOLUTION", 1)[-1].splitlines()
            if len(line.strip()) > 25 and "END SOLUTION" not in line
        }
        for name in names:
            text = (release / name).read_text()
            leaked = [line for line in model_lines if line in text]
            assert not leaked, f"the release of {name} holds model answer lines: {leaked[:2]}"
            released = cells.read(release / name)
            assert all("YOUR ANSWER HERE" in c.source for c in released if c.kind == "manual"), (
                f"{name}: an answer cell of the release is not a blank to fill in"
            )

        half = tmp_path / "half"
        half.mkdir()
        written: dict[str, list[str]] = {}
        for name in names:
            notebook = nbformat.read(release / name, as_version=4)
            model = {c.grade_id: c.source for c in cells.read(source / name)}
            answers = [c for c in cells.read(notebook) if c.kind == "manual"]
            written[name] = [c.grade_id for c in answers[: len(answers) // 2 + 1]]
            for cell in answers[: len(answers) // 2 + 1]:
                notebook.cells[cell.index].source = (
                    model[cell.grade_id]
                    .replace("### BEGIN SOLUTION\n", "")
                    .replace("### END SOLUTION", "")
                )
            nbformat.write(notebook, half / name)
        course.submit(assignment, "model", source)
        course.submit(assignment, "untouched", release)
        course.submit(assignment, "half", half)
        course.autograde(assignment)

        maximum = sum(sum(cells.manual(source / n).values()) for n in names)
        with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gradebook:
            pending = {
                s.student.id: sorted(
                    f"{nb.name}:{g.name}"
                    for nb in s.notebooks
                    for g in nb.grades
                    if g.needs_manual_grade
                )  # fmt: skip
                for s in gradebook.assignment_submissions(assignment)
            }
            every = sorted(f"{Path(n).stem}:{g}" for n in names for g in cells.manual(source / n))
            assert pending["model"] == every
            assert pending["untouched"] == [], "a blank answer must not wait for a grader"
            assert pending["half"] == sorted(
                f"{Path(n).stem}:{g}" for n in names for g in written[n]
            )
        waiting = {student: found for student, found in pending.items() if found}
        assert course.awaiting_hand_grades(assignment) == waiting
        # Until they are graded, their 0 must not reach a student or the grade book.
        with pytest.raises(GradingError, match="wait for your grade by hand"):
            course.export(tmp_path / "too-early.csv", assignment)
        with pytest.raises(GradingError, match="half \\(\\d+\\), model \\(\\d+\\)"):
            course.feedback(assignment)
        assert not (tmp_path / "too-early.csv").exists()
        with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gradebook:
            # What formgrader does when the instructor grades: a manual score (and a comment)
            # per answer, saved in the gradebook.
            given = {"model": 0.0, "half": 0.0}
            for student in given:
                for name in names:
                    stem = Path(name).stem
                    for grade_id, points in cells.manual(source / name).items():
                        if f"{stem}:{grade_id}" not in pending[student]:
                            continue
                        score = points if student == "model" else points / 2
                        grade = gradebook.find_grade(grade_id, stem, assignment, student)
                        grade.manual_score = score
                        given[student] += score
                        comment = gradebook.find_comment(grade_id, stem, assignment, student)
                        comment.manual_comment = f"Graded by hand: {score:g} of {points:g}."
            gradebook.db.commit()
        assert course.awaiting_hand_grades(assignment) == {}
        course.autograde(assignment)  # graded again (a resubmission elsewhere): hand grades stay
        assert course.awaiting_hand_grades(assignment) == {}
        scores = course.scores(assignment)
        assert scores["model"].score == maximum == given["model"]
        assert scores["untouched"].score == 0
        assert 0 < scores["half"].score == given["half"] < maximum
        exported = course.export(tmp_path / "grades.csv", assignment)
        rows = {r["student_id"]: r for r in grading.read_grades_csv(exported)}
        assert float(rows["model"]["score"]) == maximum == float(rows["model"]["max_score"])
        assert float(rows["half"]["score"]) == given["half"]
        assert float(rows["untouched"]["score"]) == 0
        pages = course.feedback(assignment)
        model_pages = [p for p in pages if "/model/" in str(p)]
        assert len(model_pages) == len(names)
        text = html.unescape(" ".join(p.read_text() for p in model_pages))
        assert "Graded by hand:" in text, "the instructor's comments reach the feedback"


def test_checking_a_write_up_says_it_is_graded_by_hand(capsys):
    from labkit.course import selfcheck

    assert selfcheck.main("05-capstones", None, quick=False) == 0
    said = capsys.readouterr().out
    assert "grades its answers by hand" in said and "capstone-" in said
