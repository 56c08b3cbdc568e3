# The whole set-up is `make demo` or `make test`: each creates .venv if missing and installs igax (editable) with pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= demo-output

.PHONY: demo test test-slow doctest lint bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(VENV)/bin/igax demo --out $(OUT)

# JAX compile time dominates the suite; two worker processes halve it on a 2-core machine.
test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 --durations=25

test-slow: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 -m slow

# The `>>>` examples of every module (part of `make test` too): one test per module names the failing file.
doctest: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q tests/test_doctests.py

lint: $(STAMP)
	$(VENV)/bin/ruff check igax tests examples benchmarks

bench: $(STAMP)
	$(VENV)/bin/igax bench --quick

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
