#!/usr/bin/env bash
# The pip path from a built wheel, as a new user on a CPU machine takes it: lem installed
# non-editably (no checkout on its path), `lem env sync pytorch` makes the CPU lock's
# environment (pip, hash-checked), `lem env list` reports it matches that lock, the
# quickstart runs in it and its result records the lock; no CUDA wheel in any install log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
python3 -m venv "$work/coordinator"
"$work/coordinator/bin/python" -m pip install -q --log "$work/coordinator-install.log" \
    "$work"/dist/lem-*.whl
cp "$repo/configs/quickstart.yaml" "$work/"
cd "$work"  # away from the checkout: lem comes from the wheel
export PATH="$work/coordinator/bin:/usr/bin:/bin" LEM_ENV_CACHE_DIR="$work/envs"
export PIP_LOG="$work/sync-install.log"  # pip's --log, for the env sync's pip
python -c 'import lem, sys; sys.exit(not lem.__file__.startswith(sys.prefix))'
lem env sync pytorch
unset PIP_LOG
lem env list | tee env-list.txt
grep -q '^  lock: pytorch-cpu sha256:[0-9a-f]*: matches (made from it)$' env-list.txt
lem -q campaign quickstart.yaml --store "$work/lem.db"
lem results export --store "$work/lem.db" --format json -o "$work/results.json"
python - "$work/results.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert rows and all(r["status"] == "ok" for r in rows), rows
assert {(r["engine_lock"], r["engine_lock_matches"]) for r in rows} == {("pytorch-cpu", True)}
print(f"ci: quickstart from the wheel stored {len(rows)} result(s) under lock pytorch-cpu")
PY
python3 "$repo/.ci/no_cuda_downloads.py" "$work/sync-install.log"
