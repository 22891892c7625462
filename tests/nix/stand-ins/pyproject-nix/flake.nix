{
  description = "lem's stand-in for pyproject.nix (evaluation only; see ../README.md)";

  # Followed from lem's flake; this URL is never fetched.
  inputs.nixpkgs.url = "path:/lem-stand-in/follows-lems-nixpkgs";

  outputs =
    { nixpkgs, ... }:
    {
      build.packages = import ./packages.nix { inherit (nixpkgs) lib; };
    };
}
