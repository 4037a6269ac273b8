"""For every assignment under grading/source/: nbgrader's real pipeline gives
full marks to the solutions, zero to the untouched student version, and, for each
plausible wrong answer in tests/wrong_answers/<assignment>.py, takes away exactly the
marks of the tests that target it. This is what proves the hidden tests can fail."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import wrong_answers

from labkit import grading

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
def test_round_trip(assignment, tmp_path):
    """solution → full marks; release → zero; each wrong answer → loses its tests' marks."""
    cases = wrong_answers.cases(assignment)
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(assignment)
        source = course.source_dir(assignment)

        # The release is a real student version: no solutions, no hidden tests.
        for notebook in release.glob("*.ipynb"):
            text = notebook.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, notebook.name

        course.submit(assignment, "solutions", source)
        course.submit(assignment, "untouched", release)
        for index, case in enumerate(cases):
            notebooks = {p.name: p for p in source.glob("*.ipynb")}
            notebooks[case["notebook"]] = grading.apply_answers(
                source / case["notebook"],
                case["answers"],
                tmp_path / f"wrong{index}" / case["notebook"],
            )
            course.submit(assignment, f"wrong{index}", notebooks)
        course.autograde(assignment)
        scores = course.scores(assignment)

    full = scores["solutions"]
    assert full.max_score > 0, f"{assignment} has no graded cells"
    assert full.full_marks, f"solutions scored {full.score}/{full.max_score}: {full.cells}"
    assert scores["untouched"].score == 0, (
        f"the untouched release scored {scores['untouched'].score}: {scores['untouched'].cells}"
    )
    for index, case in enumerate(cases):
        got = scores[f"wrong{index}"]
        lost = sorted(k.split(":", 1)[1] for k, v in got.cells.items() if v < got.max_cells[k])
        expected = sorted(case["loses"])
        assert lost == expected, (
            f"wrong answer {case['name']!r} lost marks on {lost}, expected exactly {expected}"
        )


def test_release_keeps_visible_tests():
    """The student version still has the visible tests (a learner can check their work)."""
    for assignment in ASSIGNMENTS:
        for path in (ROOT / "grading" / "source" / assignment).glob("*.ipynb"):
            notebook = nbformat.read(path, as_version=4)
            graded = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")]
            assert graded, f"{path.name} has no test cells"
            for cell in graded:
                visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
                assert "assert" in visible, f"{path.name}: a test cell has no visible assertion"
                assert cell.source.lstrip().startswith('"""'), (
                    f"{path.name}: every test cell starts with a one-line docstring"
                )
