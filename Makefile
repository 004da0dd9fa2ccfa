# One command each: `make demo` and `make test` set everything up on a fresh machine
# (Python 3.11 and Java 17) and run. The venv is reused while requirements are unchanged.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= work/demo

.PHONY: setup jars mwaa-envs demo test bench clean

setup: $(VENV)/.installed jars

# Spark's S3A connector for local Spark on s3:// (hadoop-aws + AWS SDK bundle from Maven Central),
# downloaded once into ~/.cache/dmscdc/jars (DMSCDC_CACHE_DIR) and checked against pinned SHA-1s.
jars: $(VENV)/.installed
	$(BIN)/python -m dmscdc_spark.s3a

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: setup
	rm -rf $(DEMO_DIR)
	$(BIN)/dmscdc demo --workdir $(DEMO_DIR)

# The MWAA-in-a-box acceptance test installs the bundle into Airflow 3.0.6 and 3.3.2 the way MWAA
# does; both environments are cached under ~/.cache/dmscdc (DMSCDC_CACHE_DIR) by a hash of their inputs.
mwaa-envs: setup
	$(BIN)/python tests/acceptance/mwaa_env.py

# Two workers (pytest-xdist), each with its own SparkSession and AIRFLOW_HOME: much of the suite
# waits on child processes (Airflow, moto, the CLI), so two workers finish it far sooner on two cores.
test: setup mwaa-envs
	$(BIN)/python -m pytest -n 2 --dist worksteal

bench: setup
	$(BIN)/python bench/run_bench.py --out bench/results/latest.json

clean:
	rm -rf $(VENV) work .pytest_cache
