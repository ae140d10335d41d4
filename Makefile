# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned here (not in pyproject) so that pip takes the CPU
# build on this machine instead of resolving a multi-GB CUDA build; override elsewhere.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv demo test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/smolcurate demo --out $(DEMO_OUT) --overwrite

test: venv
	$(BIN)/python -m pytest -q -rs --durations=15

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

bench: venv
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
