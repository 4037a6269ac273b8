# The course's set-up in two commands (see README.md):
#   make lab    create .venv, install the course, start PostgreSQL + Redis, open JupyterLab
#   make test   the same set-up, then the whole test suite (.ci/run runs exactly this)
#   make check A=00-warmup   check an exercise from any shell: visible tests, then your score
#   make lab-instructor      JupyterLab with nbgrader's instructor tools (LABKIT_INSTRUCTOR=1)
# Also: make up | down | status | bench | lint | clean | filter

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tools that nbgrader runs by name (alembic) must be found without activating the venv.
export PATH := $(abspath $(BIN)):$(PATH)

# --durations: the slowest tests, at the end of the log, to keep the suite within its budget.
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=30

.PHONY: lab test test-capstones test-classroom install up down status bench lint clean check lab-instructor filter os-packages

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

# Strip notebook outputs from what `git add` stages (.gitattributes names the filter), so
# that outputs a learner saves never reach a commit nor `make test`'s hygiene check.
filter: install
	@$(BIN)/python tools/nbtools.py install-filter

lab: up filter os-packages
	$(BIN)/python -m labkit lab

lab-instructor: up filter
	LABKIT_INSTRUCTOR=1 $(BIN)/python -m labkit lab

# make check A=00-warmup [NB=path/to/notebook.ipynb]: the course's Python, whatever PATH says.
check: up
	@if [ -z "$(A)" ]; then echo "usage: make check A=00-warmup (or A=01-performance)" >&2; exit 2; fi
	$(BIN)/python -m labkit check $(A) $(NB)

# PgBouncer (Step 10) is an OS package, not a wheel: installed here when it is missing and
# we run as root with apt-get (CI, containers); otherwise Step 10 says how to install it.
os-packages:
	@if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ] \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing pgbouncer (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q pgbouncer >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pgbouncer >/dev/null 2>&1; } \
	  || echo "could not install pgbouncer: Step 10's PgBouncer cells will fail" >&2; \
	fi

# make test runs two steps, each with its own budget on 2 cores: the suite (lessons,
# exercises, grading, helpers: 20 min), then the capstones' step (their acceptance suites
# against the reference solutions, the starters and the wrong designs, their briefs and their
# rubric assignment: 12 min). `make test-capstones` runs the second step alone.
test: up filter os-packages
	@# pytest exits 5 when it collected no test: that must fail, not pass silently.
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not capstone and not classroom"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc
	@$(MAKE) --no-print-directory test-capstones
	@$(MAKE) --no-print-directory test-classroom

test-capstones: up
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m capstone; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-capstones: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The classroom step: real Unix users (a JupyterHub on 127.0.0.1 with 3 students, the
# nbgrader exchange between them, grading a hostile submission as a throwaway user) and the
# student edition. It creates users, so it runs as root (CI does; elsewhere: sudo make ...).
test-classroom: up
	@if [ "$$(id -u)" != 0 ]; then echo "make test-classroom: creates Unix users, so it must run as root (e.g. sudo make test-classroom)" >&2; exit 1; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m classroom; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-classroom: pytest collected no tests" >&2; exit 1; fi; exit $$rc

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m labkit services down; fi

status: install
	$(BIN)/python -m labkit services status

bench: up
	$(BIN)/python -m labkit bench

lint: install
	$(BIN)/ruff check src tests tools notebooks grading capstones classroom
	$(BIN)/ruff format --check src tests tools capstones grading/capstones classroom

clean: down
	rm -rf $(VENV) .labkit

# ------------------------------------------------------------------ containers (optional)
# make lab-containers   PostgreSQL 18 + Redis 7 from compose.yaml instead of the embedded
#                       servers: creates .env with generated passwords if it is missing,
#                       waits until both containers are healthy, then opens JupyterLab with
#                       DATABASE_URL / REDIS_URL pointing at them (the same contract).
# make containers-up | containers-down | containers-env (prints the two exports)
COMPOSE        ?= docker compose
CONTAINERS_ENV ?= .env
# The URLs of the containers, built from $(CONTAINERS_ENV) in the shape the embedded
# servers use (postgres superuser and database; Redis database 0), exported.
CONTAINERS_URLS = set -a && . "$(abspath $(CONTAINERS_ENV))" && set +a && \
	export DATABASE_URL="postgresql://postgres:$${POSTGRES_PASSWORD}@127.0.0.1:$${POSTGRES_PORT:-55432}/postgres" && \
	export REDIS_URL="redis://:$${REDIS_PASSWORD}@127.0.0.1:$${REDIS_PORT:-56379}/0"

.PHONY: lab-containers containers-up containers-down containers-env

$(CONTAINERS_ENV):
	@umask 077 && while IFS= read -r line; do \
	  case "$$line" in *=change-me-locally) \
	    line="$${line%%=*}=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')";; \
	  esac; printf '%s\n' "$$line"; \
	done < .env.example > "$@.tmp" && mv "$@.tmp" "$@"
	@echo "created $@ from .env.example with generated passwords (git-ignored; keep it)"

containers-up: $(CONTAINERS_ENV)
	@$(COMPOSE) version >/dev/null 2>&1 || { echo "make $@: '$(COMPOSE)' does not work here. Install Docker with its compose plugin (or set COMPOSE, e.g. COMPOSE='podman compose'), or run 'make lab', which needs no containers." >&2; exit 1; }
	$(COMPOSE) --env-file "$(CONTAINERS_ENV)" up --detach --wait

containers-down:
	@if [ -e "$(CONTAINERS_ENV)" ]; then $(COMPOSE) --env-file "$(CONTAINERS_ENV)" down; \
	else echo "no $(CONTAINERS_ENV): no containers were started with make containers-up"; fi

containers-env: $(CONTAINERS_ENV)
	@$(CONTAINERS_URLS) && printf 'export DATABASE_URL=%s\nexport REDIS_URL=%s\n' "$$DATABASE_URL" "$$REDIS_URL"

lab-containers: install containers-up
	$(CONTAINERS_URLS) && $(BIN)/python -m labkit services up && $(BIN)/python -m labkit lab
