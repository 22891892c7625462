"""Summary statistics of stored measurement rows (``Store``'s campaign and experiment
summaries): counts and medians over ok cycles, the worst quantisation bound, the 95% CI of
mean J/token, flags, and the medians of each cycle's latency percentiles (ms)."""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Sequence
from typing import Any

import msgspec

from lem.coordinator.results.stats import ci95_half_width
from lem.coordinator.store.schema import CampaignSummary, ExperimentSummary


class Aggregate:
    """Counts and value lists of one group of measurement rows."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.tok_per_s: list[float] = []
        self.j_per_tok: list[float] = []
        self.avg_w: list[float] = []
        self.energy_reasons: set[str] = set()
        self.failure_reasons: set[str] = set()
        self.relative_bounds: list[float] = []
        self.net_j_per_tok: list[float] = []
        self.flags: set[str] = set()
        self.latency: dict[str, list[float]] = {c: [] for c in _LATENCY_MEDIANS}
        self.resolved_dtypes: set[str] = set()

    def add(self, row: sqlite3.Row) -> None:
        if row["status"] != "ok":
            self.failed += 1
            self.failure_reasons.add(row["failure_reason"])
            return
        self.ok += 1
        if row["resolved_dtype"] is not None:
            self.resolved_dtypes.add(row["resolved_dtype"])
        if row["output_tokens_per_s"] is not None:
            self.tok_per_s.append(row["output_tokens_per_s"])
        if row["avg_power_w"] is not None:
            self.avg_w.append(row["avg_power_w"])
        if row["flags_json"] and row["flags_json"] != "[]":  # most rows: no flag to decode
            self.flags.update(msgspec.json.decode(row["flags_json"], type=list[str]))
        if row["net_energy_per_output_token_j"] is not None:
            self.net_j_per_tok.append(row["net_energy_per_output_token_j"])
        if row["energy_bound_j"] is not None and row["energy_j"]:
            self.relative_bounds.append(row["energy_bound_j"] / row["energy_j"])
        if row["energy_per_output_token_j"] is not None:
            self.j_per_tok.append(row["energy_per_output_token_j"])
        elif row["energy_unavailable_reason"]:
            self.energy_reasons.add(row["energy_unavailable_reason"])
        for column, values in self.latency.items():
            if row[column] is not None:
                values.append(row[column])

    def stats(self) -> dict[str, Any]:
        """Fields shared by campaign and experiment summaries."""
        return {
            "measurements_with_energy": len(self.j_per_tok),
            "median_output_tokens_per_s": median_or_none(self.tok_per_s),
            "median_energy_per_output_token_j": median_or_none(self.j_per_tok),
            "max_energy_relative_bound": max(self.relative_bounds, default=None),
            "median_net_energy_per_output_token_j": median_or_none(self.net_j_per_tok),
            "mean_energy_per_output_token_j": statistics.fmean(self.j_per_tok)
            if self.j_per_tok
            else None,
            "ci95_energy_per_output_token_j": ci95_half_width(self.j_per_tok),
            **_spread(self.j_per_tok),
            "flags": sorted(self.flags),
            # Reasons only when no ok measurement has energy.
            "energy_unavailable_reasons": [] if self.j_per_tok else sorted(self.energy_reasons),
            **{field: median_or_none(self.latency[c]) for c, field in _LATENCY_MEDIANS.items()},
        }


# Latency columns of ``measurements`` and the CycleStats field of each one's median.
_LATENCY_MEDIANS = {
    "ttft_p50_ms": "median_ttft_p50_ms",
    "ttft_p99_ms": "median_ttft_p99_ms",
    "itl_p50_ms": "median_itl_p50_ms",
    "itl_p99_ms": "median_itl_p99_ms",
    "goodput_share": "median_goodput_share",
}


def median_or_none(values: Sequence[float]) -> float | None:
    """The median of ``values``, None when there are none."""
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Sample standard deviation (unit of ``values``) and coefficient of variation
    (std / mean, unitless; None unless the mean is positive); both None below 2 values."""
    if len(values) < 2:
        return None, None
    std, mean = statistics.stdev(values), statistics.fmean(values)
    return std, std / mean if mean > 0 else None


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    """Sample standard deviation (J/token) and coefficient of variation over cycles."""
    std_j, cv = spread(values)
    return {"std_energy_per_output_token_j": std_j, "cv_energy_per_output_token": cv}


# ---- rows to summaries (``Store.list_campaigns``, ``Store.campaign_detail``) -----


def as_dict(row: sqlite3.Row) -> dict[str, Any]:
    return dict(zip(row.keys(), row, strict=True))


def summary_of(row: sqlite3.Row, agg: Aggregate) -> CampaignSummary:
    return CampaignSummary(
        **as_dict(row),
        measurements_ok=agg.ok,
        measurements_failed=agg.failed,
        **agg.stats(),
    )


def experiment_of(row: sqlite3.Row, agg: Aggregate) -> ExperimentSummary:
    # Read key fields from plain JSON so rows written by another lem version still show.
    cfg: dict[str, Any] = msgspec.json.decode(row["config_json"])
    model = cfg.get("model") or {}
    return ExperimentSummary(
        **as_dict(row),
        model_source=model.get("source"),
        model_name=model.get("name") or model.get("path"),
        dtype=model.get("dtype"),
        resolved_dtypes=sorted(agg.resolved_dtypes),
        batch_size=cfg.get("batch_size"),
        input_tokens=cfg.get("input_tokens"),
        output_tokens=cfg.get("output_tokens"),
        workload_mode=(cfg.get("workload") or {}).get("mode") or "offline",
        cycles_ok=agg.ok,
        cycles_failed=agg.failed,
        median_avg_power_w=median_or_none(agg.avg_w),
        **agg.stats(),
        failure_reasons=sorted(agg.failure_reasons),
    )
