# Signer certificate reading (firmware/kiosk/der.py, kiosk/trust.py): keys,
# validity (UTCTime and GeneralizedTime), extended key usage, and refusal of
# malformed, oversized or unsupported certificates.

from sigdata import b64, hexint, unhex, vectors

from kiosk import der, trust


def test_good_certificates_parse_like_the_host_reads_them():
    for v in vectors("der")["good"]:
        info, err = der.parse_certificate(b64(v["der"]))
        assert err is None, (v["label"], err)
        assert info.key_type == v["key_type"], v["label"]
        assert info.not_before == v["not_before"], v["label"]
        assert info.not_after == v["not_after"], v["label"]
        assert info.eku == v["eku"], v["label"]
        assert info.eku_critical == v["eku_critical"], v["label"]
        if v["key_type"] == "ec":
            assert info.ec_point == unhex(v["point"])
        else:
            assert info.rsa_n == hexint(v["n"]) and info.rsa_e == v["e"]


def test_key_usage_gives_the_kinds_a_signer_may_sign():
    for v in vectors("der")["good"]:
        signer, err = trust.signer_from_der(b"12345678", b64(v["der"]))
        assert err is None, v["label"]
        assert sorted(signer.kinds) == sorted(v["kinds"]), v["label"]


def test_bad_certificates_are_refused_with_a_reason():
    for v in vectors("der")["bad"]:
        info, err = der.parse_certificate(b64(v["der"]))
        assert info is None, v["label"]
        assert err.startswith("cert_"), (v["label"], err)
        if "reason" in v:
            assert err == v["reason"], (v["label"], err)


def test_times_and_oids():
    # 2021-07-15 00:00:00Z as UTCTime and GeneralizedTime
    assert der.parse_time(b"210715000000Z", 0x17, 0, 13) == 1626307200
    assert der.parse_time(b"20210715000000Z", 0x18, 0, 15) == 1626307200
    assert der.parse_time(b"500101000000Z", 0x17, 0, 13) == -631152000  # 1950
    assert der.parse_time(b"20500101000000Z", 0x18, 0, 15) == 2524608000
    for bad in (b"2107150000Z", b"211315000000Z", b"210715000000+", b"21071500000AZ"):
        try:
            der.parse_time(bad, 0x17, 0, len(bad))
            raise AssertionError(bad)
        except der.DERError:
            pass
    dcc_v = b"\x2b\x06\x01\x04\x01\x8e\x37\x8f\x65\x01\x02"
    assert der.oid_str(dcc_v) == "1.3.6.1.4.1.1847.2021.1.2"
    assert der.oid_str(b"\x55\x1d\x25") == "2.5.29.37"
    assert der.oid_str(b"\x2b\x86") is None  # unterminated arc
    assert der.oid_str(b"") is None


def test_trust_list_from_body_skips_bad_entries_and_keeps_the_rest():
    body = vectors("hc1")["trust_body"]
    tl, err = trust.from_body(body)
    assert err is None and len(tl) == len(body["keys"]) and tl.skipped == []
    good = body["keys"][0]
    broken = {"keys": [good, {"kid": "AAAAAAAAAAA=", "cert": "bm90IGEgY2VydA=="},
                       {"kid": "short", "cert": good["cert"]}, "junk", {"cert": good["cert"]}]}
    tl, err = trust.from_body(broken)
    assert err is None and len(tl) == 1
    assert [i for i, _ in tl.skipped] == [1, 2, 3, 4]
    assert trust.from_body({"keys": "x"}) == (None, trust.R_NOT_A_LIST)
    assert trust.from_body([]) == (None, trust.R_NOT_A_LIST)
    assert trust.from_body({"keys": [good] * 65}) == (None, trust.R_TOO_MANY)


def test_find_returns_every_signer_with_the_kid_in_order():
    body = vectors("hc1")["trust_body"]
    tl, _ = trust.from_body(body)
    kid = b64(body["keys"][0]["kid"])
    found = tl.find(kid)
    assert len(found) == 2 and found[0] is tl.signers[0]
    assert tl.find(b"nothere!") == []
