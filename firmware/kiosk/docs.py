# Verifying the operator's signed fleet documents (policy, trust list) on the
# kiosk: JWS compact serialization, header {"alg":"ES256","typ":"kiosk-doc"},
# ES256 with the operator's pinned P-256 key (docs/protocol.md "Signed fleet
# documents"). The host's twin is mqtt_bridge/documents.py (same reasons).
# Heap: for a document of the maximum 16 KiB, about 3 times its size for a
# moment (the text, the signing input's bytes, the decoded payload and its
# parsed JSON), plus the verification's big integers (kiosk/p256.py).

import binascii
import hashlib
import json

from kiosk import p256

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_DOCUMENT = const(16384)
KINDS = ("policy", "trust")

# Reasons
R_TOO_LARGE = "too_large"
R_NOT_JWS = "not_jws"
R_BAD_HEADER = "bad_header"
R_BAD_SIGNATURE = "bad_signature"
R_BAD_PAYLOAD = "bad_payload"
R_WRONG_KIND = "wrong_kind"
R_OLD_SERIAL = "old_serial"  # older than the document held
R_SAME_SERIAL = "same_serial"  # the document held (a retained message seen again)
R_STALE = "stale"  # expires has passed
R_BAD_KEY = "bad_operator_key"


def b64url_decode(part):
    """Decode unpadded base64url (str); None if it is not valid."""
    if not isinstance(part, str) or "=" in part or "+" in part or "/" in part:
        return None  # padding or the standard alphabet: not JWS
    if len(part) % 4 == 1:
        return None
    s = part.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        raw = binascii.a2b_base64(s)
    except (ValueError, TypeError):
        return None
    # a2b_base64 skips characters outside the alphabet: only a canonical
    # encoding that round-trips is accepted.
    if binascii.b2a_base64(raw)[:-1] != s.encode():
        return None
    return raw


def _is_int(v):
    return isinstance(v, int) and v is not True and v is not False


def verify(text, operator_key, kind, held_serial, now):
    """Verify a document of `kind` ("policy" or "trust") signed with
    `operator_key` (the 65-byte uncompressed P-256 point). `held_serial` is
    the serial of the document the kiosk holds (0: none); `now` Unix seconds
    or None (clock unknown: staleness cannot be judged and is not).
    Returns (payload dict, None) or (None, reason)."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_DOCUMENT:
            return None, R_TOO_LARGE
        try:
            text = str(text, "utf-8")
        except UnicodeError:
            return None, R_NOT_JWS
    if not isinstance(text, str):
        return None, R_NOT_JWS
    if len(text) > MAX_DOCUMENT:
        return None, R_TOO_LARGE
    text = text.strip()
    d1 = text.find(".")
    d2 = text.find(".", d1 + 1) if d1 >= 0 else -1
    if d1 < 0 or d2 < 0 or text.find(".", d2 + 1) >= 0:
        return None, R_NOT_JWS
    header_raw = b64url_decode(text[:d1])
    payload_raw = b64url_decode(text[d1 + 1:d2])
    sig = b64url_decode(text[d2 + 1:])
    if header_raw is None or payload_raw is None or sig is None:
        return None, R_NOT_JWS
    try:
        header = json.loads(str(header_raw, "utf-8"))
    except (ValueError, UnicodeError):
        return None, R_BAD_HEADER
    if not isinstance(header, dict) or len(header) != 2:
        return None, R_BAD_HEADER
    if header.get("alg") != "ES256" or header.get("typ") != "kiosk-doc":
        return None, R_BAD_HEADER
    key = p256.point(operator_key)
    if key is None:
        return None, R_BAD_KEY
    digest = hashlib.sha256(text[:d2].encode()).digest()
    if not p256.verify(key, digest, sig):
        return None, R_BAD_SIGNATURE
    try:
        doc = json.loads(str(payload_raw, "utf-8"))
    except (ValueError, UnicodeError):
        return None, R_BAD_PAYLOAD
    if not isinstance(doc, dict) or doc.get("v") != 1 or not _is_int(doc.get("v")):
        return None, R_BAD_PAYLOAD
    if doc.get("kind") not in KINDS or not isinstance(doc.get("body"), dict):
        return None, R_BAD_PAYLOAD
    for name in ("serial", "issued", "expires"):
        v = doc.get(name)
        if not _is_int(v) or v < 0:
            return None, R_BAD_PAYLOAD
    if doc["kind"] != kind:
        return None, R_WRONG_KIND
    if doc["serial"] < held_serial:
        return None, R_OLD_SERIAL
    if doc["serial"] == held_serial:
        return None, R_SAME_SERIAL
    if now is not None and doc["expires"] < now:
        return None, R_STALE
    return doc, None
