# lem's Nix packages: a CUDA-free coordinator and one Python environment per worker backend.
# The coordinator's wrapper exports LEM_NIX_WORKER_PYTHONS=pytorch=/nix/store/…/bin/python,
# rule 2 of coordinator/environments.py: resolve_python (an explicit LEM_<BACKEND>_PYTHON
# still wins). A backend whose environment is added here joins the list below.
{ pkgs, python, src }:
let
  ps = python.pkgs;

  lemLib = ps.buildPythonPackage {
    pname = "lem";
    version = "0.1.0";
    pyproject = true;
    inherit src;
    build-system = [ ps.setuptools ];
    dependencies = with ps; [ msgspec pyzmq pyyaml click structlog rich nvidia-ml-py ];
    pythonImportsCheck = [ "lem" "lem.protocol" "lem.coordinator.cli" "lem.workers.runtime" ];
    doCheck = false;
  };

  # The PyTorch worker's interpreter: lem plus torch (CUDA), transformers and accelerate
  # (device_map sharding over several GPUs).
  workerPytorch = python.withPackages (p: [
    lemLib
    p.torch
    p.transformers
    p.accelerate
    p.tokenizers
    p.numpy
    p.gguf
  ]);

  # The vLLM worker's interpreter: lem plus nixpkgs' vLLM (built with CUDA; it brings the
  # torch it pins, apart from the PyTorch worker's). TensorRT-LLM is not in nixpkgs: its
  # worker comes from `lem env sync tensorrt` (pypi.nvidia.com) or LEM_TENSORRT_PYTHON.
  workerVllm = python.withPackages (p: [ lemLib p.vllm ]);

  # The coordinator: lem without any GPU library (pandas/pyarrow for export and the Python
  # API, matplotlib for `lem report`), wrapped to know the worker interpreters.
  coordinatorEnv = python.withPackages (p: [ lemLib p.pandas p.pyarrow p.matplotlib ]);
  workerPythons = pkgs.lib.concatStringsSep ":" [
    "pytorch=${workerPytorch}/bin/python"
    "vllm=${workerVllm}/bin/python"
  ];
  coordinator = pkgs.writeShellApplication {
    name = "lem";
    runtimeInputs = [ coordinatorEnv ];
    text = ''
      export LEM_NIX_WORKER_PYTHONS="${workerPythons}"
      exec ${coordinatorEnv}/bin/lem "$@"
    '';
  };
in
{
  inherit lemLib workerPytorch workerVllm workerPythons coordinator;
}
