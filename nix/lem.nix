# lem's Nix packages (flake.nix exposes them), built from the locks in envs/ that
# envs/make_locks.py makes and `lem env sync` installs:
#
# - workers.<lock>: one Python virtual environment per worker lock, from the engines'
#   published wheels: uv2nix reads envs/<env>/uv.lock, pyproject.nix installs each locked
#   wheel. Nothing compiles from source but lem itself (pure Python). Each environment has
#   $out/bin/python (it imports lem.workers: checked when it is built) and $out/lem-env.json.
# - coordinator: `lem` on nixpkgs' python3 packages (no CUDA in them; the binary cache has
#   them), wrapped to export LEM_NIX_WORKER_DRVS=<lock>=<worker .drv>:... The wrapper holds
#   the workers' derivation files, not their outputs, so `lem --help`, `lem config validate`
#   and the CPU quickstart build no CUDA worker: the coordinator realises the one it needs
#   on first use (`nix-store --realise`).
#
# docs/architecture.md, "Nix", lists every nixpkgs attribute used here, how each input was
# pinned and checked, and what nix/check-flake.sh checks.
{
  pkgs,
  pyproject-nix,
  uv2nix,
  pyproject-build-systems,
  src,
}:
let
  inherit (pkgs) lib;
  python = pkgs.python3;
  inherit (python) sitePackages;

  lemProject = (builtins.fromTOML (builtins.readFile (src + "/pyproject.toml"))).project;

  # lem's own sources, what its wheel is built from (README.md: pyproject.toml's readme), so
  # an edit to docs, tests or the flake changes no lem derivation.
  lemSource = builtins.path {
    name = "lem-source";
    path = src;
    filter =
      path: _type:
      let
        relative = lib.removePrefix (toString src + "/") (toString path);
        top = builtins.head (lib.splitString "/" relative);
      in
      builtins.elem top [
        "pyproject.toml"
        "README.md"
        "api"
        "protocol"
        "coordinator"
        "workers"
        "envs"
        "docs"
      ]
      && baseNameOf path != "__pycache__";
  };

  # A requirement's distribution name as nixpkgs names Python packages ("PyYAML>=6" -> "pyyaml").
  requirementName =
    spec:
    lib.toLower (
      builtins.replaceStrings [ "_" "." ] [ "-" "-" ] (
        builtins.head (builtins.match "[[:space:]]*([A-Za-z0-9][A-Za-z0-9._-]*).*" spec)
      )
    );
  nixpkgsPythonPackages = ps: map (spec: ps.${requirementName spec});

  # Host driver libraries: never in the store. Workers find them at run time through the
  # coordinator's LD_LIBRARY_PATH (a private folder of links to only the host's driver
  # libraries); autoPatchelf must leave them unresolved. Of the locked wheels only
  # libcuda.so.1 is a DT_NEEDED entry (torch, vllm and a few kernel wheels); NVML is opened
  # with dlopen/ctypes.
  driverLibraries = [
    "libcuda.so.1"
    "libnvidia-ml.so.1"
  ];

  # Optional plugins some locked wheels ship and load only on request (NVSHMEM's MPI/PMIx/
  # OpenSHMEM bootstraps and InfiniBand/UCX/libfabric transports, cuFile's RDMA plugin,
  # numba's TBB and OpenMP threading layers, torchcodec's builds for other FFmpeg
  # versions): their host libraries are not in the environments, so these plugins stay
  # unlinked. lem's single-node runs load none of them. Keys: package name prefixes.
  unlinkedPluginLibraries = {
    "nvidia-nvshmem-" = [
      "libmpi.so.40"
      "liboshmem.so.40"
      "libpmix.so.2"
      "libfabric.so.1"
      "libucp.so.0"
      "libucs.so.0"
      "libmlx5.so.1"
    ];
    "nvidia-cufile" = [
      "libibverbs.so.1"
      "librdmacm.so.1"
      "libmlx5.so.1"
    ];
    "numba" = [
      "libtbb.so.12"
      "libgomp.so.1.0.0"
    ];
    "torchcodec" = [
      "libavcodec.so.*"
      "libavdevice.so.*"
      "libavfilter.so.*"
      "libavformat.so.*"
      "libavutil.so.*"
      "libswresample.so.*"
      "libswscale.so.*"
      "libheif.so.*"
    ];
  };
  unlinkedPluginsOf =
    name:
    builtins.concatLists (
      lib.mapAttrsToList (prefix: libs: if lib.hasPrefix prefix name then libs else [ ]) unlinkedPluginLibraries
    );

  # uv2nix installs every wheel with autoPatchelfHook. A wheel's RPATH points into its
  # dependencies' folders of a single site-packages ($ORIGIN/../../nvidia/...), which are
  # separate store paths under Nix: so each wheel with native code gets, as autoPatchelf
  # search paths, the site-packages of the native wheels it depends on in the lock (torch
  # gets the nvidia-* wheels' libraries through cuda-toolkit's extras, vllm and torchvision
  # get torch/lib, nvidia-cusolver gets cuBLAS and nvJitLink). zlib is added because some
  # wheels (cuDNN, triton) need libz.so.1.
  wheelFixups =
    uvLock: final: prev:
    let
      hasNativeWheel =
        package:
        builtins.any (wheel: !lib.hasSuffix "-none-any.whl" wheel.url) (package.wheels or [ ]);
      native = lib.unique (map (package: package.name) (builtins.filter hasNativeWheel uvLock.package));
      isNative = name: builtins.elem name native;

      # Everything `name` depends on in the resolved set, extras followed (name@extra keys,
      # as pyproject.nix resolves a virtual environment).
      closure =
        name:
        let
          keys = builtins.genericClosure {
            startSet = [ { key = name; } ];
            operator =
              { key }:
              let
                parts = builtins.match "(.+)@(.+)" key;
                package = if parts == null then key else builtins.elemAt parts 0;
                specs =
                  if parts == null then
                    prev.${package}.passthru.dependencies or { }
                  else
                    prev.${package}.passthru.optional-dependencies.${builtins.elemAt parts 1} or { };
              in
              builtins.concatLists (
                lib.mapAttrsToList (
                  dependency: extras: [ { key = dependency; } ] ++ map (extra: { key = "${dependency}@${extra}"; }) extras
                ) specs
              );
          };
        in
        builtins.filter (key: builtins.match ".+@.+" key == null) (map (item: item.key) keys);

      fix =
        name:
        prev.${name}.overrideAttrs (old: {
          buildInputs = (old.buildInputs or [ ]) ++ [ pkgs.zlib ];
          autoPatchelfIgnoreMissingDeps =
            (old.autoPatchelfIgnoreMissingDeps or [ ]) ++ driverLibraries ++ unlinkedPluginsOf name;
          preFixup =
            (old.preFixup or "")
            + lib.concatMapStrings (dependency: ''
              addAutoPatchelfSearchPath "${final.${dependency}}/${sitePackages}"
            '') (builtins.filter (dependency: dependency != name && isNative dependency) (closure name));
        });
    in
    lib.genAttrs (builtins.filter (name: prev ? ${name}) native) fix;

  # lem is a `directory` package of every worker lock (envs/<env>/pyproject.toml's
  # tool.uv.sources): built from lem's sources only.
  lemFromSource = _final: prev: {
    lem = prev.lem.overrideAttrs (_old: {
      src = lemSource;
    });
  };

  # The CPU twin of the pytorch lock (envs/pytorch-cpu/requirements.txt, derived by
  # envs/make_locks.py): the same resolution with PyTorch's CPU build of the same torch
  # (its digests: envs/pytorch-cpu/torch-cpu-wheels.txt) and without the packages only the
  # CUDA build needs (make_locks.py's GPU_ONLY names).
  gpuOnly = name: builtins.match "(nvidia-.*|cuda-.*|triton)" name != null;
  cpuTorchWheel =
    version:
    let
      tag = "cp" + builtins.replaceStrings [ "." ] [ "" ] python.pythonVersion;
      prefix = "torch-${version}+cpu-${tag}-${tag}-manylinux";
      lines = lib.splitString "\n" (builtins.readFile (src + "/envs/pytorch-cpu/torch-cpu-wheels.txt"));
      entries = builtins.filter (entry: entry != null) (
        map (builtins.match "([0-9a-f]{64})  (.+x86_64[.]whl)") lines
      );
      matching = builtins.filter (entry: lib.hasPrefix prefix (builtins.elemAt entry 1)) entries;
      entry =
        if matching != [ ] then
          builtins.head matching
        else
          throw "envs/pytorch-cpu/torch-cpu-wheels.txt has no ${prefix}*x86_64.whl line: add its sha256 (make_locks.py reads the same file)";
      file = builtins.elemAt entry 1;
    in
    pkgs.fetchurl {
      name = file;
      url = "https://download.pytorch.org/whl/cpu/" + builtins.replaceStrings [ "+" ] [ "%2B" ] file;
      sha256 = builtins.elemAt entry 0;
    };
  cpuTorch = _final: prev: {
    torch = prev.torch.overrideAttrs (old: {
      version = "${old.version}+cpu";
      src = cpuTorchWheel old.version;
      passthru = old.passthru // {
        dependencies = lib.filterAttrs (dependency: _: !gpuOnly dependency) old.passthru.dependencies;
      };
    });
  };

  # One worker environment: the virtual environment of envs/<workspace>/uv.lock's root
  # project (lem-env-<workspace>: the engine and lem).
  mkWorker =
    {
      lock,
      backend,
      workspace,
      overlays ? [ ],
    }:
    let
      workspaceRoot = src + "/envs/${workspace}";
      uvWorkspace = uv2nix.lib.workspace.loadWorkspace { inherit workspaceRoot; };
      uvLock = builtins.fromTOML (builtins.readFile (workspaceRoot + "/uv.lock"));
      pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope (
        lib.composeManyExtensions (
          [
            pyproject-build-systems.overlays.wheel
            (uvWorkspace.mkPyprojectOverlay { sourcePreference = "wheel"; })
            lemFromSource
          ]
          ++ overlays
          ++ [ (wheelFixups uvLock) ]
        )
      );
      # $out/lem-env.json ($out is the venv's sys.prefix): which lock this environment is,
      # named by the SHA-256 of the requirements file `lem env sync` installs for it.
      lemEnv = builtins.toJSON {
        inherit backend lock;
        lock_sha256 = builtins.hashFile "sha256" (src + "/envs/${lock}/requirements.txt");
        source = "nix";
      };
    in
    (pythonSet.mkVirtualEnv "lem-worker-${lock}" uvWorkspace.deps.default).overrideAttrs (old: {
      postInstall = (old.postInstall or "") + ''
        printf '%s\n' ${lib.escapeShellArg lemEnv} > "$out/lem-env.json"
        "$out/bin/python" -c 'import lem.workers'
      '';
      passthru = (old.passthru or { }) // {
        inherit lock lemEnv pythonSet;
      };
    });

  tensorrtLocked = builtins.pathExists (src + "/envs/tensorrt/uv.lock");
  tensorrtReason = ''
    lem's worker-tensorrt is built from envs/tensorrt/uv.lock, which does not exist: its
    TensorRT-LLM libraries come from pypi.nvidia.com, which the machine that made lem's
    locks could not reach (envs/tensorrt/UNRESOLVED.txt). `make lock` on a machine that
    reaches pypi.nvidia.com writes the lock; this flake then builds worker-tensorrt like
    the other workers and adds it to LEM_NIX_WORKER_DRVS. Until then the tensorrt worker
    comes from `lem env sync tensorrt` or LEM_TENSORRT_PYTHON.
  '';

  workers = {
    pytorch = mkWorker {
      lock = "pytorch";
      backend = "pytorch";
      workspace = "pytorch";
    };
    pytorch-cpu = mkWorker {
      lock = "pytorch-cpu";
      backend = "pytorch";
      workspace = "pytorch";
      overlays = [ cpuTorch ];
    };
    vllm = mkWorker {
      lock = "vllm";
      backend = "vllm";
      workspace = "vllm";
    };
    tensorrt =
      if tensorrtLocked then
        mkWorker {
          lock = "tensorrt";
          backend = "tensorrt";
          workspace = "tensorrt";
        }
      else
        pkgs.runCommand "lem-worker-tensorrt-unlocked"
          {
            passthru.unavailable = tensorrtReason;
          }
          ''
            echo ${lib.escapeShellArg tensorrtReason} >&2
            exit 1
          '';
  };

  # The workers the coordinator may realise: each as its derivation file only
  # (unsafeDiscardOutputDependency), so the wrapper's closure holds the .drv files but no
  # worker output.
  runnableWorkers = lib.filterAttrs (name: _: name != "tensorrt" || tensorrtLocked) workers;
  workerDrvs = lib.concatStringsSep ":" (
    lib.mapAttrsToList (
      name: worker: "${name}=${builtins.unsafeDiscardOutputDependency worker.drvPath}"
    ) runnableWorkers
  );

  # lem for the coordinator: its runtime dependencies as pyproject.toml names them, from
  # nixpkgs (buildPythonPackage checks the version ranges when it builds).
  lemPackage = python.pkgs.buildPythonPackage {
    pname = "lem";
    inherit (lemProject) version;
    pyproject = true;
    src = lemSource;
    build-system = [ python.pkgs.setuptools ];
    dependencies = nixpkgsPythonPackages python.pkgs lemProject.dependencies;
    pythonImportsCheck = [
      "lem"
      "lem.coordinator.cli.main"
      "lem.workers"
      "lem.envs"
    ];
    doCheck = false; # lem's tests run in CI (`make test`), not in this build
  };

  extras = lemProject.optional-dependencies;

  # The coordinator's interpreter: lem, pandas/pyarrow (export, the Python API),
  # matplotlib (`lem report`) and Ray (`--cluster`): pyproject.toml's analysis, report and
  # cluster extras.
  coordinatorPython = python.withPackages (
    ps:
    [ lemPackage ] ++ nixpkgsPythonPackages ps (extras.analysis ++ extras.report ++ extras.cluster)
  );

  coordinator = pkgs.writeShellApplication {
    name = "lem";
    text = ''
      export LEM_NIX_WORKER_DRVS="${workerDrvs}"
      exec ${coordinatorPython}/bin/lem "$@"
    '';
  };

  # `nix develop`: lem's dependencies (runtime, analysis, report, dev) without lem itself,
  # which comes from the working tree.
  devPython = python.withPackages (
    ps:
    [ ps.setuptools ]
    ++ nixpkgsPythonPackages ps (
      lemProject.dependencies
      ++ extras.analysis
      ++ extras.report
      ++ extras.cluster
      # uv is a program here (the dev shell's pkgs.uv), not a Python package
      ++ builtins.filter (spec: requirementName spec != "uv") extras.dev
    )
  );
in
{
  inherit
    coordinator
    coordinatorPython
    devPython
    lemPackage
    workers
    workerDrvs
    ;
}
