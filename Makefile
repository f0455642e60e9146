PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medssl-installed

.PHONY: install test test-learning check format demo clean

## install: create .venv with torch 2.14.1 + torchvision 0.29.1 (local wheels) and medssl with its extras
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev,demo,export,tensorboard]"
	touch $(STAMP)

## test: the test suite (real-data tests run when ../shared/data or $$MEDSSL_DATA_DIR exists)
test: install
	$(BIN)/pytest -q

## test-learning: the longer real-data learning checks the suite leaves out (~2 min on 2 cores)
test-learning: install
	$(BIN)/pytest -q -m learning

## check: lint, format check and type check
check: install
	$(BIN)/ruff check medssl tests benchmarks
	$(BIN)/ruff format --check medssl tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix medssl tests benchmarks
	$(BIN)/ruff format medssl tests benchmarks

## demo: offline SimCLR pretraining on the embedded MNI152 demo data
demo: install
	$(BIN)/medssl demo

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
