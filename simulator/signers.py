"""TEST ONLY signing identities: the operator, a test CSCA and DCC signers.

For tests, the demo and the benchmarks. Everything here is deterministic:
EC keys are derived from fixed labels, RSA keys are the TEST ONLY PEM files
in simulator/testkeys/, certificates are signed by the CSCA with RSA
PKCS#1 v1.5 (a deterministic signature, so the DER and the kid never
change), ES256 signatures use RFC 6979 deterministic ECDSA and PS256 salts
come from the caller's seeded `random.Random`.

    pki = TestPKI()
    vn = pki.signer("vn")                      # RSA-2048 PS256 signer, like Viet Nam's
    ec = pki.signer("es256")                   # P-256 ES256 signer
    body = trust_body([vn, ec])                # trust list document body
    doc = pki.trust_document([vn, ec], serial=1)
    text = sign_hc1(vn, dcc_payload("v", ...), iat=..., exp=..., rng=random.Random(1))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import base45
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from mqtt_bridge.documents import operator_key_b64, sign_document
from mqtt_bridge.hcert import build_trust_body, kid_for

TESTKEYS = Path(__file__).with_name("testkeys")
ALG_ES256 = -7
ALG_PS256 = -37
EKU_OID = {
    "t": "1.3.6.1.4.1.1847.2021.1.1",
    "v": "1.3.6.1.4.1.1847.2021.1.2",
    "r": "1.3.6.1.4.1.1847.2021.1.3",
}
#: Default validity of test signer certificates: wide enough for any test "now".
DEFAULT_NOT_BEFORE = dt.datetime(2021, 7, 15, tzinfo=dt.UTC)
DEFAULT_NOT_AFTER = dt.datetime(2036, 7, 14, tzinfo=dt.UTC)
#: Documents issued by trust_document() / policy_document() by default.
DOC_ISSUED = 1764000000  # 2025-11-24
DOC_EXPIRES = 2079000000  # 2035-11-18

_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Which private key each named signer uses: an RSA PEM in testkeys/ or "ec:<label>".
_KEYS = {
    "vn": "dsc-vn-rsa2048",
    "rsa2048-b": "dsc-rsa2048-b",
    "rsa3072": "dsc-rsa3072",
    "rsa4096": "dsc-rsa4096",
    "es256": "ec:dsc-es256",
    "es256-b": "ec:dsc-es256-b",
}


def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from a label (TEST ONLY: anyone can derive it)."""
    digest = hashlib.sha256(b"qr-checkin-kiosk TEST ONLY " + label.encode()).digest()
    secret = int.from_bytes(digest, "big") % (_P256_N - 1) + 1
    return ec.derive_private_key(secret, ec.SECP256R1())


@cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One of the TEST ONLY RSA keys in simulator/testkeys/ (loaded once)."""
    # Our own files: skipping the (slow) key consistency check is safe here.
    key = serialization.load_pem_private_key(
        (TESTKEYS / f"{name}.pem").read_bytes(), None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@dataclass(frozen=True)
class DccSigner:
    """A DCC signer: its private key, its certificate (DER) and its kid."""

    name: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert_der: bytes

    @property
    def kid(self) -> bytes:
        return kid_for(self.cert_der)

    @property
    def alg(self) -> int:
        return ALG_PS256 if isinstance(self.key, rsa.RSAPrivateKey) else ALG_ES256

    def sign(self, data: bytes, rng: random.Random, *, salt_len: int | None = None) -> bytes:
        """COSE signature bytes over `data`: ES256 r||s, or PS256 with a salt
        of `salt_len` bytes (default 32; -1 = the maximum) drawn from rng."""
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            der = self.key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
            r, s = decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return pss_sign(self.key, data, rng, salt_len=32 if salt_len is None else salt_len)


def pss_sign(
    key: rsa.RSAPrivateKey, data: bytes, rng: random.Random, *, salt_len: int = 32
) -> bytes:
    """RSASSA-PSS-SIGN (RFC 8017) with SHA-256 / MGF1-SHA-256 and a salt from
    `rng`, so test signatures are reproducible (cryptography's own PSS signing
    draws the salt from the OS). `salt_len` -1 means the maximum."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    mod_bits = n.bit_length()
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    h_len = 32
    if salt_len < 0:
        salt_len = em_len - h_len - 2
    if em_len < h_len + salt_len + 2:
        raise ValueError("salt too long for this key")
    m_hash = hashlib.sha256(data).digest()
    salt = bytes(rng.randrange(256) for _ in range(salt_len))
    h = hashlib.sha256(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_len - salt_len - h_len - 2) + b"\x01" + salt
    mask = b""
    counter = 0
    while len(mask) < len(db):
        mask += hashlib.sha256(h + counter.to_bytes(4, "big")).digest()
        counter += 1
    masked = bytearray(a ^ b for a, b in zip(db, mask, strict=False))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = bytes(masked) + h + b"\xbc"
    m = int.from_bytes(em, "big")
    # RSASP1 with the CRT (RFC 8017 5.1.2): four times faster than m^d mod n
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    s = s2 + numbers.q * ((numbers.iqmp * (s1 - s2)) % numbers.p)
    sig = s.to_bytes((mod_bits + 7) // 8, "big")
    # Self-check with the library, so a bug here cannot pass as a firmware bug.
    key.public_key().verify(
        sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()
    )
    return sig


class TestPKI:
    """The test CSCA, the operator and named DCC signers (built lazily, cached)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._signers: dict[tuple[Any, ...], DccSigner] = {}

    @cached_property
    def csca_key(self) -> rsa.RSAPrivateKey:
        return rsa_key("csca-rsa2048")

    @cached_property
    def operator_key(self) -> ec.EllipticCurvePrivateKey:
        """The test operator's P-256 key (signs policy and trust documents)."""
        return ec_key("operator")

    @property
    def operator_key_b64(self) -> str:
        """What a kiosk's config `operator_key` holds for the test operator."""
        return operator_key_b64(self.operator_key.public_key())

    def signer(
        self,
        name: str = "vn",
        *,
        eku: str | None = None,
        extra_eku: Iterable[str] = (),
        eku_critical: bool = False,
        not_before: dt.datetime = DEFAULT_NOT_BEFORE,
        not_after: dt.datetime = DEFAULT_NOT_AFTER,
        country: str = "VN",
    ) -> DccSigner:
        """A DCC signer certificate for the named key (see _KEYS: "vn" RSA-2048,
        "rsa2048-b", "rsa3072", "rsa4096", "es256", "es256-b").

        `eku`: the kinds it may sign, e.g. "v" or "vt" (DCC EKU OIDs), None for
        no EKU extension (all kinds). `extra_eku`: other OIDs to list too.
        `eku_critical`: mark the EKU extension critical.
        """
        extra = tuple(extra_eku)
        cache_key = (name, eku, extra, eku_critical, not_before, not_after, country)
        if cache_key not in self._signers:
            ref = _KEYS[name]
            key = ec_key(ref[3:]) if ref.startswith("ec:") else rsa_key(ref)
            der = self._certificate(name, key, eku, extra, eku_critical, not_before, not_after,
                                    country)
            self._signers[cache_key] = DccSigner(name, key, der)
        return self._signers[cache_key]

    def _certificate(
        self,
        name: str,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        eku: str | None,
        extra: tuple[str, ...],
        eku_critical: bool,
        not_before: dt.datetime,
        not_after: dt.datetime,
        country: str,
    ) -> bytes:
        issuer = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, "TEST ONLY CSCA"),
        ])
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, f"TEST ONLY DSC {name}"),
        ])
        serial = int.from_bytes(
            hashlib.sha256(
                repr((name, eku, extra, eku_critical, not_before, not_after)).encode()
            ).digest()[:8],
            "big",
        ) >> 1 or 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        oids = [EKU_OID[k] for k in (eku or "")] + list(extra)
        if oids:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.ObjectIdentifier(o) for o in oids]),
                critical=eku_critical,
            )
        cert = builder.sign(self.csca_key, hashes.SHA256())  # PKCS#1 v1.5: deterministic
        return cert.public_bytes(serialization.Encoding.DER)

    def trust_document(
        self,
        signers: Iterable[DccSigner],
        serial: int = 1,
        *,
        issued: int = DOC_ISSUED,
        expires: int = DOC_EXPIRES,
    ) -> str:
        """A signed `trust` document listing these signers."""
        return sign_document(
            self.operator_key, "trust", serial, trust_body(signers), issued=issued, expires=expires
        )

    def policy_document(
        self,
        body: dict[str, Any],
        serial: int = 1,
        *,
        issued: int = DOC_ISSUED,
        expires: int = DOC_EXPIRES,
    ) -> str:
        """A signed `policy` document with this body."""
        return sign_document(
            self.operator_key, "policy", serial, body, issued=issued, expires=expires
        )


def trust_body(signers: Iterable[DccSigner]) -> dict[str, Any]:
    """Trust list document body for these signers (kid = SHA-256(DER)[:8])."""
    return build_trust_body([s.cert_der for s in signers])


def dcc_payload(
    kind: str,
    uvci: str,
    *,
    family: str = "Nguyễn",
    given: str = "Văn An",
    dob: str = "1980-01-01",
    day: str = "2026-10-01",
    **entry: Any,
) -> dict[str, Any]:
    """A DCC (hcert 1) with one entry of `kind` ("v", "t", "r") dated `day`;
    `entry` overrides fields of the entry (e.g. dn=1, tt="LP6464-4")."""
    from simulator.codes import ascii_caps  # codes imports this module

    dcc: dict[str, Any] = {
        "ver": "1.3.0",
        "nam": {"fn": family, "fnt": ascii_caps(family), "gn": given,
                "gnt": ascii_caps(given).replace(" ", "<")},
        "dob": dob,
    }
    common = {"tg": "840539006", "co": "VN", "is": "Ministry of Health of Viet Nam", "ci": uvci}
    if kind == "v":
        e = {**common, "vp": "1119349007", "mp": "EU/1/20/1528", "ma": "ORG-100030215",
             "dn": 2, "sd": 2, "dt": day}
    elif kind == "t":
        e = {**common, "tt": "LP217198-3", "ma": "1232", "tr": "260415000",
             "sc": f"{day}T08:00:00Z", "tc": "Bệnh viện Chợ Rẫy"}
    elif kind == "r":
        d = dt.date.fromisoformat(day)
        e = {**common, "fr": day, "df": day, "du": (d + dt.timedelta(days=180)).isoformat()}
    else:
        raise ValueError(f"kind: v, t or r, not {kind!r}")
    e.update(entry)
    dcc[kind] = [e]
    return dcc


def cose_sign1(
    signer: DccSigner,
    payload: bytes,
    rng: random.Random,
    *,
    tagged: bool = True,
    kid_protected: bool = True,
    alg: int | None = None,
    salt_len: int | None = None,
) -> bytes:
    """COSE_Sign1 over `payload` (tag 18 unless tagged=False), kid in the
    protected header (or the unprotected one). `alg` overrides the header's
    algorithm (to test unsupported ones); the signature follows the key."""
    header: dict[int, Any] = {1: signer.alg if alg is None else alg}
    unprotected: dict[int, Any] = {}
    if kid_protected:
        header[4] = signer.kid
    else:
        unprotected[4] = signer.kid
    protected = cbor2.dumps(header)
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    msg = [protected, unprotected, payload, signer.sign(to_sign, rng, salt_len=salt_len)]
    return cbor2.dumps(cbor2.CBORTag(18, msg) if tagged else msg)


def claims(dcc: dict[str, Any], *, iat: int, exp: int | None, issuer: str = "VN") -> bytes:
    """CWT claims (iss, iat, exp, hcert) as CBOR; exp None leaves it out."""
    c: dict[int, Any] = {1: issuer, 6: iat, -260: {1: dcc}}
    if exp is not None:
        c[4] = exp
    return cbor2.dumps(c)


def hc1_text(cose: bytes) -> str:
    """COSE bytes -> the "HC1:" text a QR code carries (zlib + Base45)."""
    return "HC1:" + base45.b45encode(zlib.compress(cose, 9)).decode("ascii")


def sign_hc1(
    signer: DccSigner,
    dcc: dict[str, Any],
    *,
    iat: int,
    exp: int | None,
    rng: random.Random,
    tagged: bool = True,
    kid_protected: bool = True,
    salt_len: int | None = None,
) -> str:
    """A signed "HC1:" certificate carrying `dcc`."""
    cose = cose_sign1(signer, claims(dcc, iat=iat, exp=exp), rng, tagged=tagged,
                      kid_protected=kid_protected, salt_len=salt_len)
    return hc1_text(cose)
