# The README's two commands: `make demo` and `make test`. Both bootstrap .venv from a
# bare python3 (no compiler, no system services) and reinstall only when what decides the
# installation changed: pyproject.toml, or this Makefile's install line.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint typecheck pytest docs fuzz bench clean catalog-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[cli,dev,metrics,milter,postgres,smtp]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tbes demo

test: lint typecheck pytest docs

lint: $(STAMP)
	$(BIN)/ruff check src tests examples tools fuzz benchmarks
	$(BIN)/ruff format --check src tests examples tools fuzz benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src tests tools fuzz benchmarks

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf docs/_build .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Is the packaged catalog what the importer makes of Microsoft's list?
catalog-check: $(STAMP)
	$(BIN)/python tools/build_catalog.py tests/data/ExchangeBuildNumbers.csv --check

# Long fuzzing runs of the Received parser and the milter codec; FUZZ_SECONDS per harness
# (default 300).
fuzz: $(STAMP)
	$(BIN)/python fuzz/hypothesis_received.py --seconds $${FUZZ_SECONDS:-300}
	$(BIN)/python fuzz/hypothesis_milter.py --seconds $${FUZZ_SECONDS:-300}
	if $(BIN)/python -c "import atheris" 2>/dev/null; then \
		$(BIN)/python fuzz/fuzz_received.py --seconds $${FUZZ_SECONDS:-300}; fi

# The benchmarks (pyperf); writes docs/performance.md. The 1,000,000-server scale run takes minutes.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --output docs/performance.md
