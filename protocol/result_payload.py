"""A ``Measurement`` as JSON: the nested payload of today, the flat one of old, and the
flat view that tables are made of.

Stores of schema ≤ 4 and journals of protocol ≤ 2 hold flat payloads: one object with
every field at the top (``environment`` nested). Today's payload nests each sub-record
under its name (``work``, ``energy``, …). A sub-record's fields kept their flat names and
no two share a name, so the two forms map one-to-one: ``nested_payload`` and
``flat_payload`` are each other's inverse. Reading never rewrites what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from lem.protocol.results import SUB_RECORDS, Measurement

_decoder = msgspec.json.Decoder(Measurement)

# Every flat field name: the sub-record (or None: Measurement itself) that holds it.
FLAT_FIELDS: dict[str, str | None] = {
    **{name: None for name in Measurement.__struct_fields__ if name not in SUB_RECORDS},
    **{name: record for record, cls in SUB_RECORDS.items() for name in cls.__struct_fields__},
}


def is_flat(payload: Mapping[str, Any]) -> bool:
    """Whether a decoded payload is in the flat form (no sub-record object in it)."""
    return not any(isinstance(payload.get(record), Mapping) for record in SUB_RECORDS)


def flat_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded payload, either form, as one flat object (a flat one as it is)."""
    if is_flat(payload):
        return dict(payload)
    flat = {k: v for k, v in payload.items() if k not in SUB_RECORDS}
    for record in SUB_RECORDS:
        flat.update(payload.get(record) or {})
    return flat


def nested_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded payload, either form, nested as a ``Measurement`` is (a nested one as it
    is). Keys lem does not know stay at the top, where decoding ignores them."""
    if not is_flat(payload):
        return dict(payload)
    nested: dict[str, Any] = {record: {} for record in SUB_RECORDS}
    for key, value in payload.items():
        record = FLAT_FIELDS.get(key)
        if record is None:
            nested[key] = value
        else:
            nested[record][key] = value
    return nested


def flat_fields(m: Measurement) -> dict[str, Any]:
    """Every field of ``m`` by its flat name, values as they are (not encoded)."""
    fields = {name: getattr(m, name) for name in Measurement.__struct_fields__}
    for record in SUB_RECORDS:
        part = fields.pop(record)
        fields.update({name: getattr(part, name) for name in part.__struct_fields__})
    return fields


def from_flat_fields(fields: Mapping[str, Any]) -> Measurement:
    """The Measurement of flat-named ``fields`` (values as they are; unknown names refused)."""
    unknown = set(fields) - set(FLAT_FIELDS)
    if unknown:
        raise TypeError(f"not fields of a Measurement: {sorted(unknown)}")
    parts: dict[str, dict[str, Any]] = {record: {} for record in SUB_RECORDS}
    top: dict[str, Any] = {}
    for name, value in fields.items():
        record = FLAT_FIELDS[name]
        (top if record is None else parts[record])[name] = value
    for record, cls in SUB_RECORDS.items():
        top[record] = cls(**parts[record])
    return Measurement(**top)


def replace_fields(m: Measurement, **changes: Any) -> Measurement:
    """``m`` with the fields named (by their flat names) changed."""
    return from_flat_fields({**flat_fields(m), **changes})


def decode_measurement(raw: bytes | str) -> Measurement:
    """A Measurement from its JSON payload, nested or flat (a store of schema ≤ 4, a
    journal of protocol ≤ 2). A flat one is decoded exactly as lem decoded it then: its
    fields are only moved into their sub-records. Raises ``msgspec.DecodeError`` (of which
    ``ValidationError`` is one) for anything else."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError:
        payload = msgspec.json.decode(raw)
        if not isinstance(payload, dict) or not is_flat(payload):
            raise
    return _decoder.decode(msgspec.json.encode(nested_payload(payload)))
