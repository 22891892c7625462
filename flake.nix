{
  description = "lem: truthful energy, time and latency per token for LLM inference";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          config = { allowUnfree = true; cudaSupport = true; };
        };
        python = pkgs.python311;
        lemPackages = import ./nix/lem.nix { inherit pkgs python; src = ./.; };
      in
      {
        packages = {
          lem = lemPackages.coordinator;
          worker-pytorch = lemPackages.workerPytorch;
          worker-vllm = lemPackages.workerVllm;
          default = lemPackages.coordinator;
        };

        apps = {
          lem = {
            type = "app";
            program = "${lemPackages.coordinator}/bin/lem";
          };
          default = self.apps.${system}.lem;
        };

        devShells.default = import ./nix/devshell.nix { inherit pkgs python lemPackages; };
      });
}
