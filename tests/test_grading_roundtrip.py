"""For every assignment under grading/source/: nbgrader's real pipeline gives full marks to
the solutions, zero to the untouched student version, and, for each plausible wrong answer
in tests/wrong_answers/<assignment>.py, takes away exactly the marks of the test cells it
targets. This is what proves the hidden tests can fail. (The students are graded in
parallel scratch courses; a wrong answer's notebook is submitted alone.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_answers

from labkit.course import cells, grading, mutation

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_assignment_has_wrong_answers(assignment):
    """Each answer cell of each notebook is targeted by at least one wrong answer."""
    cases = wrong_answers.cases(assignment)
    source = ROOT / "grading" / "source" / assignment
    for notebook in sorted(source.glob("*.ipynb")):
        answers = grading.solution_cells(notebook)
        targeted = {
            gid for case in cases if case["notebook"] == notebook.name for gid in case["answers"]
        }
        missing = sorted(set(answers) - targeted)
        assert not missing, f"{assignment}/{notebook.name}: no wrong answer targets {missing}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_round_trip(assignment):
    """solution → full marks; release → zero; each wrong answer → loses its tests' marks;
    each right answer written another way → full marks."""
    cases = wrong_answers.cases(assignment)
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(assignment)
        # The release is a real student version: no solutions, no hidden tests.
        for notebook in release.glob("*.ipynb"):
            text = notebook.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, notebook.name
    students: dict = {"solutions": "solution", "untouched": "release"}
    for index, case in enumerate(cases):
        students[f"wrong{index:03d}"] = {case["notebook"]: case["answers"]}
    alternatives = wrong_answers.alternatives(assignment)
    for index, right in enumerate(alternatives):
        students[f"right{index:03d}"] = {right["notebook"]: right["answers"]}
    grades = mutation.grade_answers(assignment, students, root=ROOT / "grading", workers=2)

    def total(student):
        return sum(score for score, _ in grades[student].values())

    maximum = sum(top for _, top in grades["solutions"].values())
    assert maximum > 0, f"{assignment} has no graded cells"
    assert total("solutions") == maximum, f"solutions scored {grades['solutions']}"
    assert total("untouched") == 0, f"the untouched release scored {grades['untouched']}"
    wrong = []
    for index, case in enumerate(cases):
        stem = Path(case["notebook"]).stem
        lost = sorted(
            cell.split(":", 1)[1]
            for cell, (score, top) in grades[f"wrong{index:03d}"].items()
            if cell.startswith(stem + ":") and score < top
        )
        if lost != sorted(case["loses"]):
            wrong.append(f"{case['name']!r} lost {lost}, expected exactly {sorted(case['loses'])}")
    for index, right in enumerate(alternatives):
        lost = sorted(cell for cell, (score, top) in grades[f"right{index:03d}"].items()
                      if cell.startswith(Path(right["notebook"]).stem + ":") and score < top)  # fmt: skip
        if lost:
            wrong.append(f"the right answer {right['name']!r} lost marks on {lost}")
    assert not wrong, "wrong answers that did not lose exactly their tests:\n" + "\n".join(wrong)


def test_release_keeps_visible_tests():
    """The student version still has the visible tests (a learner can check their work)."""
    for assignment in ASSIGNMENTS:
        for path in (ROOT / "grading" / "source" / assignment).glob("*.ipynb"):
            graded = [c for c in cells.read(path) if c.kind == "test"]
            assert graded, f"{path.name} has no test cells"
            for cell in graded:
                visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
                assert "assert" in visible, f"{path.name}: a test cell has no visible assertion"
                assert cell.source.lstrip().startswith('"""'), (
                    f"{path.name}: every test cell starts with a one-line docstring"
                )
