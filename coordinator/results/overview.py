"""One campaign read once, at any size (``lem results show``): every experiment's brief
figures, the axes its configs sweep, the experiments a ``--where`` picks, and the full
``ExperimentSummary`` rows of only the experiments shown.

The stored rows are read with the same query and aggregated with the same functions as
``Store.campaign_detail`` (store/aggregate.py), so a row shown here is the row the full
table shows. Per experiment, only what a summary ranks, counts and filters on is worked
out for every one (counts, median J/token and tok/s over ok cycles, flags); the rest only
for the rows printed. Configs are decoded as plain JSON (rows of another lem version read).
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from typing import Any

import msgspec

from lem.coordinator.results.columns import CONFIG_KINDS
from lem.coordinator.results.generic_row import lookup as leaf
from lem.coordinator.results.view import HIGH_CV
from lem.coordinator.store import schema
from lem.coordinator.store.aggregate import Aggregate, experiment_of, spread, summary_of
from lem.coordinator.store.reading import resolve_campaign_ids
from lem.coordinator.store.schema import CampaignDetail, ExperimentSummary
from lem.protocol.errors import BadInput

# Keys of ``--where`` besides the config leaves: experiment columns, with what they hold.
COLUMN_KEYS = {
    "status": "ok (every stored cycle ok), failed (a failed cycle) or pending (none stored)",
    "flag": "a flag any ok cycle carried (high_cv: J/token varies over cycles)",
}
NOT_AXES = frozenset({"name"})  # config leaves that vary by design: not a swept axis


@dataclass(frozen=True)
class Brief:
    """One experiment's figures that a summary counts, ranks and filters on."""

    position: int
    experiment_id: str
    config: Mapping[str, Any]
    cycles_ok: int
    cycles_failed: int
    median_energy_per_output_token_j: float | None
    median_output_tokens_per_s: float | None
    with_energy: int  # ok cycles with a J/token figure
    null_energy_reasons: tuple[str, ...]  # one per ok cycle without energy
    failure_reasons: tuple[str, ...]  # one per failed cycle
    flags: frozenset[str]  # of its ok cycles, high_cv included

    @property
    def status(self) -> str:
        if self.cycles_failed:
            return "failed"
        return "ok" if self.cycles_ok else "pending"


@dataclass(frozen=True)
class Facts:
    """A campaign's row and its cycle counts: what its header shows (``CampaignFacts``)."""

    id: str
    name: str
    status: str
    source_path: str | None
    created_at_unix_s: float
    finished_at_unix_s: float | None
    experiment_count: int
    cycles: int
    error: str | None
    measurements_ok: int
    measurements_failed: int


class CampaignRead:
    """A campaign's header facts, its experiments' briefs in run order (worked out on first
    use), and what a full row of any of them (or the campaign's ``CampaignSummary``) needs."""

    def __init__(
        self,
        campaign: sqlite3.Row,
        experiments: dict[str, sqlite3.Row],
        all_rows: list[sqlite3.Row],
        columns: Sequence[str],
    ) -> None:
        self._campaign = campaign
        self._experiments = experiments  # id → row, in run order
        self._all_rows = all_rows  # in the order Store.campaign_detail reads them
        self._at = {c: n for n, c in enumerate(columns)}  # column → index in a row
        self._rows: dict[str, list[sqlite3.Row]] = {}
        for m in all_rows:
            self._rows.setdefault(m["experiment_id"], []).append(m)
        ok = sum(1 for m in all_rows if m["status"] == "ok")
        self.facts = Facts(
            **{k: campaign[k] for k in Facts.__dataclass_fields__ if not k.startswith("measure")},
            measurements_ok=ok,
            measurements_failed=len(all_rows) - ok,
        )

    @property
    def experiment_count(self) -> int:
        """Experiments stored (the plan's count is ``facts.experiment_count``)."""
        return len(self._experiments)

    @cached_property
    def briefs(self) -> list[Brief]:
        return [_brief(e, self._rows.get(i, []), self._at) for i, e in self._experiments.items()]

    def summaries(self, briefs: Iterable[Brief]) -> list[ExperimentSummary]:
        """The full rows (``lem results show``'s table) of ``briefs``, in their order."""
        return [self._summary(b.experiment_id) for b in briefs]

    def _summary(self, experiment_id: str) -> ExperimentSummary:
        agg = Aggregate()
        for row in self._rows.get(experiment_id, ()):
            agg.add(row)
        return experiment_of(self._experiments[experiment_id], agg)

    def detail(self) -> CampaignDetail:
        """What ``Store.campaign_detail`` gives: every row, and the campaign's statistics
        over all its cycles, aggregated in the same order."""
        total = Aggregate()
        for row in self._all_rows:
            total.add(row)
        return CampaignDetail(
            campaign=summary_of(self._campaign, total),
            experiments=[self._summary(i) for i in self._experiments],
        )


def read_campaign(conn: sqlite3.Connection, campaign_id: str) -> CampaignRead:
    """Campaign ``campaign_id`` (an id or a unique prefix; ``StoreError`` otherwise)."""
    [campaign_id] = resolve_campaign_ids(conn, [campaign_id])
    query = f"SELECT {schema.CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"
    campaign = conn.execute(query, (campaign_id,)).fetchone()
    query = schema.EXPERIMENT_STATS_QUERY + " WHERE e.campaign_id = ?"  # with each dtype
    cursor = conn.execute(query, (campaign_id,))
    columns = [d[0] for d in cursor.description]
    all_rows = cursor.fetchall()
    query = f"SELECT {schema.EXPERIMENT_COLUMNS} FROM experiments"
    query += " WHERE campaign_id = ? ORDER BY position"
    experiments = {e["id"]: e for e in conn.execute(query, (campaign_id,))}
    return CampaignRead(campaign, experiments, all_rows, columns)


def _median(values: list[float]) -> float | None:
    """``statistics.median`` (the same figure), quicker for the one to three cycles usual."""
    n = len(values)
    if n == 0:
        return None
    if n == 1:
        return values[0]
    if n == 2:
        return (values[0] + values[1]) / 2
    return statistics.median(values)


def _high_cv(values: list[float]) -> bool:
    """J/token's CV over cycles above ``HIGH_CV``, as the table flags it (a float estimate,
    checked exactly near the threshold)."""
    n = len(values)
    if n < 2:
        return False
    mean = sum(values) / n
    if mean <= 0:
        return False
    if n == 2:
        cv = abs(values[0] - values[1]) / _SQRT2 / mean
    else:
        cv = math.sqrt(sum([(v - mean) * (v - mean) for v in values]) / (n - 1)) / mean
    if abs(cv - HIGH_CV) > 1e-6:
        return cv > HIGH_CV
    exact = spread(values)[1]
    return exact is not None and exact > HIGH_CV


_SQRT2 = math.sqrt(2)
_NO_REASON = "no reason stored"


def _brief(experiment: sqlite3.Row, rows: Sequence[sqlite3.Row], at: Mapping[str, int]) -> Brief:
    """``at``: the index of each column in ``rows`` (quicker than looking names up)."""
    status, why_failed, j_at, why_null, tps_at, flags_at = (
        at[c]
        for c in (
            "status",
            "failure_reason",
            "energy_per_output_token_j",
            "energy_unavailable_reason",
            "output_tokens_per_s",
            "flags_json",
        )
    )
    j_per_tok: list[float] = []
    tok_per_s: list[float] = []
    null_reasons: list[str] = []
    failure_reasons: list[str] = []
    flags: set[str] = set()
    for row in rows:
        if row[status] != "ok":
            failure_reasons.append(row[why_failed] or _NO_REASON)
            continue
        if (j := row[j_at]) is not None:
            j_per_tok.append(j)
        else:
            null_reasons.append(row[why_null] or _NO_REASON)
        if (tps := row[tps_at]) is not None:
            tok_per_s.append(tps)
        if (flags_json := row[flags_at]) and flags_json != "[]":
            flags.update(msgspec.json.decode(flags_json, type=list[str]))
    if _high_cv(j_per_tok):
        flags.add("high_cv")
    return Brief(
        position=experiment["position"],
        experiment_id=experiment["id"],
        config=msgspec.json.decode(experiment["config_json"]),
        cycles_ok=len(rows) - len(failure_reasons),
        cycles_failed=len(failure_reasons),
        median_energy_per_output_token_j=_median(j_per_tok),
        median_output_tokens_per_s=_median(tok_per_s),
        with_energy=len(j_per_tok),
        null_energy_reasons=tuple(null_reasons),
        failure_reasons=tuple(failure_reasons),
        flags=frozenset(flags),
    )


# ---- swept axes ---------------------------------------------------------------------


def _hashable(value: Any) -> Any:
    """A value as a set holds it: lists and mappings as their JSON text."""
    if isinstance(value, (list, dict)):
        return msgspec.json.encode(value, order="sorted").decode()
    return value


def _order(value: Any) -> tuple[int, Any]:
    """Sort key of axis values: null, booleans, numbers, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, str(value))


def swept_axes(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Config leaf (dotted, as ``CONFIG_KINDS`` names them) → its distinct values, sorted,
    for every leaf whose value is not the same in all ``configs`` (``name`` aside)."""
    axes: dict[str, list[Any]] = {}
    if configs:
        _vary(list(configs), "", axes)
    return axes


def _vary(nodes: list[Any], prefix: str, axes: dict[str, list[Any]]) -> None:
    """Walk only into the parts of the configs that differ: equal sub-trees are compared
    whole (in C), so 10,000 configs cost a few dict comparisons each."""
    if prefix and (prefix in CONFIG_KINDS or not all(isinstance(n, dict) for n in nodes)):
        distinct = {_hashable(n) for n in nodes}
        axes[prefix] = sorted(distinct, key=_order)
        return
    first = nodes[0]
    keys = dict.fromkeys(first)
    for node in nodes:
        if node.keys() != first.keys():
            keys.update(dict.fromkeys(node))
    for key in keys:
        dotted = f"{prefix}.{key}" if prefix else key
        if dotted in NOT_AXES:
            continue
        values = list(map(dict.get, nodes, repeat(key)))
        if values.count(values[0]) != len(values):  # == in C, whole sub-trees at once
            _vary(values, dotted, axes)


# ---- --where ------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``KEY=VALUE`` of ``--where``: ``value`` is the YAML scalar, ``text`` as typed."""

    key: str
    text: str
    value: Any

    def __str__(self) -> str:
        return f"{self.key}={self.text}"


def valid_keys() -> list[str]:
    return [*COLUMN_KEYS, *CONFIG_KINDS]


def parse_where(items: Sequence[str]) -> list[Condition]:
    """``("batch_size=8", ...)`` → conditions; ``BadInput`` (one line) for an item that is
    not KEY=VALUE, an unknown key (the line lists the valid ones) or a value that is not
    YAML."""
    from lem.coordinator.planning.safe_yaml import YamlProblem, load_yaml

    found = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"--where: expected KEY=VALUE (e.g. batch_size=8), got {item!r}")
        if key not in COLUMN_KEYS and key not in CONFIG_KINDS:
            raise BadInput(f"--where: unknown key {key!r}; valid keys: {', '.join(valid_keys())}")
        try:
            value = load_yaml(text) if text.strip() else None
        except YamlProblem as exc:
            raise BadInput(f"--where {key}: cannot read {text!r} as a YAML value: {exc}") from None
        found.append(Condition(key, text, value))
    return found


def _equal(stored: Any, wanted: Any, text: str) -> bool:
    """A stored config value and a ``--where`` value: booleans only equal booleans, text
    also matches as typed (``model.name=1.0``), numbers by value (8 = 8.0)."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(stored, str):
        return stored == text.strip() or stored == wanted
    if isinstance(stored, (list, dict)):
        return stored == wanted or _hashable(stored) == text.strip()
    return bool(stored == wanted)


def matches(brief: Brief, condition: Condition) -> bool:
    if condition.key == "status":
        return brief.status == str(condition.value)
    if condition.key == "flag":
        return str(condition.value) in brief.flags
    return _equal(leaf(brief.config, condition.key), condition.value, condition.text)


def where(briefs: Iterable[Brief], conditions: Sequence[Condition]) -> list[Brief]:
    """The briefs every condition holds for, in their order."""
    return [b for b in briefs if all(matches(b, c) for c in conditions)]


def values_of(briefs: Iterable[Brief], key: str) -> list[Any]:
    """The distinct values ``key`` (a ``--where`` key) takes among ``briefs``, sorted."""
    if key == "status":
        found: set[Any] = {b.status for b in briefs}
    elif key == "flag":
        found = {f for b in briefs for f in b.flags}
    else:
        found = {_hashable(leaf(b.config, key)) for b in briefs}
    return sorted(found, key=_order)
