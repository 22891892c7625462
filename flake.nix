{
  description = "lem: truthful energy, time and latency per token for LLM inference";

  # Every input pinned to a commit; flake.lock records the same commits with their NAR
  # hashes. docs/architecture.md, "Nix", says how each was chosen and checked.
  # nix/check-flake.sh (CI) evaluates this flake with every input replaced by a stand-in
  # from tests/nix/stand-ins: it checks lem's wiring, not that nixpkgs builds.
  inputs = {
    # nixos-unstable as of 2026-08-16: python3 is python313, inside the locks'
    # requires-python (>=3.11,<3.14).
    nixpkgs.url = "github:NixOS/nixpkgs/e5bdc4a41d4c072fe1e3787eaa0320a384741d44";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix/7af23cfe91064865ecf2e835da28b45b3c6f49fd";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    uv2nix = {
      url = "github:pyproject-nix/uv2nix/49dac8d206c42175b069b7c6050ba27060a21106";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs/90ffdeee1a4929b231913df067448cd9803d3e07";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
      pyproject-build-systems,
    }:
    let
      # The worker locks are resolved for Linux x86_64 only (tool.uv.environments).
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lem = import ./nix/lem.nix {
        inherit
          pkgs
          pyproject-nix
          uv2nix
          pyproject-build-systems
          ;
        src = ./.;
      };
    in
    {
      packages.${system} = {
        # CUDA-free: no worker output in its closure, only the workers' .drv files.
        lem-coordinator = lem.coordinator;
        worker-pytorch = lem.workers.pytorch;
        worker-pytorch-cpu = lem.workers.pytorch-cpu;
        worker-vllm = lem.workers.vllm;
        # Experimental; builds only once envs/tensorrt/uv.lock exists (its build says so).
        worker-tensorrt = lem.workers.tensorrt;
        default = lem.coordinator;
      };

      apps.${system} = {
        lem = {
          type = "app";
          program = "${lem.coordinator}/bin/lem";
        };
        default = self.apps.${system}.lem;
      };

      devShells.${system}.default = import ./nix/devshell.nix { inherit pkgs lem; };
    };
}
