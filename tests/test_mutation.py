"""Mutation testing of the exercises' hidden tests (labkit.course.mutation): the operators make the
slips they claim to, only inside solution regions; the reviewed list of equivalent mutants
is well-formed and current; and, for every assignment, nbgrader's real pipeline catches
every mutant that is not on that list. The per-assignment table is printed at the end of
the test run (conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labkit.course import grading, mutation

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading", autograded=True)

CELL = '''def cached_top(session, r, key, limit: int = 5):
    """Not mutated: outside the solution."""
    ### BEGIN SOLUTION
    statement = text("SELECT id FROM posts GROUP BY id, author_id ORDER BY view_count DESC, id LIMIT 5")
    with engine.begin() as conn:
        rows = conn.execute(statement).all()
    rows = sorted(rows, key=len)
    query = select(Post).order_by(Post.view_count.desc(), Post.id).limit(limit)
    try:
        r.set(key, json.dumps(rows), ex=300)
    except redis.RedisError:
        pass
    return rows if len(rows) >= 1 else None
    ### END SOLUTION
'''


def mutants_by_operator():
    found: dict[str, list[mutation.Mutant]] = {}
    for mutant in mutation.mutate_cell(CELL, "nb.ipynb", "cell"):
        found.setdefault(mutant.operator, []).append(mutant)
    return found


def changed_line(mutant: mutation.Mutant) -> str:
    """The first line of the mutant that differs from the cell."""
    old, new = CELL.splitlines(), mutant.source.splitlines()
    return next((b for a, b in zip(old, new, strict=False) if a != b), new[len(old) :][:1] or "")


def test_every_operator_makes_its_slip():
    """Each operator of OPERATORS produces the slip it names, as compilable code."""
    found = mutants_by_operator()
    assert set(found) == set(mutation.OPERATORS), set(mutation.OPERATORS) ^ set(found)
    sources = {op: [m.source for m in ms] for op, ms in found.items()}

    def some(operator, *needles, absent=()):
        return any(
            all(n in s for n in needles) and not any(a in s for a in absent)
            for s in sources[operator]
        )

    assert some("delete-statement", "    rows = sorted(rows, key=len)", absent=["r.set("])
    assert some("drop-keyword", "r.set(key, json.dumps(rows))")  # ex= dropped
    assert some("drop-chained-call", "select(Post).order_by(Post.view_count.desc(), Post.id)\n")
    assert some("drop-term", "ORDER BY view_count DESC LIMIT")  # ", id" left out, in SQL
    assert some("drop-term", "GROUP BY author_id ORDER")
    assert some("drop-term", ".order_by(Post.id)")  # in SQLAlchemy
    assert some("flip-direction", "ORDER BY view_count ASC")
    assert some("flip-direction", "Post.view_count.asc()")
    assert some("change-number", "ex=301") and some("change-number", "ex=0")
    assert some("change-number", "LIMIT 6") and some("change-number", "ex=300000")
    assert some("swap-statements", "    rows = sorted(rows, key=len)\n    with engine.begin()")
    assert some("move-with", "        rows = sorted(rows, key=len)\n    query =")  # into the block
    assert some("move-with", "        pass\n    rows = conn.execute")  # out of the block
    assert some("narrow-except", "except redis.ConnectionError:")
    assert some("narrow-except", "except redis.TimeoutError:")
    assert some("flip-comparison", "if len(rows) > 1 else")
    for ms in found.values():
        for m in ms:
            compile(m.source, m.describe(), "exec")


def test_only_solution_lines_change_and_ids_are_stable():
    """Lines outside the solution markers never change; an id is the same on every run,
    and different mutants have different ids."""
    first = mutation.mutate_cell(CELL, "nb.ipynb", "cell")
    again = mutation.mutate_cell(CELL, "nb.ipynb", "cell")
    assert [m.id for m in first] == [m.id for m in again]
    assert len({m.id for m in first}) == len(first)
    for m in first:
        assert m.source.splitlines()[:2] == CELL.splitlines()[:2], m.describe()
        assert m.source.rstrip().endswith("### END SOLUTION"), m.describe()
    assert mutation.mutate_cell("x = 1\n", "nb.ipynb", "no-markers") == []


def test_sampling_keeps_every_operator():
    """Sampling keeps at most N per cell and operator, chosen the same way every time."""
    every = mutation.mutate_cell(CELL, "nb.ipynb", "cell")
    sampled = mutation.sample(every, 1)
    assert {m.operator for m in sampled} == {m.operator for m in every}
    assert len(sampled) == len({m.operator for m in every})
    assert [m.id for m in mutation.sample(every, 1)] == [m.id for m in sampled]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_equivalents_are_reviewed_and_current(assignment):
    """Every listed equivalent has a reason and is still generated from today's solutions
    (a changed solution makes its entries stale: review them again)."""
    listed = mutation.equivalents(assignment, ROOT / "grading")
    generated = {m.id: m for m in mutation.mutants_of(assignment, ROOT / "grading")}
    stale = sorted(f"{e.id} ({e.mutant})" for e in listed.values() if e.id not in generated)
    assert not stale, f"listed as equivalent but no longer generated: {stale}"
    for entry in listed.values():
        assert len(entry.reason) > 20, f"{entry.id}: say why it behaves as the solution does"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_mutant_survives(assignment):
    """The mutation pass through nbgrader: every mutant is caught or listed as equivalent."""
    report = mutation.run(assignment, root=ROOT / "grading", workers=2)
    folder = Path(os.environ["LABKIT_MUTATION_REPORTS"])
    (folder / f"{assignment}.json").write_text(json.dumps({**report.row(), "text": str(report)}))
    assert not report.stale_equivalents, report.stale_equivalents
    assert not report.survived, "surviving mutants (holes in the hidden tests):\n" + "\n".join(
        f"{r.mutant.id} {r.mutant.notebook} {r.mutant.describe()}" for r in report.survived
    )


def test_each_answer_cell_knows_its_tasks_tests(tmp_path):
    """The tests of an answer cell's task: the test cells after it, up to the next task;
    two answer cells in a row share the tests that follow them."""
    import nbformat

    def cell(grade_id, *, solution=False, grade=False):
        new = nbformat.v4.new_code_cell("pass")
        new.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "grade": grade}
        return new

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        cell("setup"),
        cell("a", solution=True),
        cell("test_a", grade=True),
        cell("b", solution=True),
        cell("c", solution=True),
        cell("test_bc1", grade=True),
        cell("test_bc2", grade=True),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    tests, own = mutation._test_order(path)
    assert tests == ["test_a", "test_bc1", "test_bc2"]
    assert own == {"a": ["test_a"], "b": ["test_bc1", "test_bc2"], "c": ["test_bc1", "test_bc2"]}
