# build.packages, called with pkgs.callPackage: a package scope (overrideScope) whose
# mkVirtualEnv resolves a dependency spec through the packages' passthru.dependencies and
# optional-dependencies (extras as name@extra keys), as pyproject.nix's resolver does. The
# environment's NIX_PYPROJECT_DEPS holds the resolved packages' outputs.
{ lib }:
{
  python,
  stdenv,
  pkgs,
}:
let
  resolve =
    set: spec:
    let
      keysOf =
        specs:
        builtins.concatLists (
          lib.mapAttrsToList (
            name: extras: [ { key = name; } ] ++ map (extra: { key = "${name}@${extra}"; }) extras
          ) specs
        );
      items = builtins.genericClosure {
        startSet = keysOf spec;
        operator =
          { key }:
          let
            parts = builtins.match "(.+)@(.+)" key;
          in
          if parts == null then
            keysOf (set.${key}.passthru.dependencies or { })
          else
            keysOf set.${builtins.elemAt parts 0}.passthru.optional-dependencies.${builtins.elemAt parts 1};
      };
    in
    builtins.filter (key: builtins.match ".+@.+" key == null) (map (item: item.key) items);

  base = final: {
    inherit python stdenv pkgs;
    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) (pkgs // final) // args);
    pyprojectHook = stdenv.mkDerivation { name = "pyproject-hook"; };
    pyprojectWheelHook = stdenv.mkDerivation { name = "pyproject-wheel-hook"; };
    resolveBuildSystem = spec: map (name: final.${name}) (resolve final spec);
    resolveVirtualEnv = spec: map (name: final.${name}) (resolve final spec);
    mkVirtualEnv =
      name: spec:
      stdenv.mkDerivation {
        inherit name;
        NIX_PYPROJECT_DEPS = lib.concatStringsSep ":" (map toString (final.resolveVirtualEnv spec));
      };
  };

  scope =
    overlays:
    lib.fix (final: builtins.foldl' (acc: overlay: acc // overlay final acc) (base final) overlays)
    // {
      overrideScope = overlay: scope (overlays ++ [ overlay ]);
    };
in
scope [ ]
