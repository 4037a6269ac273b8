"""A Python every Unix user can run (labkit.course.sharedenv): the hub's single-user
servers, the exchange's students and grading's throwaway users all run the course's code
with it. These tests run as root (the classroom step)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit.course import sharedenv
from labkit.supervisor import ServiceError


def as_nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *argv],
        capture_output=True, text=True, cwd="/", env=env, timeout=120,
    )  # fmt: skip


def test_another_user_runs_the_course_with_it():
    shared = sharedenv.shared_python()
    probe = (
        "import labkit, sqlalchemy, psycopg, redis, duckdb, ipykernel, nbgrader, jupyterhub;"
        "print(labkit.__file__)"
    )
    done = as_nobody(str(shared.python), "-c", probe)
    assert done.returncode == 0, done.stderr[-2000:]
    # The same course code as ours: the editable install of this checkout, not a copy.
    assert (
        Path(done.stdout.strip()).resolve()
        == Path(sharedenv.__file__).parents[1].joinpath("__init__.py").resolve()
    )
    # Console scripts are found by name on the PATH it gives (nbgrader runs `alembic`).
    for script in ("nbgrader", "alembic", "jupyterhub-singleuser", "jupyter"):
        found = as_nobody("sh", "-c", f"command -v {script}", env=shared.env())
        assert found.stdout.strip() == str(shared.bin / script), (script, found)
    version = as_nobody("nbgrader", "--version", env=shared.env())
    assert version.returncode == 0 and "nbgrader version" in version.stdout, version


def test_the_course_venv_itself_is_used_when_others_can_run_it():
    shared = sharedenv.shared_python()
    ours_usable = sharedenv.usable_by_others(sys.executable)
    assert shared.overlay is (not ours_usable)
    if not shared.overlay:
        assert shared.python == Path(sys.executable)


def test_a_clear_error_when_no_python_is_usable(tmp_path, monkeypatch):
    # Our interpreter unusable by others (as on this machine: pyenv under the root user's home), and no
    # system Python to build from: the error says what to do.
    monkeypatch.setattr(sharedenv, "usable_by_others", lambda python, **kw: False)
    monkeypatch.setattr(sharedenv, "_system_candidates", lambda: [tmp_path / "python9.9"])
    with pytest.raises(ServiceError) as caught:
        sharedenv.shared_python(base=tmp_path / "shared")
    message = str(caught.value)
    assert "LABKIT_SHARED_PYTHON" in message and "system-wide" in message, message
