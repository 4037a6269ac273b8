"""Shared fixtures. The course's servers are started by `make test` (services up) before
pytest runs; the fixture below makes a bare `pytest` work too.

Under pytest-xdist each worker gets its own database-name prefix, so that two workers
running the same notebook or exercise never share a database."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        os.environ["LABKIT_DB_PREFIX"] = f"{worker}_"
    # Lessons executed by the tests must not count as the learner's own progress.
    os.environ["LABKIT_PROGRESS_DIR"] = tempfile.mkdtemp(prefix="labkit-test-progress-")
    # The mutation pass's reports, written by whichever worker ran it and printed by the
    # controller at the end of the run (the workers inherit the controller's folder).
    if not worker:
        os.environ["LABKIT_MUTATION_REPORTS"] = tempfile.mkdtemp(prefix="labkit-mutants-")


# The longest tests first (longest-processing-time-first scheduling): pytest-xdist hands
# tests out in collection order, so a long test collected last can leave one worker busy
# minutes after the other ran out of work. Measured: each of these takes 1-7 minutes on 2
# cores; everything else takes seconds.
LONG_TESTS = (
    "test_mutation.py::test_no_mutant_survives",
    "test_grading_roundtrip.py::test_round_trip",
    "test_instructor_workflow.py::test_instructor_pipeline",
    "test_notebooks.py::test_lesson_runs_twice",
    "test_browser.py::",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the step markers are added here
def pytest_collection_modifyitems(session, config, items):
    def long(item) -> bool:
        return any(name in item.nodeid for name in LONG_TESTS)

    items.sort(key=lambda item: not long(item))  # stable: the order is otherwise unchanged
    # The capstones' step (`make test` runs it after the suite, with its own budget): every
    # test under tests/capstones/, and the grading tests of the capstones' rubric assignment.
    for item in items:
        if "tests/capstones/" in item.nodeid or "05-capstone" in item.nodeid:
            item.add_marker(pytest.mark.capstone)
        # The classroom step (the third): a JupyterHub with real Unix users, the nbgrader
        # exchange between them, the student edition, and grading hostile code. As root.
        if "tests/classroom/" in item.nodeid:
            item.add_marker(pytest.mark.classroom)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With LABKIT_TEST_TIMELINE=FILE: one JSON line per test (worker, start, end), to see
    where the suite's minutes go and whether a worker waits (``tools/timeline.py``)."""
    path = os.environ.get("LABKIT_TEST_TIMELINE")
    started = time.time()
    yield
    if path:
        line = {
            "test": item.nodeid,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "start": started,
            "end": time.time(),
        }
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop("LABKIT_PROGRESS_DIR", ""), ignore_errors=True)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ.pop("LABKIT_MUTATION_REPORTS", ""), ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """The mutation table (tests/test_mutation.py), at the very end of the run."""
    folder = Path(os.environ.get("LABKIT_MUTATION_REPORTS", "/nonexistent"))
    reports = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not reports:
        return
    rows = [json.loads(path.read_text()) for path in reports]
    write = terminalreporter.write_line
    terminalreporter.section("mutation testing of the hidden tests")
    for row in rows:
        write(row["text"])
    write("")
    from labkit.course.mutation import summary_table

    for line in summary_table(rows).splitlines():
        write(line)


@pytest.fixture(scope="session", autouse=True)
def course_services():
    """The course's PostgreSQL and Redis, running (idempotent `up`)."""
    from labkit.course.services import Services

    return Services(quiet=True).up()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
