"""Every requirement that a task's text states is in the assignment's requirement table
(tests/wrong_answers/<assignment>.py), quoted from the text, with the test cell that checks
it and at least one plausible wrong answer that breaks only it. Every sentence of a task's
text is either quoted by a requirement or listed as context, so a sentence added to a task
cannot go unread. (test_grading_roundtrip.py grades the wrong answers.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_answers

from labkit.course import cells, grading

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading", autograded=True)


def task_texts(assignment: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(notebook, task markdown grade_id) → (its text, the answer cells it asks for)."""
    found: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for path in sorted((ROOT / "grading" / "source" / assignment).glob("*.ipynb")):
        current = None
        for cell in cells.read(path):
            if cell.kind == "task" and (cell.grade_id or "").startswith("task"):
                current = (path.name, cell.grade_id)
                found[current] = (cell.source, [])
            elif cell.kind == "answer" and current:
                found[current][1].append(cell.grade_id)
    return found


def task_of(assignment: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(notebook, answer cell) → (its task's key, its task's text)."""
    return {
        (key[0], answer): (key[1], text)
        for key, (text, answers) in task_texts(assignment).items()
        for answer in answers
    }


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_requirement_quotes_its_task(assignment):
    """Each requirement names a real answer cell and test cell, and quotes its task's text."""
    tasks = task_of(assignment)
    ids = [r.id for r in wrong_answers.requirements(assignment)]
    assert len(ids) == len(set(ids)), f"duplicate requirement ids in {assignment}"
    for requirement in wrong_answers.requirements(assignment):
        key = (requirement.notebook, requirement.answer)
        assert key in tasks, f"{requirement.id}: no answer cell {key} in a task"
        text = wrong_answers.normalize(tasks[key][1])
        assert wrong_answers.normalize(requirement.text) in text, (
            f"{requirement.id}: {requirement.text!r} is not in the text of "
            f"{requirement.notebook} {tasks[key][0]}"
        )
        source = ROOT / "grading" / "source" / assignment / requirement.notebook
        assert requirement.test in grading.grade_cells(source), (
            f"{requirement.id}: no test cell {requirement.test} in {requirement.notebook}"
        )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_sentence_is_a_requirement_or_context(assignment):
    """No sentence of a task's text goes unread: each holds a requirement's quote, or a
    phrase listed as context (background, hints)."""
    requirements = wrong_answers.requirements(assignment)
    context = wrong_answers.context(assignment)
    unread = []
    for (notebook, task), (text, answers) in task_texts(assignment).items():
        quotes = [wrong_answers.normalize(r.text) for r in requirements
                  if r.notebook == notebook and r.answer in answers]  # fmt: skip
        quotes += [wrong_answers.normalize(q) for q in context.get((notebook, task), [])]
        for sentence in wrong_answers.sentences(text):
            if len(sentence.split()) >= 4 and not any(q in sentence for q in quotes):
                unread.append(f"{notebook} {task}: {sentence!r}")
    assert not unread, "sentences that are neither a requirement nor context:\n" + "\n".join(unread)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_requirement_has_a_wrong_answer_of_its_own(assignment):
    """Each requirement has a case that breaks it alone: it changes that requirement's
    answer cell only and must lose exactly that requirement's test cell. Every case names
    the requirement it breaks, and every answer cell has requirements."""
    requirements = {r.id: r for r in wrong_answers.requirements(assignment)}
    cases = wrong_answers.cases(assignment)
    for case in cases:
        assert case.get("breaks") in requirements, (
            f"case {case['name']!r} breaks {case.get('breaks')!r}: not in the requirement table"
        )
        assert case.get("source") in {"course", "outside review"}, case["name"]
    missing = []
    for requirement in requirements.values():
        own = [
            case for case in cases
            if case["breaks"] == requirement.id
            and case["notebook"] == requirement.notebook
            and set(case["answers"]) == {requirement.answer}
            and case["loses"] == [requirement.test]
        ]  # fmt: skip
        if not own:
            missing.append(requirement.id)
    assert not missing, f"requirements without a wrong answer of their own: {missing}"
    for notebook in sorted((ROOT / "grading" / "source" / assignment).glob("*.ipynb")):
        covered = {r.answer for r in requirements.values() if r.notebook == notebook.name}
        uncovered = sorted(set(grading.solution_cells(notebook)) - covered)
        assert not uncovered, f"{notebook.name}: answer cells without requirements: {uncovered}"
