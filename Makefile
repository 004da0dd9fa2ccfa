# One command each: `make demo` and `make test` set everything up on a fresh machine
# (Python 3.11 and Java 17) and run. The venv is reused while requirements are unchanged.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= work/demo

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: setup
	rm -rf $(DEMO_DIR)
	$(BIN)/dmscdc demo --workdir $(DEMO_DIR)

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/run_bench.py --out bench/results/latest.json

clean:
	rm -rf $(VENV) work .pytest_cache
