# The overlay of a uv.lock: the packages selected for the scope's Python (CPython 3.X on
# Linux x86_64, by the lock's markers), each a derivation with the lock's dependencies as
# passthru.dependencies / optional-dependencies and, for a registry package, its wheel for
# this Python (URL and SHA-256 from the lock) as src.
{
  lib,
  uvLock,
  workspaceRoot,
}:
final: prev:
let
  inherit (prev) python;
  cpTag = "cp" + builtins.replaceStrings [ "." ] [ "" ] python.pythonVersion;

  environment = {
    python_full_version = python.version;
    python_version = python.pythonVersion;
    implementation_name = "cpython";
    platform_python_implementation = "CPython";
    platform_machine = "x86_64";
    sys_platform = "linux";
  };

  # PEP 508 markers of the forms these locks use: clauses joined by "and".
  clause =
    text:
    let
      m = builtins.match "[[:space:]]*([a-z_]+) (==|!=|<=|>=|<|>) '([^']*)'[[:space:]]*" text;
      variable = builtins.elemAt m 0;
      op = builtins.elemAt m 1;
      wanted = builtins.elemAt m 2;
      value =
        environment.${variable} or (throw "stand-in uv2nix: marker variable ${variable} not supported");
      isVersion = lib.hasPrefix "python_" variable;
      order = builtins.compareVersions value wanted;
      wildcard = builtins.match "(.*)[.][*]" wanted;
    in
    if m == null then
      throw "stand-in uv2nix: marker clause `${text}` not supported"
    else if op == "==" && wildcard != null then
      lib.hasPrefix (builtins.head wildcard + ".") (value + ".")
    else if op == "==" then
      value == wanted
    else if op == "!=" then
      value != wanted
    else if !isVersion then
      throw "stand-in uv2nix: ${op} on ${variable}"
    else if op == "<" then
      order < 0
    else if op == "<=" then
      order <= 0
    else if op == ">" then
      order > 0
    else
      order >= 0;
  marker =
    text:
    if builtins.match ".* or .*" text != null then
      throw "stand-in uv2nix: `or` in marker `${text}` not supported"
    else
      builtins.all clause (lib.splitString " and " text);

  selected = builtins.filter (
    package: !(package ? resolution-markers) || builtins.any marker package.resolution-markers
  ) uvLock.package;

  specOf =
    dependencies:
    builtins.listToAttrs (
      map (dependency: {
        inherit (dependency) name;
        value = dependency.extra or [ ];
      }) (builtins.filter (dependency: !(dependency ? marker) || marker dependency.marker) dependencies)
    );
  passthruOf = package: {
    dependencies = specOf (package.dependencies or [ ]);
    optional-dependencies = builtins.mapAttrs (_: specOf) (package.optional-dependencies or { });
  };

  # This Python's best wheel: its own ABI, then abi3, then none.
  wheelScore =
    wheel:
    let
      tags = builtins.match ".*-([^-]+)-([^-]+)-([^-]+)[.]whl" wheel.url;
      pythons = lib.splitString "." (builtins.elemAt tags 0);
      abis = lib.splitString "." (builtins.elemAt tags 1);
      platforms = lib.splitString "." (builtins.elemAt tags 2);
      platformOk = builtins.any (
        p: p == "any" || builtins.match "manylinux.*_x86_64" p != null
      ) platforms;
      abi3Ok = builtins.any (
        p:
        let
          m = builtins.match "cp3([0-9]+)" p;
        in
        m != null && builtins.compareVersions "3.${builtins.head m}" python.pythonVersion <= 0
      ) pythons;
      pythonOk = builtins.any (
        p:
        let
          m = builtins.match "py3([0-9]+)" p;
        in
        p == cpTag
        || p == "py3"
        || (m != null && builtins.compareVersions "3.${builtins.head m}" python.pythonVersion <= 0)
      ) pythons;
    in
    if tags == null || !platformOk then
      0
    else if builtins.elem cpTag abis && pythonOk then
      3
    else if builtins.elem "abi3" abis && abi3Ok then
      2
    else if builtins.elem "none" abis && pythonOk then
      1
    else
      0;
  bestWheel =
    package:
    let
      best = builtins.foldl' (
        acc: wheel: if wheelScore wheel > acc.score then { score = wheelScore wheel; inherit wheel; } else acc
      ) { score = 0; wheel = null; } (package.wheels or [ ]);
    in
    if best.wheel == null then
      throw "stand-in uv2nix: ${package.name} ${package.version} has no wheel for ${cpTag} manylinux x86_64 (uv2nix would build its sdist)"
    else
      best.wheel;
  unquote = builtins.replaceStrings [ "%2B" "%21" ] [ "+" "!" ];

  mkPackage =
    package:
    let
      common = {
        pname = package.name;
        inherit (package) version;
        passthru = passthruOf package;
      };
      source = package.source;
    in
    if source ? virtual then
      final.stdenv.mkDerivation common
    else if source ? directory || source ? editable then
      final.stdenv.mkDerivation (
        common
        // {
          src = workspaceRoot + "/${source.directory or source.editable}";
          nativeBuildInputs = [ final.pyprojectHook ] ++ final.resolveBuildSystem { setuptools = [ ]; };
          passthru = common.passthru // {
            format = "pyproject";
          };
        }
      )
    else if source ? registry then
      let
        wheel = bestWheel package;
      in
      final.stdenv.mkDerivation (
        common
        // {
          src = final.pkgs.fetchurl {
            name = unquote (baseNameOf wheel.url);
            inherit (wheel) url;
            sha256 = lib.removePrefix "sha256:" wheel.hash;
          };
          nativeBuildInputs = [
            final.pyprojectWheelHook
            final.pkgs.autoPatchelfHook
          ];
          passthru = common.passthru // {
            format = "wheel";
          };
        }
      )
    else
      throw "stand-in uv2nix: ${package.name}: source ${builtins.toJSON source} not supported";
in
assert builtins.length (lib.unique (map (package: package.name) selected)) == builtins.length selected;
builtins.listToAttrs (
  map (package: {
    inherit (package) name;
    value = mkPackage package;
  }) selected
)
