"""The v1 check-in (docs/protocol.md) as one pydantic model, and the MQTT payload gate.

This module is the single definition of what a valid check-in is: the bridge
validates MQTT payloads with it and the backend emulator validates HTTP batches
with it. Error details name the field and the rule, never the value, because a
value may be personal data (the `id` field above all) and details end up in
logs and on the kiosk's `reply` topic.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

PROTOCOL_VERSION = 1
#: Largest check-in payload accepted on `kiosk/<device>/checkin`, in bytes.
MAX_PAYLOAD_BYTES = 2048
#: Seq and ts are stored as SQLite INTEGER (signed 64-bit) here and at the backend.
INT64_MAX = 2**63 - 1

DEVICE_PATTERN = r"^[a-z0-9-]{1,32}$"
VENUE_PATTERN = r"^[A-Za-z0-9._-]{1,32}$"
GATE_PATTERN = r"^[A-Za-z0-9._-]{1,16}$"
REASON_PATTERN = r"^[a-z0-9_]{1,32}$"
_DEVICE_RE = re.compile(r"[a-z0-9-]{1,32}")

ErrorCode = Literal["too_large", "not_json", "invalid", "device_mismatch"]


def _must_be_v1(value: int) -> int:
    if value != PROTOCOL_VERSION:
        raise ValueError("unsupported version")
    return value


class CheckIn(BaseModel):
    """One check-in, exactly as a kiosk publishes it (protocol v1).

    Strict: no coercion (`"17"` is not a seq, `true` is not 1, `1.0` is not an
    int) and no keys beyond the protocol's.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # Not Literal[1]: pydantic lets True and 1.0 through a Literal even in strict mode.
    v: Annotated[int, AfterValidator(_must_be_v1)]
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)]
    venue: Annotated[str, Field(pattern=VENUE_PATTERN)]
    gate: Annotated[str, Field(pattern=GATE_PATTERN)]
    seq: Annotated[int, Field(ge=1, le=INT64_MAX)]
    ts: Annotated[int, Field(ge=0, le=INT64_MAX)]
    type: Literal["hc1", "pccovid", "cccd"]
    id: Annotated[str, Field(min_length=1, max_length=64)]
    verdict: Literal["pass", "fail"]
    how: Literal["provisional", "verified", "online", "unverified", "refused"]
    fw: Annotated[str, Field(max_length=32)]
    reason: Annotated[str, Field(pattern=REASON_PATTERN)] | None = None
    clock: Literal["ntp", "estimated"] = "ntp"

    @property
    def identity(self) -> str:
        """The check-in's identity `<device>:<seq>`, the key of every deduplication."""
        return f"{self.device}:{self.seq}"

    def to_json(self) -> str:
        """Compact canonical JSON of the check-in (what the spool keeps and forwards)."""
        return self.model_dump_json(exclude_defaults=True)


# What each field must be, in words; used for error details instead of pydantic's
# messages so a detail reads like the protocol table and never quotes the input.
FIELD_RULES: dict[str, str] = {
    "v": "1",
    "device": "a device id (1-32 chars of a-z 0-9 -)",
    "venue": "1-32 chars of A-Za-z0-9-_.",
    "gate": "1-16 chars of A-Za-z0-9-_.",
    "seq": "an integer from 1 to 2^63-1",
    "ts": "an integer Unix time from 0 to 2^63-1",
    "type": "'hc1', 'pccovid' or 'cccd'",
    "id": "a string of 1-64 chars",
    "verdict": "'pass' or 'fail'",
    "how": "one of provisional, verified, online, unverified, refused",
    "reason": "1-32 chars of a-z 0-9 _",
    "clock": "'ntp' or 'estimated'",
    "fw": "a string of at most 32 chars",
}
_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,32}")


def describe_validation_error(exc: ValidationError) -> str:
    """A short, value-free description of a check-in's validation failure.

    Example: `verdict: must be 'pass' or 'fail'`. Only the first problem is
    spelled out; the count of the others is appended.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return "invalid"
    first = errors[0]
    loc = first["loc"]
    key = str(loc[0]) if loc else "payload"
    if first["type"] == "extra_forbidden":
        # An unknown key is attacker-chosen text: name it only if it looks like a key.
        shown = key if _SAFE_KEY_RE.fullmatch(key) else "<key>"
        text = f"{shown}: unexpected key"
    elif first["type"] == "missing":
        text = f"{key}: required"
    elif first["type"] == "model_type":
        text = "payload: must be a JSON object"
    else:
        text = f"{key}: must be {FIELD_RULES.get(key, 'valid')}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return text


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key; parsers disagree on which value wins, so refuse it."""


class NotJsonError(ValueError):
    """The bytes are not UTF-8 JSON (includes NaN/Infinity and absurd nesting)."""


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() and len() run in C: this hook is on the hot path of every MQTT message.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateKeyError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise NotJsonError(f"{name} is not JSON")


def loads_strict(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly: no NaN/Infinity, no duplicate keys.

    Raises NotJsonError for anything that is not JSON and DuplicateKeyError
    for an object with a repeated key. Never raises anything else.
    """
    try:
        text = data.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant
        )
    except DuplicateKeyError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError; RecursionError comes from deep nesting.
        raise NotJsonError(type(exc).__name__) from None


@dataclass(frozen=True)
class Rejection:
    """Why a payload on `kiosk/<device>/checkin` was refused (sent on `kiosk/<device>/reply`)."""

    error: ErrorCode
    detail: str
    seq: int | None = None

    def to_payload(self) -> bytes:
        """The rejection message of docs/protocol.md, as UTF-8 JSON bytes."""
        body = {"v": PROTOCOL_VERSION, "error": self.error, "seq": self.seq, "detail": self.detail}
        return json.dumps(body, separators=(",", ":")).encode()


def is_device_id(text: str) -> bool:
    """True if `text` is a well-formed device id."""
    return _DEVICE_RE.fullmatch(text) is not None


def _recover_seq(obj: Any) -> int | None:
    if isinstance(obj, dict):
        seq = obj.get("seq")
        # type() rather than isinstance(): bool is an int subclass and is not a seq.
        if type(seq) is int and 1 <= seq <= INT64_MAX:
            return seq
    return None


def parse_checkin(payload: bytes, topic_device: str) -> CheckIn | Rejection:
    """Turn a raw MQTT payload from `kiosk/<topic_device>/checkin` into a check-in or a rejection.

    The rejection carries the protocol's error code, a short detail naming the
    field (never a value), and the seq whenever one can be read, so the kiosk
    can drop that record from its journal. Never raises.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        seq = None
        # The broker caps messages at 64 KiB, so parsing one to find its seq is cheap.
        with contextlib.suppress(ValueError):
            seq = _recover_seq(loads_strict(payload))
        return Rejection("too_large", f"payload: more than {MAX_PAYLOAD_BYTES} bytes", seq)
    try:
        obj = loads_strict(payload)
    except DuplicateKeyError:
        return Rejection("invalid", "payload: duplicate key", None)
    except NotJsonError:
        return Rejection("not_json", "payload: not UTF-8 JSON", None)
    seq = _recover_seq(obj)
    if not isinstance(obj, dict):
        return Rejection("invalid", "payload: must be a JSON object", None)
    if not is_device_id(topic_device):
        return Rejection("invalid", "topic: device segment is not a device id", seq)
    claimed = obj.get("device")
    if isinstance(claimed, str) and claimed != topic_device:
        return Rejection("device_mismatch", "device: does not match the topic", seq)
    try:
        return CheckIn.model_validate(obj)
    except ValidationError as exc:
        return Rejection("invalid", describe_validation_error(exc), seq)
