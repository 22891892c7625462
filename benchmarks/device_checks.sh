#!/usr/bin/env bash
# The GPU checks still owed by the skeleton and measurement issues, as sections to run on a
# GPU machine (the device tool's machine or any node with lem installed). Each section
# writes its output to "$OUT/<section>.log" (OUT defaults to ./device-out).
#
#   bash benchmarks/device_checks.sh gpu-tests campaign cv-check
#   bash benchmarks/device_checks.sh vs-bare-static vs-bare-dynamic
#   bash benchmarks/device_checks.sh sampler-overhead traces zeus
#
# On the device tool's machine, first: `. benchmarks/device_setup.sh` (and carry the zeus
# wheel in .whl/ for the `zeus` section).
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
STORE=${STORE:-/tmp/lem-device/lem.db}
export COLUMNS=200 PYTHONUNBUFFERED=1

run_section() {
  case "$1" in
    gpu-tests) python3 -m pytest -q -m gpu tests -p no:cacheprovider ;;
    campaign) lem campaign configs/llama-3.2-1b-h100.yaml --store "$STORE" ;;
    cv-check) lem campaign configs/h100-cv-check.yaml --store "$STORE" ;;
    vs-bare-static)
      python3 benchmarks/vs_bare_generate.py --cache static --pairs 10 --prompts-scale 4 \
        --min-warmup-s 60 --max-warmup-s 180 ;;
    vs-bare-dynamic)
      python3 benchmarks/vs_bare_generate.py --cache dynamic --pairs 10 \
        --min-warmup-s 60 --max-warmup-s 180 ;;
    sampler-overhead) python3 benchmarks/sampler_overhead.py --pairs 10 --cache static ;;
    traces)
      python3 benchmarks/record_nvml_trace.py --idle-s 5 --load-s 5 -o "$OUT/h100_trace.jsonl" ;;
    zeus) python3 benchmarks/vs_zeus.py --window-s 2 10 40 --repeats 3 ;;
    *) echo "unknown section: $1" >&2; return 2 ;;
  esac
}

status=0
for section in "$@"; do
  echo "== $section ($(date -u +%H:%M:%S))"
  run_section "$section" 2>&1 | tee "$OUT/$section.log" || status=1
done
exit $status
