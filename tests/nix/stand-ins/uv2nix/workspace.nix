# lib.workspace.loadWorkspace for a uv workspace whose root is one project (lem's
# envs/<env>/: a virtual root depending on the engine and on lem as a directory package).
{ lib }:
{
  loadWorkspace =
    { workspaceRoot }:
    let
      uvLock = builtins.fromTOML (builtins.readFile (workspaceRoot + "/uv.lock"));
      root = (builtins.fromTOML (builtins.readFile (workspaceRoot + "/pyproject.toml"))).project.name;
      spec = {
        ${root} = [ ];
      };
    in
    {
      deps = {
        default = spec;
        all = spec;
      };
      # Only wheels: lem's flake promises that no engine compiles from source.
      mkPyprojectOverlay =
        { sourcePreference }:
        if sourcePreference != "wheel" then
          throw "stand-in uv2nix: lem's flake must install wheels (sourcePreference = \"wheel\"), got ${sourcePreference}"
        else
          import ./packages.nix { inherit lib uvLock workspaceRoot; };
    };
}
