# Verifying the operator's signed fleet documents (policy, trust list) on the
# kiosk: JWS compact serialization, header {"alg":"ES256","typ":"kiosk-doc"},
# ES256 with the operator's pinned P-256 key (docs/protocol.md "Signed fleet
# documents"). The host's twin is mqtt_bridge/documents.py (same reasons).
# Heap: for a document of the maximum 16 KiB, about 2.5 times its size for a
# moment (the text, one working copy of the payload, the decoded payload, then
# its parsed JSON), plus the verification's big integers (kiosk/p256.py).
# The text is worked on as bytes through a memoryview: no slice is copied.

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
    """Decode unpadded base64url (str, bytes or a memoryview of them); None if
    it is not valid. One working copy of the input (the payload of a 16 KiB
    document is ~12 KB): no str.replace chain, no re-encoding to compare."""
    if isinstance(part, str):
        part = part.encode()
    elif not isinstance(part, (bytes, bytearray, memoryview)):
        return None
    n = len(part)
    if n % 4 == 1:
        return None
    buf = bytearray(n + (-n % 4))
    buf[:n] = part
    # Padding or the standard alphabet: not JWS.
    if buf.find(b"=") >= 0 or buf.find(b"+") >= 0 or buf.find(b"/") >= 0:
        return None
    for i in range(n, len(buf)):
        buf[i] = 61  # "="
    for a, b in ((b"-", 43), (b"_", 47)):  # -> "+", "/"
        i = buf.find(a)
        while i >= 0:
            buf[i] = b
            i = buf.find(a, i + 1)
    try:
        raw = binascii.a2b_base64(buf)
    except (ValueError, TypeError):
        return None
    # a2b_base64 skips characters outside the alphabet: then fewer bytes come
    # out. Unused low bits of the last character must be zero. Together: only
    # the canonical encoding is accepted.
    if len(raw) != n * 3 // 4:
        return None
    if n % 4 and _b64_value(buf[n - 1]) & (0x0F if n % 4 == 2 else 0x03):
        return None
    return raw


def _b64_value(c):
    if 65 <= c <= 90:  # A-Z
        return c - 65
    if 97 <= c <= 122:  # a-z
        return c - 71
    if 48 <= c <= 57:  # 0-9
        return c + 4
    return 62 if c == 43 else 63


def _is_int(v):
    return isinstance(v, int) and v is not True and v is not False


def verify(text, operator_key, kind, held_serial, now):
    """Verify a document of `kind` ("policy" or "trust") signed with
    `operator_key` (the 65-byte uncompressed P-256 point). `held_serial` is
    the serial of the document the kiosk holds (0: none); `now` Unix seconds
    or None (clock unknown: staleness cannot be judged and is not).
    Returns (payload dict, None) or (None, reason)."""
    if isinstance(text, str):
        text = text.encode()  # works on bytes: no second copy of the text below
    if not isinstance(text, (bytes, bytearray)):
        return None, R_NOT_JWS
    if len(text) > MAX_DOCUMENT:
        return None, R_TOO_LARGE
    text = text.strip()
    d1 = text.find(b".")
    d2 = text.find(b".", d1 + 1) if d1 >= 0 else -1
    if d1 < 0 or d2 < 0 or text.find(b".", d2 + 1) >= 0:
        return None, R_NOT_JWS
    # Non-ASCII bytes fail here: they are outside the base64url alphabet.
    mv = memoryview(text)  # slices without copies
    header_raw = b64url_decode(mv[:d1])
    payload_raw = b64url_decode(mv[d1 + 1:d2])
    sig = b64url_decode(mv[d2 + 1:])
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
    if not p256.verify(key, hashlib.sha256(mv[:d2]).digest(), sig):
        return None, R_BAD_SIGNATURE
    mv = None
    try:
        payload = str(payload_raw, "utf-8")
        payload_raw = None  # one copy at a time: the text, then its JSON
        doc = json.loads(payload)
    except (ValueError, UnicodeError):
        return None, R_BAD_PAYLOAD
    payload = None
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
