"""For every assignment under grading/source/: nbgrader's real pipeline gives full marks to
the solutions, zero to the untouched student version, and, for each plausible wrong answer
in tests/wrong_answers/<assignment>.py, takes away exactly the marks of the test cells it
targets. This is what proves the hidden tests can fail. (The students are graded in
parallel scratch courses: one wrong answer per answer cell alone, the others several to a
submission, at most one per answer cell — see ``plan``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_answers

from labkit.course import cells, grading, mutation

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading", autograded=True)


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

    Alone: for every answer cell, its first case (course cases first): a submission holding
    that slip only must lose exactly the tests the case lists, and nothing in any other task.
    Together: every other case and the right answers written another way, at most one per
    answer cell in each submission. A shared submission must lose exactly the union of its
    wrong answers' tests: a case that lost less, a right answer that lost marks, or a slip
    that cost marks in another task (a cascade) breaks the union, and then every answer of
    that submission's notebook is graded again, alone. (A cascade into a test that another answer of
    the same submission loses anyway is the one thing the union cannot show; the alone
    cases above check one slip per task for it.)"""
    cases = wrong_answers.cases(assignment)
    alternatives = wrong_answers.alternatives(assignment)
    order = sorted(range(len(cases)), key=lambda i: cases[i]["source"] != "course")
    alone, seen = [], set()
    for index in order:
        cells_of = {(cases[index]["notebook"], cell) for cell in cases[index]["answers"]}
        if not cells_of <= seen:
            seen |= cells_of
            alone.append(index)
    rest = [("wrong", i) for i in range(len(cases)) if i not in alone]
    rest += [("right", i) for i in range(len(alternatives))]
    rounds: list[list[tuple[tuple[str, int], tuple[str, str]]]] = []
    for kind, index in rest:
        item = (cases if kind == "wrong" else alternatives)[index]
        key = {(item["notebook"], cell) for cell in item["answers"]}
        home = next((r for r in rounds if not key & {k for _, k in r}), None)
        if home is None:
            home = []
            rounds.append(home)
        home.extend(((kind, index), k) for k in key)
    groups = [sorted({member for member, _ in r}) for r in rounds]
    return alone, groups


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_round_trip(assignment):
    """solution → full marks; release → zero; one wrong answer per answer cell, graded
    alone → loses exactly its tests' marks; the others, several to a submission → lose
    exactly the union of theirs (right answers written another way lose nothing), or are
    graded again alone. (That the release holds no solution and no hidden test line is
    test_instructor_workflow's test_student_copies_contain_no_solutions.)"""
    cases = wrong_answers.cases(assignment)
    alternatives = wrong_answers.alternatives(assignment)

    def item(member):
        kind, index = member
        return (cases if kind == "wrong" else alternatives)[index]

    def expected(members) -> dict[str, list[str]]:
        """notebook → the tests the members must lose, together."""
        losses: dict[str, set[str]] = {}
        for member in members:
            losses.setdefault(item(member)["notebook"], set())
            if member[0] == "wrong":
                losses[item(member)["notebook"]] |= set(item(member)["loses"])
        return {notebook: sorted(tests) for notebook, tests in losses.items()}

    def submission(members) -> dict[str, dict[str, str]]:
        answers: dict[str, dict[str, str]] = {}
        for member in members:
            answers.setdefault(item(member)["notebook"], {}).update(item(member)["answers"])
        return answers

    alone, groups = plan(assignment)
    students: dict = {"solutions": "solution", "untouched": "release"}
    for index in alone:
        students[f"alone-wrong{index:03d}"] = submission([("wrong", index)])
    for number, members in enumerate(groups):
        students[f"group{number:03d}"] = submission(members)
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

    def losses(student, members):
        return {notebook: lost(student, notebook) for notebook in expected(members)}

    maximum = sum(top for _, top in grades["solutions"].values())
    assert maximum > 0, f"{assignment} has no graded cells"
    assert total("solutions") == maximum, f"solutions scored {grades['solutions']}"
    assert total("untouched") == 0, f"the untouched release scored {grades['untouched']}"
    problems = []
    for index in alone:
        member = ("wrong", index)
        if losses(f"alone-wrong{index:03d}", [member]) != expected([member]):
            problems.append(
                f"{cases[index]['name']!r} (alone) lost "
                f"{losses(f'alone-wrong{index:03d}', [member])}, expected exactly "
                f"{expected([member])}"
            )
    again = []  # a notebook runs in a kernel and sandbox of its own: decided per notebook
    for number, members in enumerate(groups):
        got, wanted = losses(f"group{number:03d}", members), expected(members)
        for notebook in sorted(n for n in wanted if got[n] != wanted[n]):
            mine = [m for m in members if item(m)["notebook"] == notebook]
            print(
                f"group{number:03d}'s {notebook} lost {got[notebook]}, expected "
                f"{wanted[notebook]}: its {len(mine)} answers are graded again, alone"
            )
            again.extend(mine)
    if again:  # decided alone
        retry = {f"alone-{kind}{index:03d}": submission([(kind, index)]) for kind, index in again}
        grades.update(mutation.grade_answers(assignment, retry, root=ROOT / "grading", workers=2))
        for kind, index in again:
            got = losses(f"alone-{kind}{index:03d}", [(kind, index)])
            if got != expected([(kind, index)]):
                what = "the right answer" if kind == "right" else "the wrong answer"
                problems.append(
                    f"{what} {item((kind, index))['name']!r} lost {got}, expected exactly "
                    f"{expected([(kind, index)])}"
                )
    assert not problems, "answers graded otherwise than expected:\n" + "\n".join(problems)
    print(
        f"{assignment}: {len(alone)} wrong answers alone, "
        f"{sum(map(len, groups))} answers in {len(groups)} shared submissions, "
        f"{len(again)} graded again alone"
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
