"""One row of per-experiment aggregates per experiment, as the report's tables and plots use
them, and the Pareto front over such rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lem.coordinator.results.table import experiment_rows, measurement_rows
from lem.coordinator.results.view import HIGH_CV


@dataclass(frozen=True)
class ExperimentRow:
    """Aggregates over one experiment's ok cycles. J/token figures are per output token:
    ``mean_*`` with ``ci95_*`` (half-width, Student's t over cycles; None with fewer than
    two); throughput, power and latency are medians over cycles. None: not measured (the
    reasons are in ``energy_unavailable_reasons``) or no ok cycle."""

    experiment_id: str
    position: int
    name: str | None
    cycles_ok: int
    cycles_failed: int
    mean_energy_per_output_token_j: float | None
    ci95_energy_per_output_token_j: float | None
    cv_energy_per_output_token: float | None
    mean_net_energy_per_output_token_j: float | None
    ci95_net_energy_per_output_token_j: float | None
    median_output_tokens_per_s: float | None
    median_avg_power_w: float | None
    median_ttft_p50_ms: float | None
    median_itl_p50_ms: float | None
    max_energy_relative_bound: float | None
    flags: list[str] = field(default_factory=list)
    energy_unavailable_reasons: list[str] = field(default_factory=list)
    net_energy_unavailable_reasons: list[str] = field(default_factory=list)
    failure_reasons: list[str] = field(default_factory=list)

    @property
    def high_cv(self) -> bool:
        """J/token varies between cycles by more than ``HIGH_CV`` (``lem results show``'s
        red CV)."""
        return self.cv_energy_per_output_token is not None and (
            self.cv_energy_per_output_token > HIGH_CV
        )

    @property
    def all_flags(self) -> list[str]:
        """The cycles' flags plus ``high_cv`` when it applies."""
        return [*self.flags, "high_cv"] if self.high_cv else list(self.flags)


def pareto_front(
    rows: Sequence[ExperimentRow],
    x: Callable[[ExperimentRow], float | None],
    y: Callable[[ExperimentRow], float | None],
    maximise_x: bool,
) -> list[ExperimentRow]:
    """Rows no other row beats on both ``x`` and ``y`` (``y`` is always minimised, ``x``
    maximised or minimised), sorted by ``x``; rows lacking either value are left out."""
    points = [(r, xv, yv) for r in rows if (xv := x(r)) is not None and (yv := y(r)) is not None]
    sign = 1.0 if maximise_x else -1.0

    def dominated(xa: float, ya: float) -> bool:
        return any(
            sign * xb >= sign * xa and yb <= ya and (sign * xb > sign * xa or yb < ya)
            for _, xb, yb in points
        )

    front = [(r, xv) for r, xv, yv in points if not dominated(xv, yv)]
    return [r for r, _ in sorted(front, key=lambda p: p[1])]


def _half_width(row: Mapping[str, Any], metric: str) -> float | None:
    low, high = row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    return None if low is None or high is None else (high - low) / 2


def _split(joined: str | None) -> list[str]:
    return joined.split(";") if joined else []


def experiment_table(store_path: str | Path, campaign_id: str) -> list[ExperimentRow]:
    """The campaign's experiments in plan order, from ``results_table``'s experiment rows
    (and its measurement rows for the reasons a figure is missing). ``StoreError`` for a
    missing store or an unknown campaign."""
    reasons: dict[tuple[str, str], set[str]] = {}
    for m in measurement_rows(store_path, [campaign_id]):
        for column in ("energy_unavailable_reason", "net_energy_unavailable_reason"):
            if m["status"] == "ok" and m[column]:
                reasons.setdefault((m["experiment_id"], column), set()).add(m[column])
    return [
        ExperimentRow(
            experiment_id=e["experiment_id"],
            position=e["experiment_position"],
            name=e["experiment_name"],
            cycles_ok=e["cycles_ok"],
            cycles_failed=e["cycles_failed"],
            mean_energy_per_output_token_j=e["energy_per_output_token_j_mean"],
            ci95_energy_per_output_token_j=_half_width(e, "energy_per_output_token_j"),
            cv_energy_per_output_token=e["energy_per_output_token_cv"],
            mean_net_energy_per_output_token_j=e["net_energy_per_output_token_j_mean"],
            ci95_net_energy_per_output_token_j=_half_width(e, "net_energy_per_output_token_j"),
            median_output_tokens_per_s=e["output_tokens_per_s_median"],
            median_avg_power_w=e["avg_power_w_median"],
            median_ttft_p50_ms=e["ttft_p50_ms_median"],
            median_itl_p50_ms=e["itl_p50_ms_median"],
            max_energy_relative_bound=e["max_energy_relative_bound"],
            flags=_split(e["flags"]),
            energy_unavailable_reasons=sorted(
                reasons.get((e["experiment_id"], "energy_unavailable_reason"), ())
            ),
            net_energy_unavailable_reasons=sorted(
                reasons.get((e["experiment_id"], "net_energy_unavailable_reason"), ())
            ),
            failure_reasons=_split(e["failure_reasons"]),
        )
        for e in experiment_rows(store_path, [campaign_id])
    ]
