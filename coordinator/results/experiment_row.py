"""One experiment's own columns (counts, statistics over its ok cycles, distinct values)
from its measurement rows' ``MEASURED_COLUMNS`` values.

The statistics are those of ``lem results show``: mean (``statistics.fmean``), median
(``statistics.median``), sample standard deviation (``statistics.stdev``; ``sample_stdev``
gives the same float faster), Student's t 95% CI of the mean (``ci95_half_width``) and the
CV (std / mean, None unless the mean is positive), each computed exactly as those functions
compute it. Every value already has its column's kind (no coercion needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lem.coordinator.results.columns import EXPERIMENT_COLUMNS, SHARED_COLUMNS, STAT_METRICS
from lem.coordinator.results.generic_row import distinct
from lem.coordinator.results.stats import sample_stdev, stdev_of_two, t95
from lem.coordinator.results.typed_row import MEASURED_COLUMNS

Values = tuple[Any, ...]

EXPERIMENT_OWN_COLUMNS: tuple[str, ...] = tuple(
    n for n in EXPERIMENT_COLUMNS if n not in SHARED_COLUMNS
)
_DISTINCT_COLUMNS = ("flags", "gpu_names", "gpu_uuids", "hostname", "lem_version")
# The measurement columns an experiment row is made of (all its reader decodes).
EXPERIMENT_INPUTS: tuple[str, ...] = tuple(
    n
    for n in MEASURED_COLUMNS
    if n in {"status", "failure_reason", "energy_bound_j", "energy_j", *STAT_METRICS}
    or n in _DISTINCT_COLUMNS
)
_AT = {name: i for i, name in enumerate(EXPERIMENT_INPUTS)}
_STATUS, _REASON = _AT["status"], _AT["failure_reason"]
_BOUND, _ENERGY = _AT["energy_bound_j"], _AT["energy_j"]
_METRICS = [_AT[m] for m in STAT_METRICS]
_DISTINCT = [_AT[c] for c in _DISTINCT_COLUMNS]
_NO_VALUES = (0, None, None, None, None, None, None)
_T95_1, _SQRT_2 = t95(1), math.sqrt(2)


def experiment_values(rows: Sequence[Values]) -> Values:
    """``EXPERIMENT_OWN_COLUMNS`` values of an experiment whose measurement rows have these
    ``EXPERIMENT_INPUTS`` values."""
    ok = [r for r in rows if r[_STATUS] == "ok"]
    failed = [r[_REASON] for r in rows if r[_STATUS] != "ok"]
    bounds = [r[_BOUND] / r[_ENERGY] for r in ok if r[_BOUND] is not None and r[_ENERGY]]
    values: list[Any] = [len(ok), len(failed), distinct(failed)]
    for i in _METRICS:
        values.extend(_statistics([v for r in ok if (v := r[i]) is not None]))
    values.append(max(bounds, default=None))
    for i in _DISTINCT:
        found = {r[i] for r in ok}
        if len(found) == 1:  # the same in every ok cycle: made once
            one = found.pop()
            text = _distinct_parts.get(one, _UNSEEN)
            if text is _UNSEEN:
                text = _distinct_parts[one] = distinct(one.split(";")) if one else None
                if len(_distinct_parts) > _DISTINCT_KEPT:
                    _distinct_parts.clear()
            values.append(text)
        else:
            values.append(distinct(part for r in ok if r[i] for part in r[i].split(";")))
    return tuple(values)


_UNSEEN = object()
_distinct_parts: dict[str | None, Any] = {}
_DISTINCT_KEPT = 4096


def _statistics(values: list[float]) -> Values:
    """n, mean, median, std, CI95 low and high, CV of one metric's values."""
    n = len(values)
    if n == 2:  # the common case, in short (the same floats)
        a, b = values
        total = a + b  # = math.fsum([a, b]): one correctly rounded addition
        if type(a) is float and type(b) is float and -math.inf < total < math.inf:
            mean = total / 2  # also the median: (min + max) / 2
            std = stdev_of_two(a, b)
            half_width = _T95_1 * std / _SQRT_2
            cv = std / mean if mean > 0 else None
            return (2, mean, mean, std, mean - half_width, mean + half_width, cv)
    if not n:
        return _NO_VALUES
    mean = math.fsum(values) / n  # statistics.fmean
    ordered = sorted(values)  # statistics.median
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    if n < 2:
        return (n, mean, median, None, None, None, None)
    std = sample_stdev(values)
    half_width = t95(n - 1) * std / math.sqrt(n)  # ci95_half_width
    cv = std / mean if mean > 0 else None  # store.aggregate.spread
    return (n, mean, median, std, mean - half_width, mean + half_width, cv)


assert EXPERIMENT_OWN_COLUMNS[:3] == ("cycles_ok", "cycles_failed", "failure_reasons")
assert EXPERIMENT_OWN_COLUMNS[-6:] == (
    "max_energy_relative_bound", "flags", "gpu_names", "gpu_uuids", "hostname", "lem_version",
)  # fmt: skip
assert len(EXPERIMENT_OWN_COLUMNS) == 3 + 7 * len(STAT_METRICS) + 6
