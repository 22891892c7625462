# `nix develop`: the PyTorch worker environment plus lem's development tools.
{ pkgs, python, lemPackages }:
pkgs.mkShell {
  packages = [
    lemPackages.workerPytorch
    python.pkgs.pytest
    python.pkgs.pytest-timeout
    python.pkgs.psutil
    pkgs.ruff
    pkgs.mypy
    pkgs.gnumake
  ];
  shellHook = ''
    export LEM_NIX_WORKER_PYTHONS="${lemPackages.workerPythons}"
  '';
}
