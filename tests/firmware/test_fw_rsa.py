# RSASSA-PSS verification (firmware/kiosk/rsa.py): RSA-2048/3072/4096, salt
# lengths 0, 20, 32 and the maximum, tampered signatures and messages, wrong
# lengths, signatures not below the modulus, keys below 2048 bits.

from sigdata import hexint, unhex, vectors

from kiosk import rsa


def test_vectors_verify_as_expected():
    sizes = set()
    for v in vectors("rsa"):
        ok = rsa.verify_pss(hexint(v["n"]), v["e"], unhex(v["digest"]), unhex(v["sig"]))
        assert ok == v["ok"], v["label"]
        if v["ok"]:
            sizes.add(v["bits"])
    assert sizes == {2048, 3072, 4096}


def test_every_salt_length_is_accepted():
    salts = set()
    for v in vectors("rsa"):
        if v["ok"]:
            salts.add(v["label"].split("salt ")[1])
    assert salts == {"32", "max", "0", "20"}


def test_bit_length_matches_python():
    for n in (1, 2, 3, 255, 256, 65537, 2 ** 2048 - 1, 2 ** 2048, 2 ** 4095 + 5):
        assert rsa.bit_length(n) == len(bin(n)) - 2
    assert rsa.bit_length(0) == 0


def test_key_checks():
    v = vectors("rsa")[0]
    n = hexint(v["n"])
    assert rsa.key_ok(n, 65537)
    assert not rsa.key_ok(n, 1)
    assert not rsa.key_ok(n, 65536)
    assert not rsa.key_ok(n + 1, 65537)  # even modulus
    assert not rsa.key_ok((1 << 1023) | 1, 65537)
    assert not rsa.key_ok((1 << 4096) | 1, 65537)
    assert not rsa.verify_pss(n, 65537, b"", unhex(v["sig"]))
    assert not rsa.verify_pss(n, 65537, unhex(v["digest"]), "not bytes")
