# The two commands of README.md: `make demo` and `make test`. Both create .venv when it is
# missing, broken or older than pyproject.toml, then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean bytecode

$(STAMP): pyproject.toml
	@$(BIN)/python -c 'import sys' 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Bytecode for medtune's own modules, written once: with PYTHONDONTWRITEBYTECODE set (as on
# some CI images) every command and worker would otherwise recompile them at start.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src

demo: bytecode
	$(BIN)/medtune demo

test: $(STAMP) lint
	$(BIN)/pytest -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: bytecode
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_label.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) medtune-demo medtune-demo.key .pytest_cache .ruff_cache
