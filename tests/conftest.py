"""Shared fixtures. The course's servers are started by `make test` (services up) before
pytest runs; the fixture below makes a bare `pytest` work too.

Under pytest-xdist each worker gets its own database-name prefix, so that two workers
running the same notebook or exercise never share a database."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        os.environ["LABKIT_DB_PREFIX"] = f"{worker}_"
    # Lessons executed by the tests must not count as the learner's own progress.
    os.environ["LABKIT_PROGRESS_DIR"] = tempfile.mkdtemp(prefix="labkit-test-progress-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop("LABKIT_PROGRESS_DIR", ""), ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def course_services():
    """The course's PostgreSQL and Redis, running (idempotent `up`)."""
    from labkit.services import Services

    return Services(quiet=True).up()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
