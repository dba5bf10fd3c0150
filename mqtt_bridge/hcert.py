"""EU DCC ("HC1:") decoding and verification on the host, with `cryptography`.

The bridge's online check (`kiosk/<device>/verify` with `type: hc1`) and the
tools use it. It reads the same trust list body as the kiosks (docs/protocol.md
"Signed fleet documents") and gives the same answers and reason codes as the
firmware (firmware/kiosk/hc1.py `read` + `verify`), so a certificate is judged
alike wherever it is checked:

- reading: hc1_base45, hc1_zlib, hc1_too_big, hc1_cose, hc1_claims, hc1_no_dcc
- verifying: no_signer, bad_signature, unsupported_alg, wrong_key_usage,
  expired, not_yet_valid, signer_expired
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import base45
import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

#: Largest inflated COSE message accepted (the firmware's MAX_INFLATED).
MAX_INFLATED = 4096
#: Longest HC1 text accepted (the verify request's limit in docs/protocol.md).
MAX_TEXT = 4096
#: An iat this far ahead of `now` is still accepted (the firmware's CLOCK_SKEW_S).
CLOCK_SKEW_S = 300
ALG_ES256 = -7
ALG_PS256 = -37

#: Extended key usage OIDs of DCC signers -> the certificate kind they allow.
EKU_KINDS = {
    "1.3.6.1.4.1.1847.2021.1.1": "t",
    "1.3.6.1.4.1.1847.2021.1.2": "v",
    "1.3.6.1.4.1.1847.2021.1.3": "r",
    "1.3.6.1.4.1.0.1847.2021.1.1": "t",
    "1.3.6.1.4.1.0.1847.2021.1.2": "v",
    "1.3.6.1.4.1.0.1847.2021.1.3": "r",
}
ALL_KINDS = "vtr"

_PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def kid_for(cert_der: bytes) -> bytes:
    """The EU DCC key id of a signer certificate: the first 8 bytes of SHA-256 of its DER."""
    return hashlib.sha256(cert_der).digest()[:8]


def build_trust_body(cert_ders: list[bytes]) -> dict[str, Any]:
    """The body of a `trust` document for these signer certificates (DER)."""
    return {
        "keys": [
            {
                "kid": base64.b64encode(kid_for(der)).decode("ascii"),
                "cert": base64.b64encode(der).decode("ascii"),
            }
            for der in cert_ders
        ]
    }


def kinds_for_eku(oids: list[str], critical: bool = False) -> str:
    """Kinds ("v", "t", "r") a signer may sign: the DCC OIDs of its EKU; all
    when it lists none of them, unless the extension is critical (RFC 5280:
    then the key serves only the purposes listed, so no kind). As the firmware."""
    kinds = ""
    for oid in oids:
        k = EKU_KINDS.get(oid)
        if k and k not in kinds:
            kinds += k
    if kinds:
        return kinds
    return "" if critical and oids else ALL_KINDS


@dataclass(frozen=True)
class Signer:
    """One trusted DCC signer."""

    kid: bytes
    public_key: _PublicKey
    not_before: int  # Unix seconds
    not_after: int
    kinds: str  # subset of "vtr"

    @classmethod
    def from_der(cls, kid: bytes, cert_der: bytes) -> Signer:
        """Parse a signer certificate; ValueError if it is unusable (as the kiosk would find)."""
        cert = x509.load_der_x509_certificate(cert_der)
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("EC key not on P-256")
        elif isinstance(key, rsa.RSAPublicKey):
            if not 2048 <= key.key_size <= 4096:
                raise ValueError("RSA key outside 2048-4096 bits")
        else:
            raise ValueError("unsupported key type")
        try:
            ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
            oids = [o.dotted_string for o in ext.value]
            critical = ext.critical
        except x509.ExtensionNotFound:
            oids, critical = [], False
        return cls(
            kid=kid,
            public_key=key,
            not_before=int(cert.not_valid_before_utc.timestamp()),
            not_after=int(cert.not_valid_after_utc.timestamp()),
            kinds=kinds_for_eku(oids, critical),
        )


@dataclass
class TrustList:
    """The signers certificates are verified with (duplicate kids allowed, tried in turn)."""

    signers: list[Signer] = field(default_factory=list)
    #: (index in the body, why) for entries that could not be used.
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def from_body(cls, body: object) -> TrustList:
        """Build from a trust document's body `{"keys": [{"kid", "cert"}, ...]}`.

        Unusable entries are skipped (listed in `skipped`), like on the kiosk.
        Raises ValueError when the body is not a trust list at all.
        """
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list):
            raise ValueError("trust body: 'keys' must be a list")
        tl = cls()
        for i, item in enumerate(keys):
            try:
                if not isinstance(item, dict):
                    raise ValueError("entry is not an object")
                kid = base64.b64decode(item["kid"], validate=True)
                der = base64.b64decode(item["cert"], validate=True)
                if len(kid) != 8:
                    raise ValueError("kid must be 8 bytes")
                tl.signers.append(Signer.from_der(kid, der))
            except (KeyError, TypeError, ValueError, binascii.Error) as e:
                tl.skipped.append((i, str(e) or type(e).__name__))
        return tl

    def find(self, kid: bytes) -> list[Signer]:
        return [s for s in self.signers if s.kid == kid]


@dataclass(frozen=True)
class HC1Result:
    """The verdict on one HC1 code. `dcc` is personal data: never log it."""

    ok: bool
    reason: str | None
    kind: str | None = None  # "v", "t" or "r"
    uvci: str | None = None
    dcc: dict[str, Any] | None = None


@dataclass
class _Cose:
    protected: bytes
    header: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    claims: dict[Any, Any]


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _untag(obj: object) -> object:
    while isinstance(obj, cbor2.CBORTag):
        obj = obj.value
    return obj


def _plain(obj: object) -> object:
    """JSON-able copy of decoded CBOR (tags dropped, dates as ISO strings)."""
    obj = _untag(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


def _decode(text: str) -> _Cose:
    if not isinstance(text, str) or len(text) > MAX_TEXT or not text.startswith("HC1:"):
        raise _Refused("hc1_base45")
    try:
        raw = base45.b45decode(text[4:])
    except (ValueError, KeyError):
        raise _Refused("hc1_base45") from None
    if raw[:1] == b"\x78":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(raw, MAX_INFLATED + 1)
        except zlib.error:
            raise _Refused("hc1_zlib") from None
        if len(raw) > MAX_INFLATED:
            raise _Refused("hc1_too_big")
        if not d.eof:
            raise _Refused("hc1_zlib")
    try:
        cose = _untag(cbor2.loads(raw))
    except Exception:  # cbor2 raises several types on garbage
        raise _Refused("hc1_cose") from None
    # cbor2 gives a tuple (and frozendicts) for an array inside a tag
    if not isinstance(cose, list | tuple) or len(cose) != 4:
        raise _Refused("hc1_cose")
    prot, unprot, payload, sig = cose
    if not (isinstance(prot, bytes) and isinstance(payload, bytes) and isinstance(sig, bytes)):
        raise _Refused("hc1_cose")
    if not isinstance(unprot, Mapping):
        raise _Refused("hc1_cose")
    header: Mapping[Any, Any] = {}
    if prot:
        try:
            decoded = cbor2.loads(prot)
        except Exception:
            raise _Refused("hc1_cose") from None
        if not isinstance(decoded, Mapping):
            raise _Refused("hc1_cose")
        header = decoded
    try:
        claims = cbor2.loads(payload)
    except Exception:
        raise _Refused("hc1_claims") from None
    if not isinstance(claims, Mapping):
        raise _Refused("hc1_claims")
    return _Cose(prot, dict(header), dict(unprot), payload, sig, dict(claims))


def _first_entry(dcc: Mapping[Any, Any], kind: str) -> Mapping[Any, Any] | None:
    entries = dcc.get(kind)
    if isinstance(entries, list | tuple) and entries and isinstance(entries[0], Mapping):
        return entries[0]
    return None


def _seconds(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == v and abs(v) < 1e15:
        return int(v)
    return None


def _signature_ok(signer: Signer, alg: int, to_sign: bytes, sig: bytes) -> bool:
    key = signer.public_key
    try:
        if alg == ALG_ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            key.verify(der, to_sign, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == ALG_PS256 and isinstance(key, rsa.RSAPublicKey):
            key.verify(
                sig,
                to_sign,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def verify_hc1(text: str, trust: TrustList, now: int | None) -> HC1Result:
    """Decode and verify an HC1 code at `now` (Unix seconds; None skips the dates)."""
    try:
        cose = _decode(text)
    except _Refused as r:
        return HC1Result(False, r.reason)
    hcert = cose.claims.get(-260)
    dcc = hcert.get(1) if isinstance(hcert, Mapping) else None
    if not isinstance(dcc, Mapping):
        return HC1Result(False, "hc1_no_dcc")
    kind = next((k for k in "vtr" if _first_entry(dcc, k) is not None), None)
    entry = _first_entry(dcc, kind) if kind else None
    uvci = entry.get("ci") if entry else None
    if not isinstance(uvci, str) or not uvci:
        return HC1Result(False, "hc1_no_dcc")
    plain = _plain(dcc)
    assert isinstance(plain, dict)

    def result(reason: str | None) -> HC1Result:
        return HC1Result(reason is None, reason, kind, uvci, plain)

    alg = cose.header.get(1, cose.unprotected.get(1))
    if alg not in (ALG_ES256, ALG_PS256):
        return result("unsupported_alg")
    kid = cose.header.get(4, cose.unprotected.get(4))
    candidates = trust.find(kid) if isinstance(kid, bytes) and kid else []
    if not candidates:
        return result("no_signer")
    to_sign = cbor2.dumps(["Signature1", cose.protected, b"", cose.payload])
    signer = next((s for s in candidates if _signature_ok(s, alg, to_sign, cose.signature)), None)
    if signer is None:
        return result("bad_signature")
    if not kind or kind not in signer.kinds:
        return result("wrong_key_usage")
    if now is None:
        return result(None)
    exp = _seconds(cose.claims.get(4))
    iat = _seconds(cose.claims.get(6))
    if exp is None or exp < now:
        return result("expired")
    if iat is not None and iat > now + CLOCK_SKEW_S:
        return result("not_yet_valid")
    if signer.not_after < now:
        return result("signer_expired")
    if signer.not_before > now + CLOCK_SKEW_S:
        return result("not_yet_valid")
    return result(None)
