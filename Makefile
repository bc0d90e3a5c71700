# The two commands a newcomer needs: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv when it is missing and install torch (CPU build) before the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray,sb3,minari]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rlur benchmark --out runs/benchmark

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
