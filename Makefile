# The commands the README gives. Each target sets up what it needs (a virtualenv with the CPU build
# of torch, the package with its extras, the offline model and data) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint format bench ui clean browser postgres

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin torch first: a local CPU build; an unpinned torch would pull GBs of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[local,openai,dev]"
	$(BIN)/python -m harness.data fetch rotten_tomatoes tweets
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/harness sweep experiments/demo.yaml
	$(BIN)/harness report experiments/demo.yaml

# Headless Chromium for the browser test of `harness ui` (Debian's package; needs root/apt).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# PostgreSQL's binaries for the many-workers tests (Debian's package; needs root/apt); the tests
# start and stop a server of their own in a temp dir.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

test: $(STAMP) browser postgres
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/ruff format --check harness tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format harness tests benchmarks
	$(BIN)/ruff check --fix harness tests benchmarks

# Ratios against references measured in the same run; JSON in benchmarks/results/ (see its README).
bench: $(STAMP)
	$(BIN)/python -m benchmarks

ui: $(STAMP)
	$(BIN)/harness ui

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
