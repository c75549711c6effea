# Two commands for a fresh machine (README.md): `make demo` and `make test`.
# Both build the environment in .venv/ first; `make install` builds it alone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench models clean

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

# All latency scenarios (about 45 min on 2 cores). Optional peer first:
#   bash benchmarks/peers/holoscan/setup.sh
bench: install
	$(BIN)/sonoflow bench --out benchmarks/results/bench/all.jsonl

# Rebuild the shipped frame-network weights (simulate, train time-boxed, export fp32/int8/
# pruned). The lesion classifier: `sonoflow train lesion-classifier --config
# training/configs/lesion_classifier.toml --out runs/lesion-cls-v1` (docs/models.md).
models: install
	BIN=$(BIN) tools/build_models.sh

clean:
	rm -rf $(VENV) out
