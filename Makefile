# Two commands do all set-up on a fresh machine:
#   make demo   runs the main job offline
#   make test   installs everything the tests need and runs the whole suite
# While working: make check (lint, types and the fast tier, about a minute).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test test-all test-fast check typecheck lint docs test-install bench-transport serve clean lab chromium

# Python's default: cache bytecode (git-ignored __pycache__). With PYTHONDONTWRITEBYTECODE set,
# every test worker recompiles src/ and re-rewrites tests/ (~5 s of CPU each).
unexport PYTHONDONTWRITEBYTECODE

# The browser tests drive Debian's chromium (Playwright never downloads a browser here).
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/sagelab demo

serve: install
	$(BIN)/sagelab serve

# JupyterLab on the notebooks shipped in the package (01 conversation, 02 latency and accuracy,
# 03 load test, 04 prompt and tool lab; all offline), edited in place: their results go to
# runs/ here, never into the package, and the suite fails on a notebook saved with outputs
# (clear them before committing). Users get their own copy with `sagelab notebooks DIR`.
lab: install
	SAGELAB_RUNS=$(CURDIR)/runs $(BIN)/jupyter lab --ServerApp.root_dir=src/sagelab/notebooks \
		$(if $(SUDO),,--allow-root)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

chromium: $(CHROMIUM)

# Most slow tests wait on the wall clock (audio streamed in real time, servers, subprocesses),
# not on the CPU, so more workers than cores pays (see docs/testing.md). loadfile keeps each
# module on one worker: module-scoped servers, JupyterLab and Chromium start once, and
# test_fuzz_live's last test sees the server its fuzz tests used. (loadgroup would be finer,
# but with pytest 9.2 it silently stops grouping: pytest-dev/pytest-xdist#1386.)
TEST_WORKERS ?= 6

# The suite includes tests/packaging/test_installed_wheel.py (marker `install`): the wheel in a
# clean virtual environment, run from an empty folder.
# Lint, types and the docs build run beside the tests (make -j; each one's output is printed
# whole when it ends, so the tests' report comes last): on a fresh clone mypy alone takes
# ~30 s, which the test workers' waits hide. --no-loadscope-reorder keeps the order of
# tests/conftest.py (LONGEST_FIRST): xdist would otherwise start the modules with the most
# tests first and the long single-test modules last.
PYTEST_PARALLEL := --dist loadfile --no-loadscope-reorder

test: install $(CHROMIUM)
	@$(MAKE) --no-print-directory -j4 --output-sync=target lint typecheck docs test-all

test-all: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_PARALLEL) --durations=30

# The quick loop: lint, types, then the fast tier (no models, browser, locust or long waits),
# side by side as in `make test`.
check: install
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck test-fast

test-fast: install
	$(BIN)/python -m pytest -q -m fast -n 2 $(PYTEST_PARALLEL)

typecheck: install
	$(BIN)/mypy

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# The documentation site (mkdocs.yml, docs/) into runs/site/; any warning fails the build.
docs: install
	$(BIN)/mkdocs build --strict

# sagelab as a user gets it: `pip wheel .`, installed with [local,metrics,loadtest] into a fresh
# venv, then `sagelab demo`, a 10 s `sagelab loadtest` and `sagelab bench run` from empty folders.
test-install: install
	$(BIN)/python -m pytest -q -m install tests/packaging

bench-transport: install
	$(BIN)/sagelab bench transport --sessions 1 --seconds 20
	$(BIN)/sagelab bench transport --sessions 10 --seconds 20
	$(BIN)/sagelab bench transport --sessions 50 --seconds 20

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis .mypy_cache
