{
  description = "lem's stand-in for nixpkgs (evaluation only; see ../README.md)";

  outputs =
    { self }:
    {
      lib = import ./lib.nix;
      legacyPackages.x86_64-linux = import ./pkgs.nix {
        inherit (self) lib;
        system = "x86_64-linux";
      };
    };
}
