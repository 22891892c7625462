#!/usr/bin/env bash
# On a lent GPU machine (torch + transformers there; lem's light dependencies carried as
# wheels in .whl/): can lem set the power limit here? `lem doctor`'s GPU-settings lines, the
# exact NVML answer to a no-op set, and — only if setting is permitted — J/token at three caps
# with lem's power-limit axis (configs/h100-power-limit-check.yaml). Issue 19 / issue 20 item 4.
#   bash benchmarks/device_gpu_settings.sh      (output under $OUT)
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
# lem's own wheel (pip wheel --no-deps -w .whl/any .) and its light dependencies
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/any/*.whl .whl/cp312/*.whl >/dev/null 2>&1 || echo "wheels: not all installed"
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 COLUMNS=160
nvidia-smi --query-gpu=uuid,name,power.limit,power.default_limit,power.min_limit,power.max_limit \
  --format=csv | tee "$OUT/nvidia-smi.csv"
lem doctor 2>&1 | tee "$OUT/doctor.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/settings-probe.txt"
from lem.protocol.devices.gpu_settings import GpuSettings, limits, setting_problem
from lem.protocol.devices.nvml import inventory
for gpu in inventory().gpus:
    print(gpu.uuid, gpu.name, "limit now", gpu.power_limit_w, "W; range", limits(gpu.uuid))
    for ask in (GpuSettings(power_limit_w=500.0), GpuSettings(sm_clocks_mhz=1500)):
        print("  ", ask, "->", setting_problem(gpu.uuid, ask) or "permitted")
PY
if grep -q "permitted" "$OUT/settings-probe.txt" && [ -f configs/h100-power-limit-check.yaml ]; then
  lem campaign configs/h100-power-limit-check.yaml --store /tmp/lem-device/lem.db
  lem results show --all --store /tmp/lem-device/lem.db "$(lem results list --store \
    /tmp/lem-device/lem.db | grep -o 'c-[0-9T-]*-[0-9a-f]*' | head -1)" | tee "$OUT/caps.txt"
  lem results export --store /tmp/lem-device/lem.db --format csv -o "$OUT/caps.csv"
  nvidia-smi --query-gpu=uuid,power.limit --format=csv | tee "$OUT/after.csv"
fi
