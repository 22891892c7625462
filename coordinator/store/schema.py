"""Schema of lem's results store: the SQLite DDL and the records its queries return.

Every column carries its unit in its name. A quantity that was not measured is NULL
(with a ``*_unavailable_reason`` beside it where the worker gave one) — never 0.
Bump ``SCHEMA_VERSION`` and add an entry to ``MIGRATIONS`` for any change.

``measurements.payload_json`` is the stored ``Measurement`` as JSON (its per-request table
left out, see requests.py). Up to schema version 4 it was flat, every field at the top;
from version 5 each sub-record is nested under its name (``work``, ``energy``, …). The
upgrade to 5 rewrites nothing: a payload keeps the form it was written in (its
``store_schema_version`` says which), and ``lem.protocol.result_payload`` reads both
(``decode_measurement`` for a ``Measurement``, ``flat_payload`` for the flat view tables
use). An older lem refuses a version-5 file, whose nested payloads it would misread.

Version 6 adds ``campaigns.error``: the unexpected error (``Type: message``, one line, at most
``CAMPAIGN_ERROR_MAX_CHARS``) that stopped a campaign, which is then ``failed`` and
resumable; NULL otherwise (reopening the campaign or finishing it any other way clears it).
"""

from __future__ import annotations

import msgspec

from lem.protocol.errors import BadInput
from lem.protocol.results import Measurement


class StoreError(BadInput):
    """The results store cannot do what was asked (unknown id, bad file, newer schema)."""


SCHEMA_VERSION = 6

CAMPAIGN_STATUSES = ("running", "finished", "failed", "interrupted")
CAMPAIGN_ERROR_MAX_CHARS = 300  # ``campaigns.error``: longer texts are cut, ending in …
MEASUREMENT_STATUSES = ("ok", "failed")
# What one planned (campaign, experiment position, cycle) is doing, in ``cycle_states``.
CYCLE_STATES = ("running", "ok", "failed", "interrupted")

# One row per planned (campaign, position, cycle) once it is first dispatched: its state
# and how many attempts it has had in all (across resumes). Only an ok row in
# ``measurements`` makes a cycle done; a state alone (e.g. ``running`` left by a killed
# coordinator) never does.
CYCLE_STATES_DDL = """
    CREATE TABLE cycle_states (
        campaign_id TEXT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        cycle INTEGER NOT NULL,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        state TEXT NOT NULL CHECK (state IN ('running', 'ok', 'failed', 'interrupted')),
        attempts INTEGER NOT NULL CHECK (attempts >= 0),
        last_reason TEXT,
        updated_at_unix_s REAL NOT NULL,
        PRIMARY KEY (campaign_id, position, cycle)
    )
"""

# One row per request of an ok measurement (``RequestRecord``). Durations in ms; the
# inter-token latencies as float32 little-endian (4 bytes each, output_tokens - 1 of them).
REQUEST_LATENCIES_DDL = """
    CREATE TABLE request_latencies (
        measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
        request_index INTEGER NOT NULL,
        pass_index INTEGER NOT NULL,
        batch_index INTEGER,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL CHECK (output_tokens >= 1),
        scheduled_ms REAL,
        start_ms REAL NOT NULL,
        queue_ms REAL,
        ttft_ms REAL NOT NULL,
        e2e_ms REAL NOT NULL,
        tpot_ms REAL,
        itl_ms_f32le BLOB NOT NULL CHECK (length(itl_ms_f32le) = 4 * (output_tokens - 1)),
        PRIMARY KEY (measurement_id, request_index)
    )
"""

DDL: tuple[str, ...] = (
    """
    CREATE TABLE schema_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        schema_version INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source_path TEXT,
        source_hash TEXT,
        source_text TEXT,
        coordinator_host TEXT,
        coordinator_pid INTEGER,
        created_at_unix_s REAL NOT NULL,
        finished_at_unix_s REAL,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
        experiment_count INTEGER NOT NULL CHECK (experiment_count >= 0),
        cycles INTEGER NOT NULL CHECK (cycles >= 1),
        error TEXT
    )
    """,
    """
    CREATE TABLE experiments (
        id TEXT PRIMARY KEY,
        campaign_id TEXT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT,
        config_json TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        load_key TEXT NOT NULL,
        provenance_json TEXT,
        UNIQUE (campaign_id, position)
    )
    """,
    "CREATE INDEX experiments_campaign ON experiments(campaign_id)",
    """
    CREATE TABLE environments (
        id INTEGER PRIMARY KEY,
        env_hash TEXT NOT NULL UNIQUE,
        hostname TEXT NOT NULL,
        backend TEXT NOT NULL,
        backend_version TEXT,
        python_version TEXT NOT NULL,
        lem_version TEXT NOT NULL,
        driver_version TEXT,
        cuda_version TEXT,
        gpu_names TEXT NOT NULL,
        gpu_uuids TEXT NOT NULL,
        power_limits_w TEXT NOT NULL,
        payload_json TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE measurements (
        id INTEGER PRIMARY KEY,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        cycle INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
        failure_reason TEXT,
        recorded_at_unix_s REAL NOT NULL,
        worker_id TEXT,
        attempts INTEGER,
        started_at_unix_s REAL,
        duration_s REAL,
        num_prompts INTEGER,
        batches INTEGER,
        warmup_batches INTEGER,
        input_tokens INTEGER,
        output_tokens INTEGER,
        output_tokens_per_s REAL,
        energy_j REAL,
        energy_unavailable_reason TEXT,
        energy_per_output_token_j REAL,
        avg_power_w REAL,
        energy_counter_period_s REAL,
        energy_bound_j REAL,
        flags_json TEXT,
        repetitions INTEGER,
        min_window_s REAL,
        net_energy_j REAL,
        net_energy_per_output_token_j REAL,
        net_energy_unavailable_reason TEXT,
        peak_gpu_memory_load_mib REAL,
        peak_gpu_memory_inference_mib REAL,
        gpu_memory_unavailable_reason TEXT,
        model_load_s REAL,
        model_reused INTEGER,
        device TEXT,
        workload_mode TEXT,
        ttft_p50_ms REAL,
        ttft_p99_ms REAL,
        itl_p50_ms REAL,
        itl_p99_ms REAL,
        goodput_share REAL,
        environment_id INTEGER REFERENCES environments(id),
        payload_json TEXT,
        UNIQUE (experiment_id, cycle),
        CHECK ((status = 'ok') = (payload_json IS NOT NULL)),
        CHECK (status = 'ok' OR failure_reason IS NOT NULL)
    )
    """,
    """
    CREATE TABLE gpu_energy (
        measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
        gpu_uuid TEXT NOT NULL,
        energy_j REAL,
        method TEXT NOT NULL,
        unavailable_reason TEXT,
        idle_power_w REAL,
        net_energy_j REAL,
        PRIMARY KEY (measurement_id, gpu_uuid)
    )
    """,
    REQUEST_LATENCIES_DDL,
    CYCLE_STATES_DDL,
)

# Measurement fields (flat names, ``result_payload.flat_fields``) stored in same-named
# columns of ``measurements``.
MEASUREMENT_FIELD_COLUMNS = (
    "experiment_id", "cycle", "worker_id", "started_at_unix_s", "duration_s", "num_prompts",
    "batches", "warmup_batches", "input_tokens", "output_tokens", "output_tokens_per_s",
    "energy_j", "energy_unavailable_reason", "energy_per_output_token_j", "avg_power_w",
    "energy_counter_period_s", "energy_bound_j", "repetitions", "min_window_s", "net_energy_j",
    "net_energy_per_output_token_j", "net_energy_unavailable_reason",
    "peak_gpu_memory_load_mib",
    "peak_gpu_memory_inference_mib", "gpu_memory_unavailable_reason", "model_load_s",
    "model_reused", "device",
)  # fmt: skip

# Environment fields stored in same-named columns of ``environments``.
ENVIRONMENT_FIELD_COLUMNS = (
    "hostname", "backend", "backend_version", "python_version", "lem_version",
    "driver_version", "cuda_version",
)  # fmt: skip

# The columns of ``campaigns``, in ``CampaignSummary`` field names.
CAMPAIGN_COLUMNS = (
    "id, name, source_path, source_hash, created_at_unix_s, finished_at_unix_s, status,"
    " experiment_count, cycles, error"
)

EXPERIMENT_COLUMNS = "id, position, name, config_json, config_hash, load_key"

# What the summaries aggregate: one row per stored cycle.
_STATS_COLUMNS = """
    m.status, m.failure_reason, m.output_tokens_per_s, m.energy_per_output_token_j,
    m.energy_unavailable_reason, m.avg_power_w, m.energy_j, m.energy_bound_j,
    m.net_energy_per_output_token_j, m.ttft_p50_ms, m.ttft_p99_ms, m.itl_p50_ms,
    m.itl_p99_ms, m.goodput_share, m.flags_json, e.campaign_id, e.id AS experiment_id"""
_STATS_FROM = " FROM measurements m JOIN experiments e ON e.id = m.experiment_id"
MEASUREMENT_STATS_QUERY = f"SELECT {_STATS_COLUMNS}, NULL AS resolved_dtype{_STATS_FROM}"
# ... with the dtype each cycle ran in, read from its payload (null: a payload without it):
# only a campaign's detail shows it, so listing every campaign parses no payload.
EXPERIMENT_STATS_QUERY = (
    f"SELECT {_STATS_COLUMNS},"
    " json_extract(m.payload_json, '$.preparation.resolved_dtype') AS resolved_dtype"
    f"{_STATS_FROM}"
)

# MIGRATIONS[v] upgrades a database at schema version v to v + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (  # the energy counter's update period, the quantisation bound and flags
        "ALTER TABLE measurements ADD COLUMN energy_counter_period_s REAL",
        "ALTER TABLE measurements ADD COLUMN energy_bound_j REAL",
        "ALTER TABLE measurements ADD COLUMN flags_json TEXT",
        "ALTER TABLE measurements ADD COLUMN repetitions INTEGER",
        "ALTER TABLE measurements ADD COLUMN min_window_s REAL",
        "ALTER TABLE measurements ADD COLUMN net_energy_j REAL",
        "ALTER TABLE measurements ADD COLUMN net_energy_per_output_token_j REAL",
        "ALTER TABLE measurements ADD COLUMN net_energy_unavailable_reason TEXT",
        "ALTER TABLE gpu_energy ADD COLUMN idle_power_w REAL",
        "ALTER TABLE gpu_energy ADD COLUMN net_energy_j REAL",
    ),
    2: (  # latency: the workload mode, key percentiles, goodput and the per-request table
        "ALTER TABLE measurements ADD COLUMN workload_mode TEXT",
        "ALTER TABLE measurements ADD COLUMN ttft_p50_ms REAL",
        "ALTER TABLE measurements ADD COLUMN ttft_p99_ms REAL",
        "ALTER TABLE measurements ADD COLUMN itl_p50_ms REAL",
        "ALTER TABLE measurements ADD COLUMN itl_p99_ms REAL",
        "ALTER TABLE measurements ADD COLUMN goodput_share REAL",
        REQUEST_LATENCIES_DDL,
    ),
    3: (  # resume: the campaign file's text, attempts per cycle, each cycle's state; each
        # experiment's field provenance
        "ALTER TABLE campaigns ADD COLUMN source_text TEXT",
        "ALTER TABLE campaigns ADD COLUMN coordinator_host TEXT",
        "ALTER TABLE campaigns ADD COLUMN coordinator_pid INTEGER",
        "ALTER TABLE measurements ADD COLUMN attempts INTEGER",
        "ALTER TABLE experiments ADD COLUMN provenance_json TEXT",
        CYCLE_STATES_DDL,
    ),
    4: (),  # nested Measurement payloads from now on; flat ones are read as they are
    5: ("ALTER TABLE campaigns ADD COLUMN error TEXT",),  # what stopped a failed campaign
}


# ---- query results (see ``Store`` in store.py) ------------------------------------


class CycleStats(msgspec.Struct, frozen=True, kw_only=True):
    """What summaries share: statistics over ok cycles (``Aggregate.stats`` in store_aggregate.py).

    ``energy_unavailable_reasons`` lists the workers' reasons only when no ok cycle has
    energy. Energies in J per output token; ``ci95`` is a half-width (Student's t).
    """

    measurements_with_energy: int
    median_output_tokens_per_s: float | None
    median_energy_per_output_token_j: float | None
    max_energy_relative_bound: float | None = None  # worst bound / energy over ok cycles
    median_net_energy_per_output_token_j: float | None = None  # idle draw subtracted
    mean_energy_per_output_token_j: float | None = None
    ci95_energy_per_output_token_j: float | None = None  # half-width, Student's t over cycles
    std_energy_per_output_token_j: float | None = None  # sample standard deviation
    cv_energy_per_output_token: float | None = None  # std / mean, unitless (0.05 = 5%)
    flags: list[str] = []  # every flag any ok cycle carried
    energy_unavailable_reasons: list[str]
    # Latency: medians over ok cycles of each cycle's percentile (ms) and goodput share.
    median_ttft_p50_ms: float | None = None
    median_ttft_p99_ms: float | None = None
    median_itl_p50_ms: float | None = None
    median_itl_p99_ms: float | None = None
    median_goodput_share: float | None = None


class CampaignSummary(CycleStats, frozen=True, kw_only=True):
    """One campaign with its medians over ok measurements.

    ``median_energy_per_output_token_j`` is over ok measurements that have energy;
    ``measurements_with_energy`` says how many those are. When none has energy,
    ``energy_unavailable_reasons`` lists the distinct reasons the workers gave.
    """

    id: str
    name: str
    source_path: str | None
    source_hash: str | None
    created_at_unix_s: float
    finished_at_unix_s: float | None
    status: str
    experiment_count: int
    cycles: int
    error: str | None = None  # the unexpected error that stopped it (schema 6; else None)
    measurements_ok: int
    measurements_failed: int


class ExperimentSummary(CycleStats, frozen=True, kw_only=True):
    """One experiment of a campaign: key config fields and medians over ok cycles."""

    id: str
    position: int
    name: str | None
    config_json: str
    config_hash: str
    load_key: str
    model_source: str | None
    model_name: str | None
    dtype: str | None  # the config's
    resolved_dtypes: list[str] = []  # what the ok cycles ran in (the config's auto resolved)
    batch_size: int | None
    input_tokens: int | None
    output_tokens: int | None
    cycles_ok: int
    cycles_failed: int
    median_avg_power_w: float | None
    failure_reasons: list[str]
    workload_mode: str = "offline"


class CampaignDetail(msgspec.Struct, frozen=True, kw_only=True):
    campaign: CampaignSummary
    experiments: list[ExperimentSummary]


class MeasurementRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored cycle: ``measurement`` for an ok cycle, ``failure_reason`` otherwise."""

    experiment_id: str
    cycle: int
    status: str
    failure_reason: str | None
    worker_id: str | None
    recorded_at_unix_s: float
    measurement: Measurement | None
    attempts: int | None = None  # attempts this cycle took in all (None: stored before v4)
