# The course's set-up in two commands (see README.md):
#   make lab    create .venv, install the course, start PostgreSQL + Redis, open JupyterLab
#   make test   the same set-up, then the whole test suite (.ci/run runs exactly this)
# Also: make up | down | status | bench | lint | clean

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tools that nbgrader runs by name (alembic) must be found without activating the venv.
export PATH := $(abspath $(BIN)):$(PATH)

PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: lab test install up down status bench lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 12) else f"The course needs Python 3.11 or 3.12 (found {v[0]}.{v[1]}); run e.g. make lab PYTHON=python3.12")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

up: install
	$(BIN)/python -m labkit services up

lab: up
	$(BIN)/python -m labkit lab

test: up
	@# pytest exits 5 when it collected no test: that must fail, not pass silently.
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m labkit services down; fi

status: install
	$(BIN)/python -m labkit services status

bench: up
	$(BIN)/python -m labkit bench

lint: install
	$(BIN)/ruff check src tests tools notebooks grading/source
	$(BIN)/ruff format --check src tests tools

clean: down
	rm -rf $(VENV) .labkit
