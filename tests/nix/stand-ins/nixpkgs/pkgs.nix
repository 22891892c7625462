# The nixpkgs attributes lem's Nix uses, and nothing else (docs/architecture.md, "Nix",
# lists them as checked in the pinned nixpkgs). Each package is a fake derivation: it
# instantiates, its .drv shows what it was given, and its builder does not exist.
{ lib, system }:
let
  builder = "/lem-stand-in/cannot-build";

  # What a derivation's environment can hold: drop functions and plain attribute sets.
  inEnvironment = value: !(builtins.isFunction value || (builtins.isAttrs value && !(value ? outPath)));

  # stdenv.mkDerivation: attributes or a function of the final attributes; the result has
  # its attributes, passthru and overrideAttrs (`old: { }` or `final: old: { }`).
  mkDerivationFrom =
    fun:
    let
      args = lib.fix fun;
      passthru = args.passthru or { };
      environment = lib.filterAttrs (_: inEnvironment) (
        builtins.removeAttrs args [
          "passthru"
          "meta"
          "env"
        ]
        // (args.env or { })
      );
      drv = derivation (
        {
          inherit system builder;
          name = args.name or "${args.pname}-${args.version}";
        }
        // builtins.removeAttrs environment [ "name" ]
      );
      asOverlay =
        f: final: prev:
        if !builtins.isFunction f then
          f
        else
          let
            applied = f prev;
          in
          if builtins.isFunction applied then f final prev else applied;
    in
    drv
    // passthru
    // {
      inherit passthru;
      meta = args.meta or { };
      overrideAttrs = f: mkDerivationFrom (lib.extends (asOverlay f) fun);
    };
  mkDerivation = argsOrFun: mkDerivationFrom (if builtins.isFunction argsOrFun then argsOrFun else _: argsOrFun);

  fake = name: mkDerivation { inherit name; };

  mkPython =
    version:
    let
      pythonVersion = lib.concatStringsSep "." (
        builtins.genList (builtins.elemAt (lib.splitString "." version)) 2
      );
      prefix = "python${pythonVersion}";
      python = fake "python3-${version}" // {
        inherit version pythonVersion;
        sitePackages = "lib/${prefix}/site-packages";
        interpreter = "${python}/bin/${prefix}";
        pkgs = pythonPackages;
        withPackages =
          f:
          mkDerivation {
            name = "${prefix}-env";
            paths = f pythonPackages;
          };
      };
      pythonPackages =
        lib.genAttrs [
          # lem's runtime dependencies (pyproject.toml) and its build system
          "click"
          "msgspec"
          "nvidia-ml-py"
          "packaging"
          "pyyaml"
          "pyzmq"
          "rich"
          "setuptools"
          "structlog"
          # the analysis and report extras
          "matplotlib"
          "pandas"
          "pyarrow"
          # the cluster extra
          "ray"
          # the dev extra
          "hypothesis"
          "mypy"
          "psutil"
          "pytest"
          "pytest-timeout"
          "pytest-xdist"
          "ruff"
          "websocket-client"
          "hypothesis"
          "httpx"
          "fastapi"
          "uvicorn"
          "openai"
        ] (name: fake "${prefix}-${name}")
        // {
          buildPythonPackage =
            args:
            mkDerivation (
              args
              // {
                name = "${prefix}-${args.pname}-${args.version}";
              }
            );
        };
    in
    python;

  pkgs = {
    inherit lib pkgs;
    # The stand-in's patch version; what matters to lem is 3.13 (the locks' markers and
    # requires-python, the CPU torch wheel's cp313 tag).
    python3 = mkPython "3.13.0";

    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);

    stdenv = {
      inherit mkDerivation;
      isLinux = true;
      hostPlatform.isLinux = true;
    };

    fetchurl =
      {
        url,
        name ? baseNameOf url,
        sha256 ? null,
        hash ? null,
      }:
      derivation {
        inherit name system url;
        builder = "builtin:fetchurl";
        outputHashMode = "flat";
        outputHashAlgo = "sha256";
        outputHash = if sha256 != null then sha256 else hash;
      };

    runCommand =
      name: environment: buildCommand:
      mkDerivation (environment // { inherit name buildCommand; });

    writeShellApplication =
      {
        name,
        text,
        runtimeInputs ? [ ],
      }:
      mkDerivation {
        inherit name text runtimeInputs;
        meta.mainProgram = name;
      };

    mkShell =
      args:
      mkDerivation (
        {
          name = "nix-shell";
        }
        // args
      );

    autoPatchelfHook = fake "auto-patchelf-hook";
    gnumake = fake "gnumake";
    uv = fake "uv";
    zlib = fake "zlib";
  };
in
pkgs
