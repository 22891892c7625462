"""The golden set: real campaigns on CPU, read back through lem's exported tables, projected
onto what is deterministic, and compared with the projections recorded in expected/.

Only user-facing interfaces are used, so that the harness outlives any restructuring of
lem's modules: campaigns run as ``python -m lem.coordinator campaign FILE --store DB`` (and
``lem resume ID``), and results come back through ``lem results export --format json`` at
both levels, whose columns are the documented contract (docs/results.md). Nothing here
imports lem. The test seams it needs are environment variables, named once below
(``SLEEP_ENGINE``, ``SEAMS``): update them there if they move.

Projection rule ("equal except timestamps and ids"), per cell of an export row. Every row
keeps every key in order, so a column added, renamed, dropped or moved is a difference;
rows keep the export's order (experiment position, cycle).

- **exact**: every str, int and bool and the null-ness of every column: names, statuses,
  failure and ``*_unavailable_reason`` texts, energy method, device, GPU names, UUIDs and
  power limits, driver and CUDA version, prompt/batch/token counts, repetitions, warmup
  batches, attempts, ``model_reused``, cycles ok/failed, every ``M_n``, and every
  ``config.*`` value (floats included: they are the config).
- **flags** exact, less ``TIMING_FLAGS`` (``counter_power_mismatch``: with sub-second
  windows the H100's ~0.1 s counter against 0.1 s power samples is a coin toss; seen on a
  different cycle set in each of three runs).
- **measured floats** (durations, rates, energy, power, bounds, latencies, statistics) vary
  with timing: energy comes from a replayed counter read at wall-clock times. A float
  becomes ``"float"``; in ``POSITIVE`` (physically > 0 when measured) ``"float>0"``; in
  ``ZERO_OR_POSITIVE`` (where 0 means something: a reused model, no warmup, a clamped net
  energy) ``0.0`` when exactly 0, else ``"float>0"``. A value of another sign shows as
  ``"float=0"`` / ``"float<0"`` and so differs. Statistics whose sign chance decides (CI
  bounds over two noisy cycles, std, CV) are plain ``"float"``.
- **server-mode ``batches``** (engine steps of continuous batching: 41-45 in three runs of
  one config) becomes ``"int>0"``; offline batches stay exact.
- **dropped** to a marker of their type (``"<str>"``, ``"<float>"``, ``"<bool>"``, ``"<int>"``
  or null): ids (``campaign_id``, ``experiment_id``, ``worker_id``), timestamps
  (``recorded_at_unix_s``, ``started_at_unix_s``), and the environment rather than
  behaviour (``hostname``, ``python_version``, ``lem_version``, ``packages``,
  ``backend_version``, ``engine_lock*``, and ``schema_version``: a restructuring may bump
  the store schema on purpose).
- **host-dependent**: RAPL (``cpu_energy_*``, ``dram_energy_*``) depends on the host's
  powercap sysfs; the projection keeps only that exactly one of value and reason is null.
- **a resumed campaign** equals its straight run except that the one cycle in flight when
  the coordinator was killed counts that attempt (``attempts`` 2): ``resumed_as_straight``.

Other sources of variation are designed out of the campaigns: ``min_window_s: 0`` with
``min_iterations`` fixes the passes (counts are exact); NVML is always a replay, so no
host's driver matters, even for the CPU campaign; the replayed H100 (``write_trace``) is
real idle rows for its first ``IDLE_S`` seconds and real load rows after, and the sleep
engine's one-time "load" (``LOAD_DELAY_S``) puts every measured window past the idle part
while the idle baseline (measured right after the 1 s counter-period probe, at ~1.1-1.4 s)
falls inside it: the baseline is far below the load, so net energy is never clamped. (A
machine so loaded that a worker's baseline ends more than ~3.6 s late would show
``net_energy_clamped``: the test says so when it sees it.)
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CAMPAIGNS_DIR = HERE / "campaigns"
EXPECTED_DIR = HERE / "expected"
TRACE_DATA = ROOT / "tests" / "data"  # real H100 rows: h100_idle.jsonl, h100_load.jsonl
OLD_STORE = HERE / "store-main.db"  # written by lem before the restructuring (issue 14)
OLD_STORE_EXPORT = EXPECTED_DIR / "store-main.json"

# ---- test seams (the only names of lem internals here; update if they move) ----------
SLEEP_ENGINE = "lem.workers.engines.sleep:SleepBackend"
SEAMS = {
    "engine": "LEM_WORKER_BACKEND",  # module:Class replacing the configured engine
    "nvml": "LEM_NVML_REPLAY",  # a JSON-lines trace served as NVML
    "load_delay": "LEM_SLEEP_LOAD_S",  # UUID=SECONDS: the sleep engine's one-time load
}

# A worker's replay starts at its first NVML call; its idle baseline ends ~1.4 s later on an
# idle machine (after the 1 s counter-period probe), and its first window no earlier than
# 1 s + 0.3 s (baseline) + LOAD_DELAY_S. IDLE_S leaves 3.6 s for a loaded machine to be late
# (3.2 s was not enough for the two data-parallel workers starting at once on 2 busy cores).
IDLE_S = 5.0  # replay seconds of idle rows before the load rows
LOAD_DELAY_S = 4.0  # the sleep engine's first "load": windows start past IDLE_S
TRACE_S = 60.0  # replay seconds of the whole trace (it loops after: back to idle)
GPU_UUIDS = ("GPU-ef8e7e53-ef8e-404c-1c2b-b8e64aaed4ea", "GPU-golden-copy-of-ef8e7e53")
LEM_TIMEOUT_S = 180

# ---- campaigns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """A campaign file of campaigns/ and how to run it: ``engine`` "sleep" (the sleep
    engine) or "configured"; ``gpus`` replayed GPUs (1 or 2); ``interrupt``: kill -9 the
    coordinator after the first stored result, then ``lem resume``."""

    name: str
    engine: str = "sleep"
    gpus: int = 1
    interrupt: bool = False
    rows: int = 0  # rows the campaign stores (experiments × cycles): for ``interrupt``
    expected: str = ""  # the expected/ file, default the name

    @property
    def file(self) -> Path:
        return CAMPAIGNS_DIR / f"{self.name}.yaml"

    @property
    def expected_file(self) -> Path:
        return EXPECTED_DIR / f"{self.expected or self.name}.json"


CAMPAIGNS = [
    Campaign("tiny-cpu", engine="configured"),  # (a) offline + server, the real PyTorch engine
    Campaign("sleep-replay"),  # (b) offline and (c) server, energy from the replayed H100
    Campaign("data-parallel", gpus=2),  # (d) shards over two replayed GPUs
    Campaign("resume"),  # (e) the straight run of the resumed campaign
    Campaign("resume", interrupt=True, rows=6, expected="resume"),  # (e) kill -9, then lem resume
]


def campaign_id_of(campaign: Campaign) -> str:
    return f"{campaign.name}-interrupted" if campaign.interrupt else campaign.name


# ---- the replayed H100 ----------------------------------------------------------------


def _rows(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *rows = (json.loads(line) for line in (TRACE_DATA / name).read_text().splitlines())
    return header, rows


def _loop(
    rows: list[dict[str, Any]], start_s: float, start_mj: int, until_s: float
) -> Iterator[dict[str, Any]]:
    """``rows`` repeated from ``start_s`` (replay seconds) until ``until_s``, their counter
    continuing from ``start_mj``: each repetition adds the rows' own energy gain."""
    step_s = statistics.median(b["t_s"] - a["t_s"] for a, b in itertools.pairwise(rows))
    span_s = rows[-1]["t_s"] - rows[0]["t_s"] + step_s
    gain_mj = rows[-1]["energy_mj"] - rows[0]["energy_mj"]
    for k in range(math.ceil((until_s - start_s) / span_s)):
        for row in rows:
            t_s = start_s + k * span_s + row["t_s"] - rows[0]["t_s"]
            if t_s >= until_s:
                return
            energy_mj = start_mj + k * gain_mj + row["energy_mj"] - rows[0]["energy_mj"]
            yield {**row, "t_s": round(t_s, 6), "energy_mj": energy_mj}


def write_trace(path: Path, gpus: int) -> Path:
    """A replay trace of ``gpus`` identical H100s: tests/data's real idle rows (the tail,
    steady ~77 W, repeated) until ``IDLE_S``, then its real load rows (~690 W) repeated
    until ``TRACE_S``; the counter is monotonic throughout. Deterministic."""
    _, idle = _rows("h100_idle.jsonl")
    load_header, load = _rows("h100_load.jsonl")
    t0_s = idle[0]["t_s"]
    rows = [{**r, "t_s": round(r["t_s"] - t0_s, 6)} for r in idle]
    steady = [r for r in rows if r["power_mw"] < 80_000]  # after the post-load decay
    rows += _loop(steady, rows[-1]["t_s"] + 0.004, rows[-1]["energy_mj"], IDLE_S)
    rows += _loop(load, rows[-1]["t_s"] + 0.004, rows[-1]["energy_mj"], TRACE_S)
    [device] = load_header["devices"]
    header = {
        "gpu": load_header["gpu"],
        "driver": load_header["driver"],
        "cuda_driver_version": load_header["cuda_driver_version"],
        "synthetic": False,
        "recorded": "tests/data/h100_idle.jsonl then h100_load.jsonl, looped "
        "(tests/golden/harness.py: write_trace)",
        "devices": [{**device, "uuid": uuid} for uuid in GPU_UUIDS[:gpus]],
    }
    lines = [json.dumps(header)]
    for row in rows:
        lines.extend(json.dumps({**row, "device": d}) for d in range(gpus))
    path.write_text("\n".join(lines) + "\n")
    return path


def campaign_env(campaign: Campaign, folder: Path) -> dict[str, str]:
    """The environment of a campaign's lem processes: NVML replayed always; the sleep
    engine with its one-time load delay unless the campaign uses the configured engine."""
    trace = folder / f"h100-x{campaign.gpus}.jsonl"
    if not trace.exists():
        write_trace(trace, campaign.gpus)
    env = {k: v for k, v in os.environ.items() if k not in SEAMS.values()}
    env[SEAMS["nvml"]] = str(trace)
    if campaign.engine == "sleep":
        env[SEAMS["engine"]] = SLEEP_ENGINE
        delays = ",".join(f"{u}={LOAD_DELAY_S}" for u in GPU_UUIDS[: campaign.gpus])
        env[SEAMS["load_delay"]] = delays
    return env


# ---- lem, through its CLI -------------------------------------------------------------


def lem_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lem.coordinator", *args]


def lem(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = LEM_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lem_command(*args), capture_output=True, text=True, timeout=timeout_s,
        env=dict(env) if env is not None else None, cwd=ROOT,
    )  # fmt: skip


class LemFailed(AssertionError):
    pass


def lem_ok(*args: str, env: Mapping[str, str] | None = None) -> str:
    """lem's stdout; ``LemFailed`` with its stderr on a non-zero exit."""
    done = lem(*args, env=env)
    if done.returncode != 0:
        raise LemFailed(f"lem {' '.join(args)}: exit {done.returncode}\n{done.stderr[-4000:]}")
    return done.stdout


def export(store: Path, level: str) -> list[dict[str, Any]]:
    """``lem results export --format json --level LEVEL`` of every campaign in ``store``."""
    rows: list[dict[str, Any]] = json.loads(
        lem_ok("results", "export", "--store", str(store), "--format", "json", "--level", level)
    )
    return rows


def run_campaign(campaign: Campaign, folder: Path) -> Path:
    """Run ``campaign`` into ``folder/<id>/lem.db`` (a fresh store) and return the store."""
    store = folder / campaign_id_of(campaign) / "lem.db"
    store.parent.mkdir(parents=True)
    env = campaign_env(campaign, folder)
    if not campaign.interrupt:
        lem_ok("campaign", str(campaign.file), "--store", str(store), env=env)
        return store
    run_interrupted(campaign.file, store, env, campaign.rows)
    return store


def run_interrupted(file: Path, store: Path, env: Mapping[str, str], planned_rows: int) -> None:
    """Start the campaign, kill -9 its coordinator once a first ok result is exported
    (its workers notice and exit), check that it stopped part-way, then ``lem resume``."""
    log = store.parent / "killed-coordinator.log"
    with log.open("w") as stderr:
        coordinator = subprocess.Popen(
            lem_command("campaign", str(file), "--store", str(store)),
            stdout=subprocess.DEVNULL, stderr=stderr, env=dict(env), cwd=ROOT,
        )  # fmt: skip
    try:
        deadline_s = time.monotonic() + LEM_TIMEOUT_S
        while not _ok_rows(store):
            if coordinator.poll() is not None or time.monotonic() > deadline_s:
                raise LemFailed(f"no first result before the coordinator ended:\n{log.read_text()}")
            time.sleep(0.1)
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
    stored = export(store, "measurement")
    if len(stored) >= planned_rows:
        raise LemFailed(f"the campaign finished ({len(stored)} rows) before it was killed")
    lem_ok("resume", str(stored[0]["campaign_id"]), "--store", str(store), env=env)


def _ok_rows(store: Path) -> int:
    if not store.exists():
        return 0
    done = lem("results", "export", "--store", str(store), "--format", "json")
    if done.returncode != 0:  # not created yet
        return 0
    return sum(1 for r in json.loads(done.stdout) if r["status"] == "ok")


# ---- projection ---------------------------------------------------------------------

IDS = {"campaign_id", "experiment_id", "worker_id"}
TIMESTAMPS = {"recorded_at_unix_s", "started_at_unix_s"}
ENVIRONMENT = {
    "hostname", "python_version", "lem_version", "packages", "backend_version",
    "engine_lock", "engine_lock_sha256", "engine_lock_matches", "schema_version",
}  # fmt: skip
DROPPED = IDS | TIMESTAMPS | ENVIRONMENT
HOST_PAIRS = {  # value column → its reason column (RAPL: the host's powercap sysfs)
    "cpu_energy_j": "cpu_energy_unavailable_reason",
    "dram_energy_j": "dram_energy_unavailable_reason",
}
_LATENCY = [f"{m}_{p}_ms" for m in ("ttft", "itl", "tpot", "e2e") for p in ("p50", "p90", "p99")]
POSITIVE = {
    "duration_s", "output_tokens_per_s", "energy_j", "energy_per_output_token_j",
    "energy_per_request_j", "output_tokens_per_j", "idle_power_w", "energy_bound_j",
    "energy_counter_period_s", "avg_power_w", "carbon_g", "prefill_energy_j",
    "prefill_duration_s", "prefill_energy_per_input_token_j", *_LATENCY,
    "max_energy_relative_bound",
    *(f"{m}_{s}" for m in ("energy_per_output_token_j", "output_tokens_per_s", "avg_power_w",
                           "energy_j", "duration_s", "ttft_p50_ms", "itl_p50_ms",
                           "tpot_p50_ms", "e2e_p50_ms") for s in ("mean", "median")),
}  # fmt: skip
# Flags that sub-second windows make a coin toss: the sidecar's check of the counter
# (updating every ~0.1 s on an H100) against integrated power samples (every 0.1 s).
TIMING_FLAGS = {"counter_power_mismatch"}
ZERO_OR_POSITIVE = {
    "model_load_s", "warmup_s", "net_energy_j", "net_energy_per_output_token_j",
    "decode_energy_j", "decode_energy_per_output_token_j",
    *(f"net_energy_per_output_token_j_{s}" for s in ("mean", "median")),
}  # fmt: skip


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    return f"<{type(value).__name__}>"


def _float(column: str, value: float) -> float | str:
    if math.isnan(value) or math.isinf(value):
        return f"float {value}"
    sign = "float>0" if value > 0 else "float=0" if value == 0 else "float<0"
    if column in ZERO_OR_POSITIVE and value == 0:
        return 0.0
    if column in POSITIVE or column in ZERO_OR_POSITIVE:
        return sign
    return "float"


def _flags(value: str | None) -> str | None:
    kept = [f for f in (value or "").split(";") if f and f not in TIMING_FLAGS]
    return ";".join(kept) or None


def project_value(column: str, value: Any, row: Mapping[str, Any]) -> Any:
    """One cell of an export row as the golden set keeps it (the rule: module doc)."""
    if column in DROPPED:
        return _kind(value)
    if column in HOST_PAIRS or column in HOST_PAIRS.values():
        value_col = next(v for v, r in HOST_PAIRS.items() if column in (v, r))
        one_null = (row.get(value_col) is None) != (row.get(HOST_PAIRS[value_col]) is None)
        return "<host: value or reason>" if one_null else "<host: BOTH or NEITHER null>"
    if column == "flags":
        return _flags(value)
    if column == "batches" and row.get("workload_mode") == "server" and isinstance(value, int):
        return "int>0" if value > 0 else value  # engine steps: timing decides
    if isinstance(value, float) and not column.startswith("config."):
        return _float(column, value)
    return value


def project(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{c: project_value(c, v, row) for c, v in row.items()} for row in rows]


REUSED_REASON = "model reused: loaded by an earlier cycle on this worker"


def resumed_as_straight(
    projection: Mapping[str, list[dict[str, Any]]],
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """A resumed campaign's projection as its straight run stores it: the one cycle in
    flight when the coordinator was killed counts that attempt (attempts 2, where a
    straight run has 1). Anything else (two such cycles, 3 attempts) is left to differ.
    Returns the projection and a note per cycle so changed."""
    rows = [dict(r) for r in projection["measurement"]]
    notes: list[str] = []
    killed = [r for r in rows if r.get("attempts") == 2]
    if len(killed) == 1:
        killed[0]["attempts"] = 1
        notes.append(f"{_label(killed[0])}: attempts 2 (in flight at the kill) read as 1")
        if killed[0].get("model_reused") is False and killed[0].get("cycle", 0) > 0:
            # the resume's fresh worker loaded the model again for it, where the straight
            # run's worker reused it: the load figures are of that reload, not of a cycle
            killed[0].update(
                model_reused=True, model_load_s=0.0, load_energy_j=None,
                load_energy_unavailable_reason=REUSED_REASON,
            )  # fmt: skip
            notes.append(f"{_label(killed[0])}: reloaded by the resume's worker, read as reused")
    return {**projection, "measurement": rows}, notes


def project_store(store: Path) -> dict[str, list[dict[str, Any]]]:
    return {level: project(export(store, level)) for level in ("measurement", "experiment")}


# ---- comparison -----------------------------------------------------------------------


def _label(row: Mapping[str, Any]) -> str:
    name = row.get("experiment_name") or f"#{row.get('experiment_position')}"
    cycle = f" cycle {row['cycle']}" if "cycle" in row else ""
    return f"{name}{cycle}"


def _cell(want: Mapping[str, Any], got: Mapping[str, Any], column: str) -> str | None:
    """How one cell differs, or None."""
    if column not in got:
        return "column gone"
    if column not in want:
        return f"new column ({got[column]!r})"
    if want[column] != got[column]:
        return f"expected {want[column]!r}, got {got[column]!r}"
    return None


def differences(
    expected: Mapping[str, Sequence[Mapping[str, Any]]],
    actual: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[str]:
    """Readable differences, per level and column (rows that differ alike on one line):
    empty when equal."""
    lines: list[str] = []
    for level in sorted(set(expected) | set(actual)):
        want, got = list(expected.get(level, [])), list(actual.get(level, []))
        if len(want) != len(got):
            lines.append(
                f"[{level}] {len(got)} row(s), expected {len(want)}: "
                f"got {[_label(r) for r in got]}, expected {[_label(r) for r in want]}"
            )
        pairs = list(zip(want, got, strict=False))
        # column → how it differs → the rows that differ so
        by_column: dict[str, dict[str, list[str]]] = {}
        for i, (w, g) in enumerate(pairs):
            for column in [*w, *(c for c in g if c not in w)]:
                if (how := _cell(w, g, column)) is not None:
                    by_column.setdefault(column, {}).setdefault(how, []).append(
                        f"{i} ({_label(w)})"
                    )
            if list(w) != list(g) and set(w) == set(g):
                by_column.setdefault("(column order)", {}).setdefault("changed", []).append(
                    f"{i} ({_label(w)})"
                )
        for column, hows in by_column.items():
            lines.append(f"[{level}] {column}:")
            for how, rows in hows.items():
                if len(rows) == len(pairs) > 1:
                    where = f"all {len(rows)} rows"
                else:
                    where = ("rows " if len(rows) > 1 else "row ") + ", ".join(rows)
                lines.append(f"    {where}: {how}")
    return lines


def load_expected(path: Path) -> dict[str, list[dict[str, Any]]]:
    loaded: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    return loaded


def dump(projection: Mapping[str, Any]) -> str:
    return json.dumps(projection, indent=1, ensure_ascii=False) + "\n"
