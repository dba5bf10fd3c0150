# ECDSA P-256 verification (firmware/kiosk/p256.py) against vectors signed by
# `cryptography` on the host: valid signatures, tampered ones, out-of-range r
# and s, public keys off the curve or malformed.

from sigdata import unhex, vectors

from kiosk import p256


def test_vectors_verify_as_expected():
    n = 0
    for v in vectors("p256"):
        pub = p256.point(unhex(v["pub"]))
        ok = pub is not None and p256.verify(pub, unhex(v["digest"]), unhex(v["sig"]))
        assert ok == v["ok"], v["label"]
        n += 1
    assert n >= 20


def test_bad_points_are_refused_when_parsed():
    for v in vectors("p256"):
        if v["label"] in ("point not on curve", "x = p", "compressed point", "no 0x04 prefix",
                          "short point"):
            assert p256.point(unhex(v["pub"])) is None, v["label"]


def test_generator_is_on_the_curve_and_junk_is_not():
    assert p256.on_curve(p256.GX, p256.GY)
    assert not p256.on_curve(p256.GX, p256.GY + 1)
    assert not p256.on_curve(0, 0)
    assert not p256.on_curve(-1, 5)


def test_malformed_arguments_give_false_not_exceptions():
    v = vectors("p256")[0]
    pub = p256.point(unhex(v["pub"]))
    d = unhex(v["digest"])
    s = unhex(v["sig"])
    assert p256.verify(pub, d, s)
    assert not p256.verify(pub, d[:31], s)
    assert not p256.verify(pub, d, None)
    assert not p256.verify(None, d, s)
    assert not p256.verify((p256.GX, p256.GY + 1), d, s)
    assert p256.point(None) is None
    assert p256.point("04" * 65) is None
