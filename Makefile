# Two commands for a fresh machine (README.md): `make demo` and `make test`.
# Both build the environment in .venv/ first; `make install` builds it alone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on the build machines (train extra).
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/sonoflow demo --out out/demo

test: install
	$(BIN)/ruff check stream models training tests benchmarks tools
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/sonoflow bench --out benchmarks/results/bench.jsonl

clean:
	rm -rf $(VENV) out
