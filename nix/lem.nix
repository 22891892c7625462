# lem's Nix packages: a CUDA-free coordinator and one Python environment per worker backend.
# The coordinator's wrapper exports LEM_PYTHON_<BACKEND>, the seam through which the
# coordinator finds each worker's interpreter (coordinator/launcher.py: resolve_interpreter).
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
    pythonImportsCheck = [ "lem.protocol" "lem.coordinator.cli" "lem.workers.runtime" ];
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
  coordinator = pkgs.writeShellApplication {
    name = "lem";
    runtimeInputs = [ coordinatorEnv ];
    text = ''
      export LEM_PYTHON_PYTORCH="''${LEM_PYTHON_PYTORCH:-${workerPytorch}/bin/python}"
      exec ${coordinatorEnv}/bin/lem "$@"
    '';
  };
in
{
  inherit lemLib workerPytorch coordinator;
}
