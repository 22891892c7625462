#!/usr/bin/env bash
# The GPU checks still owed by the skeleton and measurement issues, as sections to run on a
# GPU machine (the device tool's machine or any node with lem installed). Each section
# writes its output to "$OUT/<section>.log" (OUT defaults to ./device-out).
#
#   bash benchmarks/device_checks.sh gpu-tests campaign cv-check
#   bash benchmarks/device_checks.sh vs-bare-static vs-bare-dynamic
#   bash benchmarks/device_checks.sh sampler-overhead traces zeus
#   bash benchmarks/device_checks.sh sampler-gpu-bound sampler-launch-bound contamination
#   bash benchmarks/device_checks.sh latency timing-overhead
#   bash benchmarks/device_checks.sh parallel            (needs two GPUs)
#   bash benchmarks/device_checks.sh multi-gpu           (needs two GPUs)
#
# On the device tool's machine, first: `. benchmarks/device_setup.sh` (and carry the zeus
# wheel and its pure-Python dependencies in .whl/zeus/ for the `zeus` section). Every section
# runs under a time limit (LEM_SECTION_LIMIT_S, default 580 s) so one hang cannot eat a
# whole device session; the result store is copied to "$OUT/lem.db" at the end.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
STORE=${STORE:-/tmp/lem-device/lem.db}
export COLUMNS=200 PYTHONUNBUFFERED=1

run_section() {
  case "$1" in
    gpu-tests) python3 -m pytest -q -m gpu tests -p no:cacheprovider ;;
    campaign)
      lem campaign configs/llama-3.2-1b-h100.yaml --store "$STORE"
      lem results list --store "$STORE" ;;
    cv-check)
      lem campaign configs/h100-cv-check.yaml --store "$STORE"
      lem results list --store "$STORE" ;;
    vs-bare-static)
      python3 benchmarks/vs_bare_generate.py --cache static \
        ${VS_BARE_ARGS:---pairs 8 --min-warmup-s 30 --max-warmup-s 90} ;;
    vs-bare-dynamic)
      python3 benchmarks/vs_bare_generate.py --cache dynamic \
        ${VS_BARE_ARGS:---pairs 8 --min-warmup-s 60 --max-warmup-s 120} ;;
    sampler-overhead)
      python3 benchmarks/token_timing_overhead.py --device cuda --model llama-3.2-1b \
        --dtype bfloat16 --cache static --batch-sizes 32 --input-tokens 128 \
        --output-tokens 128 --clocks --samplers sampler sampler-no-energy \
        ${SAMPLER_ARGS:---output-tokens 64 --samplers sampler --window-s 2 --rounds 200 --warmup-windows 8 --budget-s 520} ;;
    nvml-query-cost)
      python3 benchmarks/nvml_query_cost.py ${NVML_QUERY_ARGS:---window-s 3 --pairs 4 --kernels-per-burst 800} ;;
    sampler-gpu-bound)
      python3 benchmarks/sampler_overhead_gpu_bound.py ${SAMPLER_GPU_ARGS:---pairs 10 --window-s 5} ;;
    latency)
      lem campaign configs/h100-latency-check.yaml --store "$STORE"
      python3 benchmarks/latency_invariants.py "$STORE" ;;
    timing-overhead)
      python3 benchmarks/token_timing_overhead.py --device cuda --model llama-3.2-1b \
        --dtype bfloat16 --cache static --batch-sizes 32 --input-tokens 128 \
        --output-tokens 128 ${TIMING_ARGS:---window-s 10 --rounds 6 --warmup-windows 3} ;;
    sampler-launch-bound)
      python3 benchmarks/sampler_overhead_gpu_bound.py --workload launch-bound \
        ${SAMPLER_GPU_ARGS:---pairs 10 --window-s 5} ;;
    contamination)
      python3 -c "import time, torch
a = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
end = time.time() + 60
while time.time() < end:
    a @ a; torch.cuda.synchronize(); time.sleep(0.001)" &
      intruder=$!
      sleep 8
      lem campaign configs/h100-contamination-check.yaml --store "$STORE"
      kill "$intruder"; wait "$intruder" 2>/dev/null
      python3 -c "import sqlite3,sys; db=sqlite3.connect(sys.argv[1])
for row in db.execute(\"select m.flags_json, m.payload_json from measurements m join experiments e on e.id=m.experiment_id where e.name like '%contamination%' or m.flags_json like '%contaminated%' order by m.id desc limit 1\"): print(row[0]); print(row[1][:3000])" "$STORE" ;;
    traces)
      python3 benchmarks/record_nvml_trace.py --idle-s 5 --load-s 5 -o "$OUT/h100_trace.jsonl" ;;
    zeus)
      if [ -d .whl/zeus ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/zeus-site \
          .whl/zeus/*.whl || return 1
      fi
      PYTHONPATH=/tmp/zeus-site:${PYTHONPATH:-} python3 benchmarks/vs_zeus.py \
        --window-s ${ZEUS_WINDOWS_S:-2 10 40} --repeats "${ZEUS_REPEATS:-3}" ;;
    parallel)
      # Two one-GPU experiments, one at a time and then in two lanes on GPUs 0 and 1.
      local t0 t1 t2
      t0=$(date +%s.%N)
      lem campaign configs/h100-parallel-check.yaml --max-parallel 1 --gpus 0,1 --store "$STORE" || return 1
      t1=$(date +%s.%N)
      lem campaign configs/h100-parallel-check.yaml --gpus 0,1 --store "$STORE" || return 1
      t2=$(date +%s.%N)
      python3 -c "import sys; t0, t1, t2 = map(float, sys.argv[1:])
print(f'wall --max-parallel 1: {t1 - t0:.1f} s'); print(f'wall default: {t2 - t1:.1f} s')
print(f'ratio: {(t2 - t1) / (t1 - t0):.2f}')" "$t0" "$t1" "$t2"
      lem results list --store "$STORE"
      for id in $(python3 -c "import sqlite3,sys; db=sqlite3.connect(sys.argv[1])
for (i,) in db.execute(\"select id from campaigns where name='h100-parallel-check' order by created_at_unix_s desc limit 2\"): print(i)" "$STORE"); do
        lem results show "$id" --store "$STORE"
        python3 -c "import sqlite3,sys; db=sqlite3.connect(sys.argv[1])
for r in db.execute(\"select e.name, m.cycle, m.worker_id, g.gpu_uuid, round(g.energy_j,1), round(m.started_at_unix_s,1), round(m.duration_s,1) from measurements m join experiments e on e.id=m.experiment_id join gpu_energy g on g.measurement_id=m.id where e.campaign_id=? order by m.started_at_unix_s\", (sys.argv[2],)): print(*r)" "$STORE" "$id"
      done ;;
    multi-gpu)
      # Issue 6: data parallel over two GPUs vs one, then bs1 eager vs static + compile.
      # Each under its own limit (SIGINT: lem stops cleanly and keeps what it stored).
      timeout -s INT -k 20 "${DP_LIMIT_S:-400}" \
        lem campaign configs/h100-data-parallel-check.yaml --gpus 0,1 --store "$STORE"
      timeout -s INT -k 20 "${COMPILE_LIMIT_S:-400}" \
        lem campaign configs/h100-compile-check.yaml --gpus 0,1 --store "$STORE"
      for name in h100-data-parallel-check h100-compile-check; do
        python3 benchmarks/print_measurements.py "$STORE" "$name"
      done ;;
    *) echo "unknown section: $1" >&2; return 2 ;;
  esac
}

export -f run_section
export OUT STORE
status=0
for section in "$@"; do
  echo "== $section ($(date -u +%H:%M:%S))"
  # timeout signals the section's whole process group when the limit passes
  timeout -k 15 "${LEM_SECTION_LIMIT_S:-580}" bash -c 'run_section "$1"' _ "$section" 2>&1 |
    tee "$OUT/$section.log" || status=1
done
[ -f "$STORE" ] && python3 -c "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); s.execute('PRAGMA wal_checkpoint(TRUNCATE)'); s.backup(sqlite3.connect(sys.argv[2]))" "$STORE" "$OUT/lem.db"
exit $status
