# `make run` and `make test` work on a fresh clone: they create .venv and install when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
# pytest-xdist workers for `make test` (one torch thread each, set by tests/conftest.py); 2 fits the 2-core CI.
# A test file goes whole to one worker, so that its module fixtures are made once (xdist_group marks are
# ignored under pytest 9.2: xdist 3.8 groups by a node id pytest no longer reads)
TEST_WORKERS ?= 2

.PHONY: install run test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: install  ## the embedded demo: train a small teacher on digits (cached), distill a student with PCKD
	$(BIN)/pckd-train

test: install  ## the whole test suite, slow tests included
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache
