# Operator-signed fleet documents (firmware/kiosk/docs.py): valid policy and
# trust list documents, and every rejection reason (not_jws, bad_header,
# bad_signature, bad_payload, wrong_kind, old_serial, same_serial, stale,
# too_large).

from sigdata import b64, vectors

from kiosk import docs


def test_every_case_gives_the_expected_reason():
    v = vectors("docs")
    key = b64(v["operator_key"])
    reasons = set()
    for c in v["cases"]:
        doc, reason = docs.verify(c["text"], key, c["kind"], c["held"], c["now"])
        assert reason == c["expect"], (c["label"], reason)
        if reason is None:
            assert doc["kind"] == c["kind"] and isinstance(doc["body"], dict), c["label"]
        else:
            assert doc is None
        reasons.add(reason)
    assert reasons == {None, "not_jws", "bad_header", "bad_signature", "bad_payload",
                       "wrong_kind", "old_serial", "same_serial", "stale", "too_large"}


def test_bytes_input_and_a_bad_key():
    v = vectors("docs")
    c = v["cases"][0]
    key = b64(v["operator_key"])
    doc, reason = docs.verify(c["text"].encode(), key, c["kind"], 0, c["now"])
    assert reason is None and doc["serial"] == 5
    assert docs.verify(b"\xff\xfe", key, "policy", 0, None) == (None, "not_jws")
    assert docs.verify(c["text"], key[:64], "policy", 0, None) == (None, "bad_operator_key")
    assert docs.verify(None, key, "policy", 0, None) == (None, "not_jws")


def test_base64url_is_strict():
    assert docs.b64url_decode("aGk") == b"hi"
    assert docs.b64url_decode("_-8") == b"\xff\xef"
    for bad in ("aGk=", "a+8", "a/8", "aGk!", "a", "a b"):
        assert docs.b64url_decode(bad) is None, bad
