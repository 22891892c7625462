#!/usr/bin/env bash
# CI's check of lem's flake: every .nix file parses, and the flake's outputs evaluate with
# every input replaced by a local stand-in (tests/nix/stand-ins), checked against lem's own
# files by nix/check_flake.py (its docstring lists what). No network, nothing is built, no
# lock file is written. What this does not check: that the pinned nixpkgs, pyproject.nix
# and uv2nix provide what the stand-ins imitate, or that anything builds
# (docs/architecture.md, "Nix").
#
#   nix/check-flake.sh          the stand-ins (CI; offline, about a second)
#   nix/check-flake.sh --real   the same checks on the pinned inputs of flake.lock: fetches
#                               them (network), evaluates and instantiates the real
#                               derivations, builds nothing
#
# Needs nix (2.8 or later) and python3 (3.11 or later). Exit status 1 on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

nix=(nix --extra-experimental-features "nix-command flakes")
flags=(--no-write-lock-file)
if [ "${1:-}" = "--real" ]; then
  echo "check-flake: the pinned inputs (flake.lock), not the stand-ins"
else
  for input in nixpkgs pyproject-nix uv2nix pyproject-build-systems; do
    flags+=(--override-input "$input" "path:$root/tests/nix/stand-ins/$input")
  done
fi

# The flake is read from git when this is a checkout: files git does not know are invisible.
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  untracked=$(git -C "$root" ls-files --others --exclude-standard -- flake.nix flake.lock nix envs tests/nix pyproject.toml)
  if [ -n "$untracked" ]; then
    echo "check-flake: not in git, so not in the flake (git add them):" $untracked >&2
    exit 1
  fi
  nix_files=$(git -C "$root" ls-files -- '*.nix')
else
  nix_files=$(find . -name '*.nix' -not -path './.*' -not -path '*/node_modules/*')
fi

count=0
for file in $nix_files; do
  nix-instantiate --parse "$file" >/dev/null
  count=$((count + 1))
done
echo "check-flake: $count .nix files parse"

# The outputs' schema (packages, apps, devShells), as `nix flake check` sees it; no builds.
if ! out=$("${nix[@]}" flake check --no-build "${flags[@]}" "$root" 2>&1); then
  echo "$out" | tail -n 20
  echo "check-flake: FAILED: nix flake check --no-build"
  exit 1
fi
echo "check-flake: nix flake check --no-build passes"

python3 "$root/nix/check_flake.py" "$root" "${nix[@]}" --flake-flags "${flags[@]}"
