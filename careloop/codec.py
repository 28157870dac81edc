"""One serialisation for the whole wire contract: compact UTF-8 JSON, encoded and validated by pydantic-core.

JSON because every peer (bracelet firmware, the web console, operators with `mosquitto_sub`) can read it, and
pydantic-core parses and validates it in one pass in Rust (about a microsecond for a vitals reading; see
`bench/codec.py`). A rejected payload raises `PayloadError` with a stable `reason` code (for counting and
dead-lettering) and a `detail` naming every offending field.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError

from careloop.messages import Message

M = TypeVar("M", bound=Message)

#: How far ahead of the receiver's clock a timestamp may be (device clock skew).
DEFAULT_MAX_FUTURE_S = 300.0
#: How far behind the receiver's clock a timestamp may be: an edge drains a 24 h outage, with room to spare.
DEFAULT_MAX_AGE_S = 7 * 86_400.0
#: Default payload limit; `careloop.contract` sets one per topic.
DEFAULT_MAX_BYTES = 64 * 1024


class RejectReason(StrEnum):
    """Why a message was rejected; stable codes used as metric labels and in dead letters."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_TOPIC = "unknown_topic"
    NOT_ACCEPTED_HERE = "not_accepted_here"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    TOO_SHORT = "too_short"
    INVALID_VALUE = "invalid_value"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    CLOCK_NOT_SET = "clock_not_set"
    UNKNOWN_DEVICE = "unknown_device"


class PayloadError(ValueError):
    """A payload that does not satisfy the wire contract."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


_REASON_BY_ERROR_TYPE: dict[str, RejectReason] = {
    "missing": RejectReason.MISSING_FIELD,
    "extra_forbidden": RejectReason.UNKNOWN_FIELD,
    "finite_number": RejectReason.NOT_FINITE,
    "greater_than": RejectReason.OUT_OF_RANGE,
    "greater_than_equal": RejectReason.OUT_OF_RANGE,
    "less_than": RejectReason.OUT_OF_RANGE,
    "less_than_equal": RejectReason.OUT_OF_RANGE,
    "too_long": RejectReason.TOO_LONG,
    "string_too_long": RejectReason.TOO_LONG,
    "too_short": RejectReason.TOO_SHORT,
    "string_too_short": RejectReason.TOO_SHORT,
    "timestamp_in_future": RejectReason.TIMESTAMP_IN_FUTURE,
    "timestamp_too_old": RejectReason.TIMESTAMP_TOO_OLD,
    "timestamp_out_of_range": RejectReason.CLOCK_NOT_SET,
    "json_invalid": RejectReason.BAD_JSON,
}


def _reason_for(error: Any) -> RejectReason:
    kind: str = error["type"]
    loc: tuple[Any, ...] = error["loc"]
    value = error.get("input")
    if loc == ("v",) and kind != "missing":
        return RejectReason.UNSUPPORTED_VERSION
    if kind == "model_type" and loc == ():
        return RejectReason.NOT_OBJECT
    if isinstance(value, float) and not math.isfinite(value):  # NaN given for an integer, say
        return RejectReason.NOT_FINITE
    if kind == "missing" and loc and isinstance(loc[-1], int):  # [x, y] where [x, y, z] is expected
        return RejectReason.TOO_SHORT
    if kind == "literal_error":
        return RejectReason.INVALID_VALUE if isinstance(value, str) else RejectReason.WRONG_TYPE
    reason = _REASON_BY_ERROR_TYPE.get(kind)
    if reason is not None:
        return reason
    if kind.endswith("_type") or kind in ("int_from_float", "is_instance_of"):
        return RejectReason.WRONG_TYPE
    return RejectReason.INVALID_VALUE


def _is_consequence(error: Any) -> bool:
    """pydantic adds "should have at least 1 item after validation, not 0" when every item failed; that is noise."""
    ctx = error.get("ctx") or {}
    return bool(error["type"] == "too_short" and ctx.get("actual_length") == 0 and error.get("input"))


def describe(exc: ValidationError, limit: int = 5) -> str:
    """`field.path: message` for each error (at most `limit`), joined by '; '."""
    parts = []
    errors = [e for e in exc.errors(include_url=False) if not _is_consequence(e)]
    for error in errors[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def encode(message: Message) -> bytes:
    """Serialise a message to compact JSON bytes (fields left at None are omitted)."""
    return type(message).__pydantic_serializer__.to_json(message, exclude_none=True)


def decode(
    model: type[M],
    payload: bytes,
    *,
    now: float,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> M:
    """Parse and validate `payload` as `model`, judging timestamps against the receiver's clock `now`."""
    size = len(payload)
    if size == 0:
        raise PayloadError(RejectReason.EMPTY, "empty payload")
    if size > max_bytes:
        raise PayloadError(RejectReason.TOO_LARGE, f"payload is {size} bytes, the limit is {max_bytes}")
    context = {"now": now, "max_future_s": max_future_s, "max_age_s": max_age_s}
    try:
        return model.model_validate_json(payload, context=context)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        reason = _reason_for(first)
        if reason is RejectReason.BAD_JSON:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as ude:
                raise PayloadError(
                    RejectReason.NOT_UTF8,
                    f"payload is not UTF-8 (byte {ude.start}: {payload[ude.start]:#04x})",
                ) from None
        raise PayloadError(reason, f"{model.__name__}: {describe(exc)}") from None
