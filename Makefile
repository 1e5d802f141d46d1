# Every chore the README names. `make demo` and `make test` set everything up on their own.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bytecode demo test lint fmt migrate run worker beat clean bench load-test worker-lock worker-smoke

# (Re)create the virtualenv and install the pinned dependencies when any requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt runpod_worker/requirements.txt tests/photos-requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --dest $(VENV)/test-photos \
		-r tests/photos-requirements.txt
	@# Bytecode for every installed module, once. pip writes none where PYTHONDONTWRITEBYTECODE is set (as on
	@# many CI machines), and then every process compiles Django, Celery, boto3... again at each start: about
	@# 4 s of CPU for each Celery worker, GPU worker and web process the demo and the suite start.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib
	@touch $(STAMP)

# The project's own bytecode, brought up to date (only changed files are compiled) before the demo or the
# suite starts its processes; Python reads it even where PYTHONDONTWRITEBYTECODE keeps it from writing any.
PROJECT_PYTHON := studio characters training developer runpod_worker tests bench manage.py
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 $(PROJECT_PYTHON)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

# The whole suite against real Postgres, Redis and an S3 server the run starts itself. The browser tests
# drive Debian's Chromium (CHROMIUM_PATH, default /usr/bin/chromium); without it they are deselected
# and the run says so loudly at the end, except with CI=true, where a missing Chromium fails them.
export CHROMIUM_PATH ?= /usr/bin/chromium
# Tests run in TEST_WORKERS processes (pytest-xdist), handed out test by test (`loadgroup`): a long
# live-stack file no longer holds one process for minutes while the others idle. A module whose tests share
# what it builds once (the demo, a shared live stack) keeps them in one process (tests/support/grouping.py).
# The live-stack tests spend much of their time waiting on their own processes, so five share two cores
# (three left a quarter of the machine idle; four: 7:18 instead of 8:22; five: 7:35-8:00 instead of
# 8:50-9:05 on a slower machine, where six took 9:33; docs/BENCHMARKS.md).
TEST_WORKERS ?= 5
test: bytecode
	@set -o pipefail; services="$$($(BIN)/python -m tests.support.services)" || exit 1; \
	eval "$$services"; $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy studio characters training developer
	$(BIN)/python manage.py makemigrations --check --dry-run

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole studio on the embedded default, training a demo character; Ctrl-C stops it all.
# DEMO_POD=1 also trains a second character on a pod (the AI Toolkit UI stand-in) at the same time.
demo: bytecode
	$(BIN)/python manage.py demo $(if $(filter 1 yes true,$(DEMO_POD)),--pod)

run: migrate
	$(BIN)/python manage.py runserver 127.0.0.1:8000

worker: $(STAMP)
	$(BIN)/celery -A studio worker --loglevel=INFO --concurrency=2

beat: $(STAMP)
	$(BIN)/celery -A studio beat --loglevel=INFO

# Every benchmark script in bench/ in turn (each prints its own figures; see docs/BENCHMARKS.md).
bench: $(STAMP)
	@set -o pipefail; services="$$($(BIN)/python -m tests.support.services)" || exit 1; eval "$$services"; \
	for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# 50 API clients against gunicorn + Postgres on this machine for a minute (docs/BENCHMARKS.md).
load-test: bytecode
	@set -o pipefail; services="$$($(BIN)/python -m tests.support.services)" || exit 1; eval "$$services"; \
	$(BIN)/python bench/load_test.py

# The GPU worker image's lock, checked against PyPI for the image's Python and platform (also in make test).
worker-lock: $(STAMP)
	$(BIN)/python -m runpod_worker.image.lock check

# The real AI Toolkit trains a tiny model through the unmodified handler (runpod_worker/README.md, "The smoke").
# AI_TOOLKIT_PYTHON: a Python 3.12 environment installed from runpod_worker/requirements.lock.
worker-smoke:
	@test -n "$(AI_TOOLKIT_DIR)" -a -n "$(AI_TOOLKIT_PYTHON)" || { echo "set AI_TOOLKIT_DIR and AI_TOOLKIT_PYTHON"; exit 1; }
	runpod_worker/image/smoke.sh "$(AI_TOOLKIT_PYTHON)" "$(AI_TOOLKIT_DIR)"

clean:
	rm -rf var staticfiles .pytest_cache .mypy_cache .ruff_cache
