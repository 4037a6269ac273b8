"""A student whose answer never returns costs the class one cell timeout, not the whole run:
the cell is interrupted, the student loses that task only (with "this cell ran past N s" in
the feedback), and everyone else is graded as usual — also when the student's code ignores
the interrupt."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest

from labkit.course import grading
from labkit.course.nbgrader_ext import CELL_TIMEOUT_ENV, cell_timeout, timeout_message

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 5
NEVER_RETURNS = """def most_viewed_posts(session, limit=10):
    while True:
        pass"""
IGNORES_INTERRUPT = """import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)


def most_viewed_posts(session, limit=10):
    while True:
        pass"""


def test_cell_timeout_applies_to_answers_and_tests_only(monkeypatch):
    """Setup cells keep the long timeout; answer and test cells get the short one."""
    monkeypatch.setenv(CELL_TIMEOUT_ENV, "7")
    answer = {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": "a"}}}
    test = {"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "grade_id": "t"}}}
    setup = {"cell_type": "code", "metadata": {"nbgrader": {"locked": True, "grade_id": "setup"}}}
    assert (cell_timeout(answer), cell_timeout(test)) == (7, 7)
    assert cell_timeout(setup) == 300
    monkeypatch.setenv(CELL_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="whole number of seconds"):
        cell_timeout(test)


@pytest.mark.slow
def test_endless_answer_loses_its_task_only_and_the_class_is_graded(monkeypatch, tmp_path):
    """An endless loop and an interrupt-proof endless loop each lose task 3 only; an honest
    student beside them gets full marks; feedback says the cell ran past the timeout."""
    monkeypatch.setenv(CELL_TIMEOUT_ENV, str(TIMEOUT_S))
    assignment = "00-warmup"
    with grading.scratch_course(ROOT / "grading") as course:
        source = course.source_dir(assignment)
        course.release(assignment)
        notebook = source / "warmup.ipynb"
        course.submit(assignment, "honest", source)
        started = time.perf_counter()
        course.autograde(assignment)
        honest_seconds = time.perf_counter() - started
        for student, answer in (("loops", NEVER_RETURNS), ("deaf", IGNORES_INTERRUPT)):
            path = grading.apply_answers(
                notebook, {"most_viewed_posts": answer}, tmp_path / student / notebook.name
            )
            course.submit(assignment, student, {notebook.name: path})
        started = time.perf_counter()
        course.autograde(assignment)  # all three: it must not raise
        class_seconds = time.perf_counter() - started
        scores = course.scores(assignment)
        course.feedback(assignment)
        pages = {
            student: html.unescape(
                (course.feedback_dir(assignment, student) / "warmup.html").read_text()
            )
            for student in ("loops", "deaf")
        }
    assert scores["honest"].full_marks, scores["honest"].cells
    for student in ("loops", "deaf"):
        lost = sorted(
            k for k, v in scores[student].cells.items() if v < scores[student].max_cells[k]
        )
        assert lost == ["warmup:test_most_viewed_posts"], f"{student} lost {lost}"
        text = re.sub(r"<[^>]+>", " ", pages[student])
        assert timeout_message(TIMEOUT_S)[:40] in " ".join(text.split()), (
            f"{student}'s feedback does not say that the cell ran past {TIMEOUT_S} s"
        )
        assert "KeyboardInterrupt" not in text and "No reply from kernel" not in text
    # What the two hanging students cost: about one timeout each (plus the interrupt's
    # grace period for the one that ignores it), on top of grading three honest notebooks.
    extra = class_seconds - 3 * honest_seconds
    print(
        f"honest submission {honest_seconds:.1f} s; class of 3 (2 hanging) {class_seconds:.1f} s; "
        f"extra {extra:.1f} s for 2 hanging students at a {TIMEOUT_S} s cell timeout"
    )


def test_warnings_in_a_test_cell_do_not_fail_it():
    """nbgrader gives 0 to a test cell with any stderr output: a right answer that called a
    deprecated function (redis-py's setex) lost its task to the DeprecationWarning. A test
    cell that raised nothing keeps its warnings as output; an error still fails it."""
    from nbformat.v4 import new_code_cell, new_output

    from labkit.course.nbgrader_ext import WarningsAreNotFailures

    warning = (
        "/tmp/ipykernel_7/1.py:3: DeprecationWarning: Call to deprecated setex.\n  r.setex()\n"
    )

    def graded(outputs, solution=False):
        cell = new_code_cell("check()", outputs=outputs)
        cell.metadata["nbgrader"] = {"grade": True, "solution": solution, "points": 2,
                                     "grade_id": "test_x", "locked": not solution}  # fmt: skip
        return WarningsAreNotFailures().preprocess_cell(cell, {}, 0)[0]

    passed = graded([new_output("stream", name="stderr", text=warning)])
    assert passed.outputs[0]["name"] == "stdout" and passed.outputs[0]["text"] == warning
    failed = graded(
        [new_output("stream", name="stderr", text=warning),
         new_output("error", ename="AssertionError", evalue="no", traceback=[])]
    )  # fmt: skip
    assert failed.outputs[0]["name"] == "stderr", "an error fails the cell, warnings or not"
    other = graded([new_output("stream", name="stderr", text="something went wrong\n")])
    assert other.outputs[0]["name"] == "stderr", "stderr that is not a warning still fails it"
    answer = graded([new_output("stream", name="stderr", text=warning)], solution=True)
    assert answer.outputs[0]["name"] == "stderr", "answer cells are not test cells"
