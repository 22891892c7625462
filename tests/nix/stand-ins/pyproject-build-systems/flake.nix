{
  description = "lem's stand-in for pyproject-nix/build-system-pkgs (evaluation only; see ../README.md)";

  # Followed from lem's flake; these URLs are never fetched.
  inputs = {
    nixpkgs.url = "path:/lem-stand-in/follows-lems-nixpkgs";
    pyproject-nix.url = "path:/lem-stand-in/follows-lems-pyproject-nix";
    uv2nix.url = "path:/lem-stand-in/follows-lems-uv2nix";
  };

  outputs =
    { ... }:
    let
      buildSystem =
        final: name:
        final.stdenv.mkDerivation {
          pname = name;
          version = "build-system-stand-in";
          passthru.dependencies = { };
        };
      overlay = final: _prev: {
        setuptools = buildSystem final "setuptools";
        wheel = buildSystem final "wheel";
      };
    in
    {
      overlays = {
        wheel = overlay;
        sdist = overlay;
        default = overlay;
      };
    };
}
