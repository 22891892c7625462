{
  description = "lem's stand-in for uv2nix (evaluation only; see ../README.md)";

  # Followed from lem's flake; these URLs are never fetched.
  inputs = {
    nixpkgs.url = "path:/lem-stand-in/follows-lems-nixpkgs";
    pyproject-nix.url = "path:/lem-stand-in/follows-lems-pyproject-nix";
  };

  outputs =
    { nixpkgs, ... }:
    {
      lib.workspace = import ./workspace.nix { inherit (nixpkgs) lib; };
    };
}
