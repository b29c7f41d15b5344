# One command to set up and run each job on a fresh clone (2 CPU cores, no GPU needed).
#   make demo   - the main job on the built-in default model
#   make test   - the test suite
#   make bench  - the benchmarks of tools/ (figures go to docs/BENCHMARKS.md by hand)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel lies on this machine type's disk; on a CUDA machine use e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -n 2 -q

demo: setup
	$(BIN)/asgnas-demo

bench: setup
	$(BIN)/python tools/bench_ir.py

clean:
	rm -rf $(VENV) runs
