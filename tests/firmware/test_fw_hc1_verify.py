# HC1 signature verification (firmware/kiosk/hc1.py verify) with a trust
# list: PS256 and ES256, tagged and untagged COSE, kid in either header,
# duplicate kids, key usage, expiry, clock unknown, and every rejection reason.

from sigdata import vectors

from kiosk import cbor, hc1, trust


def _trust():
    tl, err = trust.from_body(vectors("hc1")["trust_body"])
    assert err is None
    return tl


def test_every_case_gives_the_expected_reason():
    tl = _trust()
    reasons = set()
    for c in vectors("hc1")["cases"]:
        cert, err = hc1.read(c["text"])
        assert err is None, (c["label"], err)
        got = hc1.verify(cert, tl, c["now"])
        assert got == c["expect"], (c["label"], got)
        if c["expect"] is None:
            assert cert.kind == c["kind"], c["label"]
        reasons.add(got)
    assert reasons == {None, "no_signer", "bad_signature", "unsupported_alg", "expired",
                       "signer_expired", "not_yet_valid", "wrong_key_usage"}


def test_rules_fields_are_reachable():
    tl = _trust()
    seen = set()
    for c in vectors("hc1")["cases"]:
        if c["expect"] is not None:
            continue
        cert, _ = hc1.read(c["text"])
        e = cert.entry
        fields = {"v": ("dn", "sd", "dt", "mp"), "t": ("tt", "sc", "tr"), "r": ("fr", "df", "du")}
        for f in fields[cert.kind]:
            assert f in e, (c["label"], f)
        assert cert.entries()[0] is e
        assert isinstance(cert.exp, int) and isinstance(cert.iat, int)
        seen.add(cert.kind)
    assert seen == {"v", "t", "r"}
    assert tl is not None


def test_empty_trust_list_finds_no_signer():
    c = vectors("hc1")["cases"][0]
    cert, _ = hc1.read(c["text"])
    assert hc1.verify(cert, trust.TrustList(), c["now"]) == "no_signer"


def test_sig_structure_digest_matches_a_full_encoding():
    import hashlib

    c = vectors("hc1")["cases"][0]
    cert, _ = hc1.read(c["text"])
    full = cbor.encode(["Signature1", cert.protected, b"", cert.payload])
    assert hc1.signed_digest(cert) == hashlib.sha256(full).digest()


def test_cbor_encoder_round_trips():
    for v in (0, 23, 24, 255, 256, 65535, 65536, 2 ** 32, -1, -25, -2 ** 40, b"", b"x" * 300,
              "", "Nguyễn", [1, [2, [3]]], {1: -7, 4: b"kid"}, True, False, None):
        assert cbor.decode(cbor.encode(v)) == v, v
    try:
        cbor.encode(1.5)
        raise AssertionError("float encoded")
    except ValueError:
        pass
