"""For every assignment under grading/source/: nbgrader's real pipeline gives full marks to
the solutions, zero to the untouched student version, and, for each plausible wrong answer
in tests/wrong_answers/<assignment>.py, takes away exactly the marks of the test cells it
targets. This is what proves the hidden tests can fail. (The students are graded in
parallel scratch courses: each requirement's own wrong answer alone, the others together,
one per answer cell — see ``plan``.)"""

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


def plan(assignment: str):
    """Which answers are graded alone and which together.

    Alone: for every requirement, the first case that breaks it (course cases first), so
    that "loses exactly that test" is decided by a submission holding that slip only.
    Together: every other case and the right answers written another way, one per answer
    cell in each submission (a task's answer cannot change an earlier task's test); each
    must lose (or, a right answer, keep) its own task's tests, else it is graded again alone."""
    cases = wrong_answers.cases(assignment)
    order = sorted(range(len(cases)), key=lambda i: cases[i]["source"] != "course")
    alone, seen = [], set()
    for index in order:
        if cases[index]["breaks"] not in seen:
            seen.add(cases[index]["breaks"])
            alone.append(index)
    together = [("wrong", i) for i in range(len(cases)) if i not in alone]
    together += [("right", i) for i in range(len(wrong_answers.alternatives(assignment)))]
    return alone, together


def own_tests(assignment: str, notebook: str, answers) -> set[str]:
    tasks = cells.task_tests(ROOT / "grading" / "source" / assignment / notebook)
    return {test for answer in answers for test in tasks[answer]}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_round_trip(assignment):
    """solution → full marks; release → zero; each requirement's own wrong answer, graded
    alone → loses exactly its tests' marks; every other wrong answer → loses its task's
    marks; each right answer written another way → keeps its task's marks."""
    cases = wrong_answers.cases(assignment)
    alternatives = wrong_answers.alternatives(assignment)
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(assignment)
        # The release is a real student version: no solutions, no hidden tests.
        for notebook in release.glob("*.ipynb"):
            text = notebook.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, notebook.name
    alone, together = plan(assignment)
    students: dict = {"solutions": "solution", "untouched": "release"}
    for index in alone:
        students[f"alone{index:03d}"] = {cases[index]["notebook"]: cases[index]["answers"]}
    rounds: list[list[tuple[str, int]]] = []
    for kind, index in together:
        item = (cases if kind == "wrong" else alternatives)[index]
        key = {(item["notebook"], cell) for cell in item["answers"]}
        home = next((r for r in rounds if not key & {k for _, k in r}), None)
        if home is None:
            home = []
            rounds.append(home)
        home.extend(((kind, index), k) for k in key)
    groups = [sorted({member for member, _ in r}) for r in rounds]
    for number, members in enumerate(groups):
        answers: dict[str, dict[str, str]] = {}
        for kind, index in members:
            item = (cases if kind == "wrong" else alternatives)[index]
            answers.setdefault(item["notebook"], {}).update(item["answers"])
        students[f"group{number:03d}"] = answers
    grades = mutation.grade_answers(assignment, students, root=ROOT / "grading", workers=2)

    def lost(student, notebook):
        stem = Path(notebook).stem
        return sorted(
            cell.split(":", 1)[1]
            for cell, (score, top) in grades[student].items()
            if cell.startswith(stem + ":") and score < top
        )

    def total(student):
        return sum(score for score, _ in grades[student].values())

    maximum = sum(top for _, top in grades["solutions"].values())
    assert maximum > 0, f"{assignment} has no graded cells"
    assert total("solutions") == maximum, f"solutions scored {grades['solutions']}"
    assert total("untouched") == 0, f"the untouched release scored {grades['untouched']}"
    problems = []
    for index in alone:
        case = cases[index]
        if lost(f"alone{index:03d}", case["notebook"]) != sorted(case["loses"]):
            problems.append(
                f"{case['name']!r} (alone) lost {lost(f'alone{index:03d}', case['notebook'])}, "
                f"expected exactly {sorted(case['loses'])}"
            )
    again = {}
    for number, members in enumerate(groups):
        for kind, index in members:
            item = (cases if kind == "wrong" else alternatives)[index]
            own = own_tests(assignment, item["notebook"], item["answers"])
            hit = set(lost(f"group{number:03d}", item["notebook"])) & own
            if (kind == "wrong" and not hit) or (kind == "right" and hit):
                again[f"{kind}{index:03d}"] = (kind, index)
    if again:  # decided alone
        retry = {
            name: {item["notebook"]: item["answers"]}
            for name, (kind, index) in again.items()
            for item in [(cases if kind == "wrong" else alternatives)[index]]
        }
        grades.update(mutation.grade_answers(assignment, retry, root=ROOT / "grading", workers=2))
        for name, (kind, index) in again.items():
            item = (cases if kind == "wrong" else alternatives)[index]
            got = lost(name, item["notebook"])
            if kind == "wrong" and got != sorted(item["loses"]):
                problems.append(f"{item['name']!r} lost {got}, expected {sorted(item['loses'])}")
            if kind == "right" and got:
                problems.append(f"the right answer {item['name']!r} lost marks on {got}")
    assert not problems, "answers graded otherwise than expected:\n" + "\n".join(problems)
    print(
        f"{assignment}: {len(alone)} wrong answers alone, {len(together)} answers in "
        f"{len(groups)} shared submissions, {len(again)} graded again alone"
    )


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
