# Two entry points: `make demo` and `make test`. Both create .venv in the repo root if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reidkit demo --out demo-output

# two pytest workers with one torch thread each use the two cores better than one of each
test: $(STAMP)
	$(BIN)/ruff check reidkit tests benchmarks
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
