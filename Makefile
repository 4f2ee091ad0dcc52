# The README's two commands: `make demo` and `make test`. Both set themselves up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test-setup demo test lint bench model clean

setup:
	@VENV=$(VENV) ./scripts/bootstrap.sh

demo: setup
	$(PY) -m demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The tests also need a browser: the trainer's HTML report is rendered in headless chromium.
test-setup:
	@VENV=$(VENV) WITH_BROWSER=1 ./scripts/bootstrap.sh

test: test-setup lint
	$(VENV)/bin/pytest

# Speed and memory against paho and scikit-learn (prints a table, writes var/bench.json).
# BENCH_ARGS="--core 0" pins the agent to one core, to estimate a Raspberry Pi.
bench: setup
	$(PY) -m bench --out var/bench.json $(BENCH_ARGS)

# Rebuild the shipped default model from data the project generates itself.
model: setup
	$(VENV)/bin/edge-trainer simulate --out var/pump-train.csv --rows 4000 --seed 1
	$(VENV)/bin/edge-trainer train var/pump-train.csv --algorithm pca --window 10 \
	    --contamination 0.01 --seed 42 --model-id pump_pca --out models/pump_pca.onnx

clean:
	rm -rf $(VENV) var demo-output .pytest_cache .ruff_cache *.egg-info
