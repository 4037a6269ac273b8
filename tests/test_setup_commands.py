"""The README's two commands are the ones the Makefile and CI use; one dependency source."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_make_test():
    """.ci/run must run `make test`, the README's test command, and nothing else."""
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    commands = [line for line in lines if not line.startswith(("set ", "cd "))]
    assert commands == ["exec make test"], f".ci/run runs {commands}, expected `exec make test`"


def test_readme_shows_the_two_commands_first():
    """The README's first screen names `make lab` and `make test`, in a shell block."""
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:60])
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", first_screen, re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    assert "make lab" in commands, "the README's first screen must show `make lab`"
    assert "make test" in commands, "the README's first screen must show `make test`"


def test_makefile_targets_exist():
    """`make -n lab` and `make -n test` resolve (no missing targets)."""
    for target in ("lab", "test", "down", "status", "bench"):
        proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"make -n {target} failed: {proc.stderr}"
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "labkit services up" in dry and "pytest" in dry, (
        "make test must start services, then pytest"
    )
    assert "rc -eq 5" in dry, "make test must turn pytest's exit 5 (no tests) into a failure"


def test_environment_yml_installs_the_project_not_a_second_list():
    """environment.yml pins the same Python and installs the project itself (one source)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "environment.yml").read_text()
    python = re.search(r"^\s*-\s*python\s*([<>=!~].*)?$", text, re.M)
    assert python, "environment.yml must list python"
    spec = (python.group(1) or "").replace(" ", "")
    assert spec in {"=3.11", "=3.12", ">=3.11,<3.13"}, (
        f"python{spec} is outside {project['requires-python']}"
    )
    pip_lines = (
        re.findall(r"^\s+-\s+(\S.*)$", text.split("pip:", 1)[1], re.M) if "pip:" in text else []
    )
    assert pip_lines == ["-e .[lab]"], (
        f"environment.yml's pip section must be just `-e .[lab]` (got {pip_lines}); "
        "dependencies belong in pyproject.toml"
    )
    deps_section = text.split("dependencies:", 1)[1].split("pip:", 1)[0]
    conda_deps = re.findall(r"^\s{2}-\s+([A-Za-z][\w.-]*)", deps_section, re.M)
    # PgBouncer (Step 10) is not on PyPI: conda-forge brings it, as binder/apt.txt does.
    assert set(conda_deps) <= {"python", "pip", "pgbouncer"}, (
        f"conda packages besides python, pip and pgbouncer: {conda_deps}"
    )
    assert "pgbouncer" in conda_deps, "environment.yml must bring pgbouncer (Step 10)"


def test_notebooks_are_stripped_and_navigation_current():
    """Committed notebooks carry no outputs, and their navigation cells are up to date."""
    proc = subprocess.run(
        [sys.executable, "tools/nbtools.py", "check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_ruff_lint_passes():
    """ruff check over the package, the tests, the tools and the notebooks."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "src",
            "tests",
            "tools",
            "notebooks",
            "grading",
            "capstones",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
