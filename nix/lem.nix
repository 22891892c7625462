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

  # The PyTorch worker's interpreter: lem plus torch (CUDA) and transformers.
  workerPytorch = python.withPackages (p: [
    lemLib
    p.torch
    p.transformers
    p.tokenizers
    p.numpy
    p.gguf
  ]);

  # The coordinator: lem without any GPU library, wrapped to know the worker interpreters.
  coordinatorEnv = python.withPackages (p: [ lemLib ]);
  workerPythons = pkgs.lib.concatStringsSep ":" [
    "pytorch=${workerPytorch}/bin/python"
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
  inherit lemLib workerPytorch workerPythons coordinator;
}
