"""Signature test vectors for the firmware's verifiers, made on the host with `cryptography`.

tests/conftest.py writes them once per session to `sig_vectors.json` next to
the sample file (KIOSK_TEST_SAMPLES), where tests/firmware/sigdata.py finds
them under CPython and MicroPython alike. Everything is deterministic: TEST
ONLY keys (simulator/signers.py), RFC 6979 ECDSA, PSS salts from a seeded rng.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mqtt_bridge.documents import b64url
from simulator import signers
from simulator.signers import DccSigner, TestPKI, dcc_payload, sign_hc1

P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: Viet Nam's DSC lists clientAuth, emailProtection, smartcardLogon (not critical).
VN_EKU = ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.4", "1.3.6.1.4.1.311.20.2.2"]
#: "now" of the HC1 vectors: 2026-11-25 00:00 UTC.
NOW = 1795564800
DAY = 86400


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _ecdsa(key: ec.EllipticCurvePrivateKey, msg: bytes) -> bytes:
    der = key.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def p256_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(label: str, pub: bytes, msg_digest: bytes, sig: bytes, ok: bool) -> None:
        out.append({"label": label, "pub": pub.hex(), "digest": msg_digest.hex(),
                    "sig": sig.hex(), "ok": ok})

    for i in range(6):
        key = signers.ec_key(f"vector-{i}")
        msg = f"message {i}".encode() * (i + 1)
        d = hashlib.sha256(msg).digest()
        sig = _ecdsa(key, msg)
        pub = _point(key)
        add(f"valid-{i}", pub, d, sig, True)
        if i == 0:
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            high_s = r.to_bytes(32, "big") + (P256_N - s).to_bytes(32, "big")
            add("high-s (valid ECDSA, not malleability-checked)", pub, d, high_s, True)
            add("tampered r", pub, d, _flip(sig, 31), False)
            add("tampered s", pub, d, _flip(sig, 63), False)
            add("other message", pub, hashlib.sha256(msg + b"!").digest(), sig, False)
            add("other key", _point(signers.ec_key("vector-other")), d, sig, False)
            add("r = 0", pub, d, bytes(32) + sig[32:], False)
            add("s = 0", pub, d, sig[:32] + bytes(32), False)
            add("r = n", pub, d, P256_N.to_bytes(32, "big") + sig[32:], False)
            add("s = n", pub, d, sig[:32] + P256_N.to_bytes(32, "big"), False)
            add("s = n + s", pub, d, sig[:32] + ((P256_N + s) % 2**256).to_bytes(32, "big"), False)
            add("short signature", pub, d, sig[:63], False)
            off = bytearray(pub)
            off[64] ^= 0x01  # y changed: not on the curve any more
            add("point not on curve", bytes(off), d, sig, False)
            big_x = b"\x04" + P256_P.to_bytes(32, "big") + pub[33:]
            add("x = p", big_x, d, sig, False)
            add("compressed point", b"\x02" + pub[1:33], d, sig, False)
            add("no 0x04 prefix", b"\x05" + pub[1:], d, sig, False)
            add("short point", pub[:64], d, sig, False)
    return out


def rsa_vectors() -> list[dict[str, Any]]:
    rng = random.Random(20261125)
    out: list[dict[str, Any]] = []
    for name in ("dsc-vn-rsa2048", "dsc-rsa3072", "dsc-rsa4096"):
        key = signers.rsa_key(name)
        pub = key.public_key().public_numbers()
        bits = pub.n.bit_length()

        def add(label: str, d: bytes, sig: bytes, ok: bool, n: int = pub.n, e: int = pub.e,
                bits: int = bits) -> None:
            out.append({"label": f"{bits}: {label}", "bits": bits, "n": format(n, "x"),
                        "e": e, "digest": d.hex(), "sig": sig.hex(), "ok": ok})

        for salt in (32, -1, 0, 20):
            msg = f"{name} salt {salt}".encode()
            d = hashlib.sha256(msg).digest()
            sig = signers.pss_sign(key, msg, rng, salt_len=salt)
            add(f"salt {'max' if salt < 0 else salt}", d, sig, True)
            if salt == 32:
                add("tampered signature", d, _flip(sig, len(sig) // 2), False)
                add("other message", hashlib.sha256(msg + b"!").digest(), sig, False)
                add("short signature", d, sig[1:], False)
                add("signature >= n", d, (pub.n + 1).to_bytes(len(sig), "big"), False)
                add("zero signature", d, bytes(len(sig)), False)
                other = signers.rsa_key("dsc-rsa2048-b").public_key().public_numbers()
                if other.n.bit_length() == bits:
                    add("other key", d, sig, False, n=other.n)
    # RSA-1024 is refused whatever the signature (below the 2048-bit floor)
    out.append({"label": "1024-bit modulus refused", "bits": 1024,
                "n": format((1 << 1023) | 1, "x"), "e": 65537, "digest": "00" * 32,
                "sig": "00" * 128, "ok": False})
    return out


def _cert_entry(signer: DccSigner, **extra: Any) -> dict[str, Any]:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(signer.cert_der)
    key = cert.public_key()
    entry: dict[str, Any] = {
        "der": _b64(signer.cert_der),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
    }
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        entry["eku"] = [o.dotted_string for o in ext.value]
        entry["eku_critical"] = ext.critical
    except x509.ExtensionNotFound:
        entry["eku"] = []
        entry["eku_critical"] = False
    if isinstance(key, ec.EllipticCurvePublicKey):
        entry["key_type"] = "ec"
        entry["point"] = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ).hex()
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        nums = key.public_numbers()
        entry["key_type"] = "rsa"
        entry["n"] = format(nums.n, "x")
        entry["e"] = nums.e
    entry.update(extra)
    return entry


def der_vectors(pki: TestPKI) -> dict[str, Any]:
    good = [
        _cert_entry(pki.signer("vn"), label="RSA-2048 no EKU", kinds="vtr"),
        _cert_entry(pki.signer("es256", eku="v"), label="P-256 EKU v", kinds="v"),
        _cert_entry(pki.signer("rsa4096", eku="tr"), label="RSA-4096 EKU t,r", kinds="tr"),
        _cert_entry(
            pki.signer("es256", extra_eku=["1.3.6.1.5.5.7.3.2"]),
            label="EKU without DCC OIDs", kinds="vtr",
        ),
        _cert_entry(
            pki.signer("vn", extra_eku=VN_EKU),
            label="EKU like Viet Nam's DSC (no DCC OIDs, not critical)", kinds="vtr",
        ),
        _cert_entry(
            pki.signer("es256", extra_eku=["2.23.136.1.1.14.2"], eku_critical=True),
            label="critical EKU without DCC OIDs", kinds="",
        ),
        _cert_entry(
            pki.signer("es256", extra_eku=["1.3.6.1.4.1.0.1847.2021.1.3"]),
            label="EKU in the .0.1847 arc", kinds="r",
        ),
        _cert_entry(
            pki.signer("es256-b", not_before=dt.datetime(2049, 6, 1, tzinfo=dt.UTC),
                       not_after=dt.datetime(2051, 3, 2, 12, 30, 5, tzinfo=dt.UTC)),
            label="GeneralizedTime (2050 and later)", kinds="vtr",
        ),
    ]
    der = base64.b64decode(good[0]["der"])
    bad = [
        {"label": "empty", "der": ""},
        {"label": "truncated", "der": _b64(der[: len(der) // 2])},
        {"label": "trailing garbage", "der": _b64(der + b"\x00")},
        {"label": "not DER", "der": _b64(b"hello, this is not a certificate" * 4)},
        {"label": "length too long", "der": _b64(b"\x30\x84\x7f\xff\xff\xff" + der[4:])},
        {"label": "indefinite length", "der": _b64(b"\x30\x80" + der[4:] + b"\x00\x00")},
        {"label": "too big", "der": _b64(b"\x30\x82\x30\x00" + bytes(0x3000))},
        {"label": "deep nesting", "der": _b64(b"\x30\x02" * 200)},
    ]
    # An EC key on another curve (P-384): parsed structure, unsupported key.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    k384 = ec.derive_private_key(12345, ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST ONLY P-384")])
    c384 = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(k384.public_key()).serial_number(7)
            .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
            .sign(pki.csca_key, hashes.SHA256()))
    bad.append({"label": "P-384 key", "der": _b64(c384.public_bytes(serialization.Encoding.DER)),
                "reason": "cert_unsupported_key"})
    return {"good": good, "bad": bad}


def _tamper_payload(text: str) -> str:
    """Change one byte of the signed payload, keeping the signature."""
    import zlib

    import base45

    raw = zlib.decompress(base45.b45decode(text[4:]))
    tag = cbor2.loads(raw)
    prot, unprot, payload, sig = tag.value
    payload = payload.replace(b"Nguy", b"Nguz", 1)
    return signers.hc1_text(cbor2.dumps(cbor2.CBORTag(18, [prot, dict(unprot), payload, sig])))


def _tamper_signature(text: str) -> str:
    import zlib

    import base45

    raw = zlib.decompress(base45.b45decode(text[4:]))
    obj = cbor2.loads(raw)
    prot, unprot, payload, sig = obj.value
    return signers.hc1_text(
        cbor2.dumps(cbor2.CBORTag(18, [prot, dict(unprot), payload, _flip(sig, 7)]))
    )


def hc1_vectors(pki: TestPKI) -> dict[str, Any]:
    rng = random.Random(42)
    vn = pki.signer("vn")
    es = pki.signer("es256")
    r3072 = pki.signer("rsa3072")
    r4096 = pki.signer("rsa4096")
    only_t = pki.signer("es256-b", eku="t")
    old_arc = pki.signer("rsa2048-b", extra_eku=["1.3.6.1.4.1.0.1847.2021.1.2"])
    expired_signer = pki.signer("es256", not_before=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
                                not_after=dt.datetime(2026, 6, 30, tzinfo=dt.UTC))
    future_signer = pki.signer("es256", not_before=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
                               not_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    not_trusted = pki.signer("es256-b")  # es256-b with no EKU: never in the trust list
    vn_like = pki.signer("rsa3072", extra_eku=VN_EKU)
    icao_only = pki.signer("rsa4096", extra_eku=["2.23.136.1.1.14.2"], eku_critical=True)
    # Trust list: duplicate kid - the wrong key first, the right one second.
    body = signers.trust_body([vn, es, r3072, r4096, only_t, old_arc, expired_signer,
                               future_signer, vn_like, icao_only])
    dup_kid = base64.b64encode(es.kid).decode()
    wrong_first = {"kid": _b64(vn.kid), "cert": _b64(pki.signer("rsa2048-b").cert_der)}
    body["keys"].insert(0, wrong_first)  # same kid as "vn", other key: tried first, fails
    body["keys"].insert(0, {"kid": dup_kid, "cert": _b64(pki.signer("es256-b").cert_der)})

    iat = NOW - 30 * DAY
    exp = NOW + 335 * DAY
    cases: list[dict[str, Any]] = []

    def case(label: str, text: str, expect: str | None, *, now: int | None = NOW,
             kind: str | None = None) -> None:
        cases.append({"label": label, "text": text, "now": now, "expect": expect, "kind": kind})

    def cert(signer: DccSigner, kind: str = "v", **kw: Any) -> str:
        uvci = f"URN:UVCI:01:VN:{signer.name}-{kind}-{len(cases):04d}#A"
        ia = kw.pop("iat", iat)
        ex = kw.pop("exp", exp)
        return sign_hc1(signer, dcc_payload(kind, uvci), iat=ia, exp=ex, rng=rng, **kw)

    for kind in "vtr":
        case(f"PS256 RSA-2048 {kind}", cert(vn, kind), None, kind=kind)
        case(f"ES256 {kind}", cert(es, kind), None, kind=kind)
    case("PS256 RSA-3072", cert(r3072), None, kind="v")
    case("PS256 RSA-4096 salt max", cert(r4096, "t", salt_len=-1), None, kind="t")
    case("PS256 salt max", cert(vn, salt_len=-1), None, kind="v")
    case("untagged COSE PS256", cert(vn, tagged=False), None, kind="v")
    case("untagged COSE ES256", cert(es, "r", tagged=False), None, kind="r")
    case("kid in the unprotected header", cert(es, kid_protected=False), None, kind="v")
    case("duplicate kid: second ES256 signer verifies", cert(es), None, kind="v")
    case("duplicate kid: second RSA signer verifies", cert(vn, "t"), None, kind="t")
    case("EKU test only, test certificate", cert(only_t, "t"), None, kind="t")
    case("EKU test only, vaccination certificate", cert(only_t, "v"), "wrong_key_usage")
    case("EKU test only, recovery certificate", cert(only_t, "r"), "wrong_key_usage")
    case("EKU .0.1847 arc vaccination", cert(old_arc, "v"), None, kind="v")
    case("EKU .0.1847 arc test", cert(old_arc, "t"), "wrong_key_usage")
    case("EKU like Viet Nam's DSC", cert(vn_like, "r"), None, kind="r")
    case("critical EKU without DCC OIDs", cert(icao_only, "t"), "wrong_key_usage")
    case("expired (exp < now)", cert(vn, exp=NOW - 1), "expired")
    case("expired ES256", cert(es, exp=NOW - DAY), "expired")
    case("no exp claim", cert(es, exp=None), "expired")
    case("iat in the future", cert(es, iat=NOW + 2 * DAY), "not_yet_valid")
    case("iat a minute ahead (clock skew)", cert(es, iat=NOW + 60), None, kind="v")
    case("signer expired", cert(expired_signer), "signer_expired")
    case("signer not yet valid", cert(future_signer), "not_yet_valid")
    case("clock unknown: dates not checked", cert(vn, exp=NOW - DAY), None, now=None, kind="v")
    case("clock unknown: signature still checked", _tamper_signature(cert(vn)), "bad_signature",
         now=None)
    case("kid not in the trust list", cert(not_trusted), "no_signer")
    case("tampered payload PS256", _tamper_payload(cert(vn)), "bad_signature")
    case("tampered payload ES256", _tamper_payload(cert(es)), "bad_signature")
    case("tampered signature PS256", _tamper_signature(cert(vn)), "bad_signature")
    case("tampered signature ES256", _tamper_signature(cert(es)), "bad_signature")
    # alg -8 (EdDSA) in the header: not supported, whatever the signature
    uvci = "URN:UVCI:01:VN:ALG#A"
    payload = signers.claims(dcc_payload("v", uvci), iat=iat, exp=exp)
    case("alg EdDSA", signers.hc1_text(signers.cose_sign1(es, payload, rng, alg=-8)),
         "unsupported_alg")
    # ES256 header on an RSA signature (alg / key mismatch)
    case("alg ES256 with an RSA signer", signers.hc1_text(
        signers.cose_sign1(vn, payload, rng, alg=-7)), "bad_signature")
    return {"trust_body": body, "now": NOW, "cases": cases}


def _jws(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64url(_ecdsa(key, f'{h}.{p}'.encode()))}"


def doc_vectors(pki: TestPKI) -> dict[str, Any]:
    op = pki.operator_key
    other = signers.ec_key("not-the-operator")
    hdr = {"alg": "ES256", "typ": "kiosk-doc"}
    now = NOW
    good = {"v": 1, "kind": "policy", "serial": 5, "issued": now - DAY, "expires": now + 30 * DAY,
            "body": {"level": 2}}
    cases: list[dict[str, Any]] = []

    def case(label: str, text: str, expect: str | None, kind: str = "policy", held: int = 0,
             at: int | None = now) -> None:
        cases.append({"label": label, "text": text, "kind": kind, "held": held, "now": at,
                      "expect": expect})

    text = _jws(op, hdr, good)
    case("valid policy", text, None)
    case("valid policy, held serial 4", text, None, held=4)
    case("valid policy, clock unknown", text, None, at=None)
    case("trust list from the host signer", pki.trust_document([pki.signer("vn")], serial=9),
         None, kind="trust", held=8)
    case("same serial", text, "same_serial", held=5)
    case("older serial", text, "old_serial", held=6)
    case("wrong kind", text, "wrong_kind", kind="trust")
    case("stale", text, "stale", at=now + 31 * DAY)
    case("stale but clock unknown", text, None, at=None)
    case("signed by another key", _jws(other, hdr, good), "bad_signature")
    h, p, s = text.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(p + "=="))
    tampered["serial"] = 6
    p2 = b64url(json.dumps(tampered, separators=(",", ":")).encode())
    case("payload changed after signing", f"{h}.{p2}.{s}", "bad_signature")
    case("signature cut", f"{h}.{p}.{s[:40]}", "bad_signature")
    case("unsigned (alg none)", _jws(op, {"alg": "none", "typ": "kiosk-doc"}, good)
         .rsplit(".", 1)[0] + ".", "bad_header")
    case("other typ", _jws(op, {"alg": "ES256", "typ": "JWT"}, good), "bad_header")
    case("extra header field", _jws(op, {**hdr, "kid": "x"}, good), "bad_header")
    case("header not JSON", b64url(b"{nope") + "." + p + "." + s, "bad_header")
    case("two parts", f"{h}.{p}", "not_jws")
    case("four parts", f"{h}.{p}.{s}.x", "not_jws")
    case("not base64url", f"{h}.{p}!.{s}", "not_jws")
    case("padded base64", f"{h}=.{p}.{s}", "not_jws")
    case("empty", "", "not_jws")
    case("version 2", _jws(op, hdr, {**good, "v": 2}), "bad_payload")
    case("serial not an integer", _jws(op, hdr, {**good, "serial": "5"}), "bad_payload")
    case("body not an object", _jws(op, hdr, {**good, "body": [1]}), "bad_payload")
    case("unknown kind", _jws(op, hdr, {**good, "kind": "firmware"}), "bad_payload")
    big = {**good, "body": {"pad": "x" * 16000}}
    case("over 16 KiB", _jws(op, hdr, big), "too_large")
    return {"operator_key": pki.operator_key_b64, "cases": cases}


def write_vectors(path: Path) -> None:
    """Write every vector set as one JSON file."""
    pki = TestPKI()
    vectors = {
        "p256": p256_vectors(),
        "rsa": rsa_vectors(),
        "der": der_vectors(pki),
        "hc1": hc1_vectors(pki),
        "docs": doc_vectors(pki),
    }
    path.write_text(json.dumps(vectors))
