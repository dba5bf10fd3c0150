"""Operator-signed fleet documents (policy, trust list): sign and verify on the host.

The wire format is the contract in docs/protocol.md ("Signed fleet documents"):
JWS compact serialization, header `{"alg":"ES256","typ":"kiosk-doc"}`, signed
with the operator's P-256 key, signature = the 64-byte `r || s`, payload
`{"v":1,"kind":...,"serial":...,"issued":...,"expires":...,"body":{...}}`.
The firmware's twin is firmware/kiosk/docs.py; both give the same reason codes.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

#: Largest document a kiosk accepts, in bytes of JWS text.
MAX_DOCUMENT_BYTES = 16 * 1024
DOCUMENT_KINDS = ("policy", "trust")
_HEADER = {"alg": "ES256", "typ": "kiosk-doc"}


class DocumentError(ValueError):
    """A document was refused; `reason` is a short code as the kiosk reports it:
    not_jws, bad_header, bad_signature, bad_payload, wrong_kind, stale, too_large."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raises binascii.Error / ValueError on bad input."""
    if "=" in text:
        raise ValueError("padding not allowed")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_document(
    key: ec.EllipticCurvePrivateKey,
    kind: str,
    serial: int,
    body: dict[str, Any],
    *,
    issued: int,
    expires: int,
) -> str:
    """Sign `body` as a `kind` document ("policy" or "trust") with the operator's key.

    Returns the JWS compact text to publish (retained) on `fleet/<kind>`.
    Raises ValueError for a kind, serial or time range the kiosk would refuse,
    or when the result is larger than MAX_DOCUMENT_BYTES.
    """
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"kind: must be one of {DOCUMENT_KINDS}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("key: must be a P-256 key")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 1:
        raise ValueError("serial: must be a positive integer")
    if expires <= issued:
        raise ValueError("expires: must be after issued")
    payload = {
        "v": 1,
        "kind": kind,
        "serial": serial,
        "issued": issued,
        "expires": expires,
        "body": body,
    }
    signing_input = b64url(_compact_json(_HEADER)) + "." + b64url(_compact_json(payload))
    # RFC 6979 deterministic ECDSA: no dependence on a good random source at
    # signing time, and the same document always gets the same bytes.
    der = key.sign(
        signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    )
    r, s = decode_dss_signature(der)
    text = signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"document: {len(text)} bytes, at most {MAX_DOCUMENT_BYTES}")
    return text


def verify_document(
    text: str,
    public_key: ec.EllipticCurvePublicKey,
    kind: str,
    *,
    now: int | None = None,
) -> dict[str, Any]:
    """Verify a signed document of `kind`; return its payload
    (`{"v","kind","serial","issued","expires","body"}`).

    `now` (Unix seconds) enables the staleness check; None = clock unknown.
    Serial ordering is the holder's business (it knows the serial it holds).
    Raises DocumentError with the kiosk's reason code.
    """
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentError("too_large", f"at most {MAX_DOCUMENT_BYTES} bytes")
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise DocumentError("not_jws", "expected three dot-separated parts")
    try:
        header_raw, payload_raw, sig = (b64url_decode(p) for p in parts)
    except (ValueError, binascii.Error) as e:
        raise DocumentError("not_jws", "a part is not base64url") from e
    try:
        header = json.loads(header_raw)
    except ValueError as e:
        raise DocumentError("bad_header", "not JSON") from e
    if header != _HEADER:
        raise DocumentError("bad_header", 'must be {"alg":"ES256","typ":"kiosk-doc"}')
    if len(sig) != 64:
        raise DocumentError("bad_signature", "signature must be 64 bytes r||s")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise DocumentError("bad_signature") from e
    try:
        payload = json.loads(payload_raw)
    except ValueError as e:
        raise DocumentError("bad_payload", "not JSON") from e
    _check_payload(payload)
    if payload["kind"] != kind:
        raise DocumentError("wrong_kind", f"expected {kind}")
    if now is not None and payload["expires"] < now:
        raise DocumentError("stale", "expires has passed")
    return payload


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_payload(payload: object) -> None:
    if not isinstance(payload, dict):
        raise DocumentError("bad_payload", "must be a JSON object")
    if payload.get("v") != 1 or not _is_int(payload.get("v")):
        raise DocumentError("bad_payload", "v: must be 1")
    if payload.get("kind") not in DOCUMENT_KINDS:
        raise DocumentError("bad_payload", "kind: policy or trust")
    for name in ("serial", "issued", "expires"):
        if not _is_int(payload.get(name)) or payload[name] < 0:
            raise DocumentError("bad_payload", f"{name}: must be a non-negative integer")
    if not isinstance(payload.get("body"), dict):
        raise DocumentError("bad_payload", "body: must be an object")


def operator_key_b64(public_key: ec.EllipticCurvePublicKey) -> str:
    """The kiosk config's `operator_key`: base64 of the 65-byte uncompressed point."""
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.b64encode(point).decode("ascii")


def public_key_from_b64(text: str) -> ec.EllipticCurvePublicKey:
    """The inverse of operator_key_b64; raises ValueError on a malformed key."""
    try:
        point = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError("operator_key: not base64") from e
    if len(point) != 65 or point[0] != 4:
        raise ValueError("operator_key: must be a 65-byte uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def generate_operator_key() -> ec.EllipticCurvePrivateKey:
    """A new operator P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def load_private_key(path: str | Path, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Load the operator's P-256 private key from a PEM file.

    Raises ValueError if the file does not hold a P-256 private key, OSError if unreadable.
    """
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: not a P-256 private key")
    return key


def save_private_key(key: ec.EllipticCurvePrivateKey, path: str | Path) -> None:
    """Write the key as unencrypted PKCS#8 PEM, readable by the owner only."""
    p = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    p.write_bytes(pem)
    p.chmod(0o600)
