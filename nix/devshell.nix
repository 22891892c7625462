# `nix develop`: lem's dependencies (runtime, analysis, report and dev extras, from
# nixpkgs: no CUDA), make and uv (`make lock`). lem itself comes from the working tree,
# e.g. `python -m venv --system-site-packages .venv && .venv/bin/pip install --no-deps
# --no-build-isolation -e .`. LEM_NIX_WORKER_DRVS is exported as by the `lem` wrapper, so
# no worker is built until the coordinator needs one.
{ pkgs, lem }:
pkgs.mkShell {
  packages = [
    lem.devPython
    pkgs.gnumake
    pkgs.uv
  ];
  shellHook = ''
    export LEM_NIX_WORKER_DRVS="${lem.workerDrvs}"
  '';
}
