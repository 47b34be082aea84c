# Two commands do all set-up on a fresh machine:
#   make demo   runs the main job offline
#   make test   installs everything the tests need and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test lint bench-transport serve clean lab chromium

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

test: install $(CHROMIUM)
	$(BIN)/ruff check src tests loadtests
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests loadtests
	$(BIN)/ruff format --check src tests loadtests

bench-transport: install
	$(BIN)/sagelab bench transport --sessions 1 --seconds 20
	$(BIN)/sagelab bench transport --sessions 10 --seconds 20
	$(BIN)/sagelab bench transport --sessions 50 --seconds 20

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
