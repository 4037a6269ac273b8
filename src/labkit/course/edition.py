"""The student edition: a repository for a graded class, without solutions or hidden tests.

``python -m labkit grade student-edition DIR`` (from the instructor's full repository)
writes ``DIR``, a new git repository with one commit, that an instructor pushes as the
class's repository (and its Binder badge)::

    from labkit.course import edition
    edition.write(Path("~/course-2027").expanduser())

It holds what learners use: the lessons (``notebooks/``), the student copies of the
exercises (``exercises/``, generated afresh from ``grading/source`` as ``grade
student-copies`` does), the package (``src/labkit``, without the mutation pass), the
capstones' starters (``capstones/``), ``binder/``, the container set-up, ``data/``, the
tests a learner can run (:data:`TESTS`), and a Makefile and README written for learners.
It holds nothing of ``grading/`` (solutions, hidden tests, the capstones' reference
solutions, the equivalent mutants, the instructor guide), nor the wrong answers of
``tests/``.

In the edition, :func:`is_student_edition` is true: ``python -m labkit check`` runs the
visible tests only and says that the hidden tests run when the instructor grades, and the
instructor's commands (``grade ...``) refuse with :func:`require_full_repository`'s
message. Which of the two a folder is::

    >>> from labkit.course import edition
    >>> edition.is_student_edition()  # this checkout has grading/source
    False
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

from labkit import config
from labkit.errors import GradingError

__all__ = [
    "MARKER",
    "TESTS",
    "assignment_folder",
    "assignments",
    "is_student_edition",
    "require_full_repository",
    "write",
]

#: The file at the root of a student edition that says what it is (JSON). A folder is the
#: edition only when it has this file *and* no ``grading/source``: a marker copied into a
#: full repository by mistake does not hide the hidden tests from their instructor.
MARKER = ".labkit-student-edition"

#: The test files the edition carries, each byte for byte as in the full repository (where
#: CI runs them with everything else): the lessons, the self-check's visible side, the
#: services and the data they use. Every other test file needs grading/ (solutions, hidden
#: tests, wrong answers, the mutation pass), or tests what only the full repository has
#: (its README, Makefile and CI script, nbgrader's pipeline, Binder's badge, JupyterHub).
TESTS = (
    "tests/conftest.py",  # fixtures: the services, a progress folder of the tests' own
    "tests/notebook_params.py",  # CI sizes the lessons run at (test_notebooks.py)
    "tests/test_notebooks.py",  # every lesson, twice, plus widgets, links, hygiene
    "tests/test_selfcheck_in_notebook.py",  # the check cell (visible tests) in a notebook
    "tests/test_services.py",  # up / down / status / crash recovery / port conflicts
    "tests/test_supervisor.py",  # the servers' life cycle the lessons use
    "tests/test_db.py",  # database isolation and naming the lessons rely on
    "tests/test_data_folder.py",  # data/: checksums and provenance
)

# Copied as they are (folders recursively). Everything is relative to the course root.
_COPIED = (
    "notebooks",
    "src/labkit",
    "capstones",
    "binder",
    "containers",
    "data",
    "compose.yaml",
    "environment.yml",
    ".env.example",
    ".gitattributes",
    "pyproject.toml",
    "tools/nbtools.py",  # the output-stripping git filter and the notebooks' hygiene check
)
# Never copied: caches and build output, and the one module that is for instructors only
# (the mutation pass over the solutions; `grade mutants` refuses in the edition anyway).
_SKIPPED_NAMES = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".ruff_cache"}
_SKIPPED_PATHS = {"src/labkit/course/mutation.py"}

_AUTHOR = ("labkit student edition", "student-edition@labkit.invalid")
_BADGE = (
    "[![Launch on Binder](https://mybinder.org/badge_logo.svg)]"
    "(https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/00-start-here.ipynb)"
)


def is_student_edition(root: Path | None = None) -> bool:
    """Whether ``root`` (default: the checkout) is a student edition: its marker file is
    there and ``grading/source`` is not."""
    root = Path(root) if root else config.project_root()
    return (root / MARKER).is_file() and not (root / "grading" / "source").is_dir()


def require_full_repository(command: str, root: Path | None = None) -> None:
    """Refuse ``command`` (an instructor's tool) in a student edition, saying where to run
    it."""
    if is_student_edition(root):
        raise GradingError(
            f"`{command}` is for the instructor's full repository (with grading/: solutions "
            "and hidden tests); this is the student edition, which has neither. Run it in "
            "the course's full repository. Here, `python -m labkit check <assignment>` "
            "runs your visible tests."
        )


def assignment_folder(assignment: str, root: Path | None = None) -> Path:
    """Where an assignment's notebooks, with their test cells, are: ``grading/source/<a>``
    in the full repository, the student copies ``exercises/<a>`` in the edition."""
    root = Path(root) if root else config.project_root()
    if is_student_edition(root):
        return root / "exercises" / assignment
    return root / "grading" / "source" / assignment


def assignments(root: Path | None = None) -> list[str]:
    """The assignments, in order (the folders :func:`assignment_folder` reads)."""
    folder = assignment_folder("_", root).parent
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# --------------------------------------------------------------------------- writing


def _check_target(target: Path, root: Path) -> Path:
    target = target.expanduser().resolve()
    if target == root or target.is_relative_to(root):
        raise GradingError(
            f"{target} is inside the course repository ({root}): the edition is a separate "
            "git repository. Choose a folder outside it, e.g. ../course-student-edition"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise GradingError(
            f"{target} exists and is not an empty folder: give a new or empty folder (the "
            "edition is written from scratch, never over other files)"
        )
    return target


def _copy(source: Path, destination: Path, relative: str) -> None:
    if relative in _SKIPPED_PATHS or source.name in _SKIPPED_NAMES:
        return
    if source.name.endswith(".egg-info"):
        return
    if source.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
        for child in sorted(source.iterdir()):
            _copy(child, destination / child.name, f"{relative}/{child.name}")
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".ipynb":
        _write_stripped(source, destination)
    else:
        shutil.copy2(source, destination)  # keeps binder/start's and postBuild's exec bits


def _write_stripped(source: Path, destination: Path) -> None:
    """A lesson without the outputs of whoever ran it last in this working copy (paths,
    timings): what git would commit through the nbstrip filter."""
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(notebook, destination)


def write(target: Path, root: Path | None = None, *, commit: bool = True) -> Path:
    """Write the student edition of the course in ``root`` (default: the checkout) to
    ``target`` (new, or an empty folder outside the course), as a git repository with one
    commit (``commit=False``: files only). Returns the edition's folder."""
    from labkit.course import grading

    root = Path(root).resolve() if root else config.project_root()
    if not (root / "grading" / "source").is_dir():
        require_full_repository("grade student-edition", root)
        raise GradingError(f"no grading/source in {root}: run this in the course's repository")
    target = _check_target(Path(target), root)
    target.mkdir(parents=True, exist_ok=True)
    try:
        for relative in _COPIED:
            if (root / relative).exists():
                _copy(root / relative, target / relative, relative)
        for relative in TESTS:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, target / relative)
        # The student copies, made now from the sources (current, whatever exercises/ holds).
        grading.student_copies(target / "exercises", root=root / "grading", force=True)
        (target / ".gitignore").write_text(GITIGNORE)
        (target / "Makefile").write_text(MAKEFILE)
        (target / "README.md").write_text(readme(target))
        (target / MARKER).write_text(
            json.dumps(
                {
                    "edition": "student",
                    "made_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "why": "no solutions, no hidden tests: `labkit check` runs visible tests",
                },
                indent=2,
            )
            + "\n"
        )
        if commit:
            _git_commit(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave half an edition behind
        raise
    return target


def _git_commit(target: Path) -> None:
    name, email = _AUTHOR
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,  # the instructor's hooks and signing stay out
    }
    for argv in (
        ["git", "init", "--quiet", "--initial-branch=main"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "--no-verify", "-m", "Student edition of the course"],
    ):
        proc = subprocess.run(argv, cwd=target, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise GradingError(f"`{' '.join(argv)}` failed in {target}: {proc.stderr.strip()}")


def readme(target: Path) -> str:
    """The learners' README: how to start, the lessons and exercises found in ``target``."""
    lessons = sorted(p.name for p in (target / "notebooks").glob("*.ipynb"))
    rows = []
    for folder in sorted(p for p in (target / "exercises").iterdir() if p.is_dir()):
        names = ", ".join(f"`{p.name}`" for p in sorted(folder.glob("*.ipynb")))
        rows.append(f"| `{folder.name}` | {names} |")
    lesson_rows = "\n".join(f"- `notebooks/{name}`" for name in lessons)
    return README.format(badge=_BADGE, lessons=lesson_rows, exercises="\n".join(rows))


README = """\
# Production data-layer engineering with Python — student edition

{badge}
<!-- Instructors: replace OWNER/REPO in the badge above with this repository's GitHub
owner/name (the one you pushed it to), then commit. -->

Query optimization, caching, GraphQL, microservices, serverless, security, multi-tenancy,
scale, real-time and testing, with SQLAlchemy 2, PostgreSQL 18, psycopg 3, Redis and
DuckDB, against real servers on your own machine.

This is your class's edition of the course: the lessons, the exercises you hand in, and the
capstone projects' starters. Your instructor grades your exercises with tests you do not
see (the *hidden tests*); the tests you see in each exercise help you get there.

## Start

Click the *launch binder* badge above: JupyterLab opens on `00-start-here` with PostgreSQL
and Redis already running for you, nothing to install.

Or, on your machine (Python 3.11 or 3.12, Linux, macOS or WSL, and `make`):

```sh
make lab      # creates .venv, installs the course, starts PostgreSQL + Redis, opens JupyterLab
make test     # the lessons, your visible tests' machinery and the services, as tests
```

PostgreSQL and Redis come from Python wheels; Docker is optional (`make lab-containers`).

## Lessons

{lessons}

## Exercises

| assignment | notebooks |
| --- | --- |
{exercises}

Open a notebook in `exercises/`, write your answers in the cells that say
`raise NotImplementedError()`, save, and check it:

- its last cell in JupyterLab, or `make check A=00-warmup` in a terminal: runs your
  notebook in a fresh kernel and reports each **visible** test. The **hidden tests** run
  when your instructor grades your submission: passing the visible tests is a good sign,
  not your score;
- `python -m labkit progress`: lessons run and visible tests passed, per step
  (`--journal` for your learning journal);
- `python -m labkit check capstone-<name>` (collab, marketplace, analytics): a capstone
  project's acceptance suite on your project in `capstones/<name>/`.

Hand in your notebooks the way your instructor tells you (nbgrader's exchange, or a file
upload), keeping their file names.

## Other commands

| command | what it does |
| --- | --- |
| `make up` / `make down` / `make status` | start, stop, show the embedded PostgreSQL and Redis |
| `python -m labkit services env` | print `export DATABASE_URL=… REDIS_URL=…` for a shell |
| `make clean` | remove `.venv` and all server data (`.labkit/`) |
| `make lab-containers` | PostgreSQL 18 and Redis 7 from `compose.yaml` instead |

In a terminal, `source .venv/bin/activate` once so that `python` is the course's Python.
Notebook outputs stay in your working copy: `make lab` installs a git filter
(`.gitattributes`) that strips them from what you commit.

## Licence

MIT.
"""

GITIGNORE = """\
# Your environment and the embedded servers' data
.venv/
.labkit/
.env

# Python
__pycache__/
*.egg-info/
.pytest_cache/
.ruff_cache/
build/
dist/

# Jupyter
.ipynb_checkpoints/
.virtual_documents/
"""

MAKEFILE = """\
# The course's set-up (student edition; see README.md):
#   make lab                 create .venv, install the course, start PostgreSQL + Redis, open JupyterLab
#   make test                the same set-up, then the edition's tests (lessons, self-check, services)
#   make check A=00-warmup   check an exercise from any shell: its visible tests
# Also: make up | down | status | clean | filter | lab-containers | containers-down
#
# LABKIT_VENV=/path/to/venv  use a virtual environment that already has the course's
#                            dependencies (e.g. the full repository's .venv) instead of
#                            creating .venv: nothing is installed into it, and this edition's
#                            own src/ comes first on PYTHONPATH, so its package is the one
#                            imported. For instructors and CI; learners need not set it.
# LAB_ARGS="--no-browser --port 8888"   more options for `python -m labkit lab`.

PYTHON ?= python3
ifdef LABKIT_VENV
VENV   := $(LABKIT_VENV)
export PYTHONPATH := $(abspath src)$(if $(PYTHONPATH),:$(PYTHONPATH))
else
VENV   := .venv
endif
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tools run by name must be found without activating the venv.
export PATH := $(abspath $(BIN)):$(PATH)

PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=30
LAB_ARGS ?=

.PHONY: lab test install up down status clean check filter os-packages

ifdef LABKIT_VENV
install:
\t@test -x $(BIN)/python || { echo "LABKIT_VENV=$(LABKIT_VENV) has no bin/python" >&2; exit 2; }
else
$(BIN)/python:
\t@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 12) else f"The course needs Python 3.11 or 3.12 (found {v[0]}.{v[1]}); run e.g. make lab PYTHON=python3.12")'
\t$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
\t$(BIN)/python -m pip install --quiet --upgrade pip
\t$(BIN)/python -m pip install --quiet -e '.[lab]' psutil
\t@touch $@

install: $(STAMP)
endif

up: install
\t$(BIN)/python -m labkit services up

# Strip notebook outputs from what `git add` stages (.gitattributes names the filter).
filter: install
\t@$(BIN)/python tools/nbtools.py install-filter

lab: up filter os-packages
\t$(BIN)/python -m labkit lab $(LAB_ARGS)

# make check A=00-warmup [NB=path/to/notebook.ipynb]: your visible tests.
check: up
\t@if [ -z "$(A)" ]; then echo "usage: make check A=00-warmup (or A=01-performance)" >&2; exit 2; fi
\t$(BIN)/python -m labkit check $(A) $(NB)

# PgBouncer (Step 10) is an OS package, not a wheel: installed here when it is missing and
# we run as root with apt-get; otherwise Step 10 says how to install it.
os-packages:
\t@if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ] \\
\t    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \\
\t  echo "installing pgbouncer (apt-get)"; \\
\t  export DEBIAN_FRONTEND=noninteractive; \\
\t  apt-get install -y -q pgbouncer >/dev/null 2>&1 \\
\t  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pgbouncer >/dev/null 2>&1; } \\
\t  || echo "could not install pgbouncer: Step 10's PgBouncer cells will fail" >&2; \\
\tfi

test: up filter os-packages
\t@# pytest exits 5 when it collected no test: that must fail, not pass silently.
\t$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \\
\tif [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

down:
\t@if [ -x $(BIN)/python ]; then $(BIN)/python -m labkit services down; fi

status: install
\t$(BIN)/python -m labkit services status

clean: down
\trm -rf .venv .labkit

# ------------------------------------------------------------------ containers (optional)
# make lab-containers   PostgreSQL 18 + Redis 7 from compose.yaml instead of the embedded
#                       servers (creates .env with generated passwords if it is missing).
COMPOSE        ?= docker compose
CONTAINERS_ENV ?= .env
CONTAINERS_URLS = set -a && . "$(abspath $(CONTAINERS_ENV))" && set +a && \\
\texport DATABASE_URL="postgresql://postgres:$${POSTGRES_PASSWORD}@127.0.0.1:$${POSTGRES_PORT:-55432}/postgres" && \\
\texport REDIS_URL="redis://:$${REDIS_PASSWORD}@127.0.0.1:$${REDIS_PORT:-56379}/0"

.PHONY: lab-containers containers-up containers-down containers-env

$(CONTAINERS_ENV):
\t@umask 077 && while IFS= read -r line; do \\
\t  case "$$line" in *=change-me-locally) \\
\t    line="$${line%%=*}=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')";; \\
\t  esac; printf '%s\\n' "$$line"; \\
\tdone < .env.example > "$@.tmp" && mv "$@.tmp" "$@"
\t@echo "created $@ from .env.example with generated passwords (git-ignored; keep it)"

containers-up: $(CONTAINERS_ENV)
\t@$(COMPOSE) version >/dev/null 2>&1 || { echo "make $@: '$(COMPOSE)' does not work here. Install Docker with its compose plugin (or set COMPOSE), or run 'make lab', which needs no containers." >&2; exit 1; }
\t$(COMPOSE) --env-file "$(CONTAINERS_ENV)" up --detach --wait

containers-down:
\t@if [ -e "$(CONTAINERS_ENV)" ]; then $(COMPOSE) --env-file "$(CONTAINERS_ENV)" down; \\
\telse echo "no $(CONTAINERS_ENV): no containers were started with make containers-up"; fi

containers-env: $(CONTAINERS_ENV)
\t@$(CONTAINERS_URLS) && printf 'export DATABASE_URL=%s\\nexport REDIS_URL=%s\\n' "$$DATABASE_URL" "$$REDIS_URL"

lab-containers: install containers-up
\t$(CONTAINERS_URLS) && $(BIN)/python -m labkit services up && $(BIN)/python -m labkit lab $(LAB_ARGS)
"""
