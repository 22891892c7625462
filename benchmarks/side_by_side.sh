#!/usr/bin/env bash
# Issue 20, side by side on one GPU: lem against optimum-benchmark, Zeus and a bare loop, and
# the redesign re-verified. Each comparison runs inside one call (one card); each section
# writes "$OUT/<section>.jsonl" or ".log" as it goes, so a call cut short keeps what it made.
#
#   call 1:  bash benchmarks/side_by_side.sh optimum regression   (~8 min)
#   call 2:  bash benchmarks/side_by_side.sh cv bs1 caps           (~7 min)
#   call 3:  bash benchmarks/side_by_side.sh server                (~9 min)
#   call 4:  bash benchmarks/side_by_side.sh regression32          (~6 min)
#
# optimum     optimum-benchmark 0.6 (CodeCarbon energy) at batch 1/8/32 on a saved model
#             folder (benchmarks/peer_optimum.py; ~50 s a batch size).
# regression  lem's worker against a bare generate loop measured with ZeusMonitor, windows
#             interleaved (ABBA, 5 pairs), at batch 32 and 8: lem/bare throughput and J/token
#             from lem's windows and Zeus's (benchmarks/vs_bare_generate.py --zeus; ~160 s a
#             batch size, most of it the static cache's compile in both processes).
# bs1         the same at batch 1 (~105 s).
# regression32  batch 32 alone, 16 pairs after up to 150 s of warmup: lem/bare to ~1%.
# cv          lem campaign, batch 32, 5 cycles (configs/h100-peers-cv.yaml): J/token CV,
#             gross and net (~150 s).
# caps        benchmarks/device_gpu_settings.sh: lem doctor, NVML's answer to setting a power
#             limit, and J/token at three caps with lem's power-limit axis where it is
#             permitted (~160 s).
# server      transformers serve against lem's in-process engine at three Poisson rates,
#             engines interleaved per rate; each run sends requests for at least 60 s, so
#             that a steady-state window (>= 40 s) can exist (~9 min).
#
# All at the llama-3.2-1b shape with random weights, bf16, static KV cache, 128 input and
# 128 output tokens. On the device tool's machine carry .whl (lem's wheel and light
# dependencies in .whl/any and .whl/cp312; optimum-benchmark, CodeCarbon, Zeus and what the
# machine lacks in .whl/peers): benchmarks/device_wheels.py installs only the wheels whose
# project is not there already. Numbers: docs/measurements.md section 12, docs/peers.md.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 COLUMNS=200 COUNTRY_ISO_CODE=USA

setup() {
  python3 benchmarks/device_wheels.py --target /tmp/site .whl/any .whl/cp312 .whl/peers \
    2>&1 | tail -3
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  nvidia-smi --query-gpu=uuid,name,driver_version,power.limit,temperature.gpu \
    --format=csv | tee "$OUT/gpu.csv"
  python3 -c "import torch, transformers; print('torch', torch.__version__,
    'transformers', transformers.__version__)" | tee -a "$OUT/gpu.csv"
}

optimum() {
  local model=/tmp/peer-model
  [ -d "$model" ] || python3 benchmarks/peer_model.py --shape llama-3.2-1b \
    --dtype bfloat16 "$model" >/dev/null
  timeout 200 python3 benchmarks/peer_optimum.py --model "$model" --batch-sizes 1 8 32 \
    --duration-s 8 --iterations 5 --warmup-runs 5 \
    2>"$OUT/peers-optimum.log" | tee "$OUT/peers-optimum.jsonl"
  tail -5 "$OUT/peers-optimum.log"
}

vs_bare() {  # batch sizes, output name, prompts scale, pairs, most warmup s, limit s
  timeout "${6:-340}" python3 benchmarks/vs_bare_generate.py --cache static --zeus \
    --batch-sizes $1 --pairs "${4:-5}" --prompts-scale "${3:-4}" --min-warmup-s 20 \
    --max-warmup-s "${5:-45}" --converge-cv 0.02 2>"$OUT/$2.log" | tee "$OUT/$2.jsonl"
  tail -3 "$OUT/$2.log"
}

regression() {
  vs_bare "32 8" peers-vs-bare
}

bs1() {
  vs_bare 1 peers-vs-bare-bs1 2
}

regression32() {  # batch 32 resolved to ~1%: 16 pairs after a warmup that can converge
  vs_bare 32 regression-bs32 4 16 150 540
}

cv() {
  timeout 200 lem campaign configs/h100-peers-cv.yaml --store /tmp/lem-cv.db \
    >"$OUT/cv.log" 2>&1
  tail -3 "$OUT/cv.log"
  lem results export --store /tmp/lem-cv.db --format csv -o "$OUT/cv.csv"
  lem results show --store /tmp/lem-cv.db "$(lem results list --store /tmp/lem-cv.db \
    | grep -o 'c-[0-9T-]*-[0-9a-f]*' | head -1)" | tail -12
}

server() {
  timeout 560 python3 benchmarks/server_vs_inprocess.py --device cuda \
    --rates 0.2 0.3 0.4 --num-requests 8 --min-window-s 60 --store /tmp/lem-server.db \
    2>"$OUT/server.log" | tee "$OUT/server.jsonl"
  tail -3 "$OUT/server.log"
  lem results export --store /tmp/lem-server.db --format csv -o "$OUT/server.csv"
}

caps() {
  bash benchmarks/device_gpu_settings.sh
}

setup
for section in "$@"; do
  echo "== $section ($(date -u +%T))"
  "$section" || echo "$section: rc $?"
done
echo "== done ($(date -u +%T))"
