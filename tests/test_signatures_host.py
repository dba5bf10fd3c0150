"""Host-side signatures: mqtt_bridge/documents.py and mqtt_bridge/hcert.py.

They run on the same vectors as the firmware's verifiers (tests/sigvectors.py)
and must give the same answers and reason codes, so a document or a
certificate is judged alike on a kiosk and on the bridge.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mqtt_bridge.documents import (
    DocumentError,
    generate_operator_key,
    load_private_key,
    operator_key_b64,
    public_key_from_b64,
    save_private_key,
    sign_document,
    verify_document,
)
from mqtt_bridge.hcert import TrustList, build_trust_body, kid_for, verify_hc1
from simulator.codes import SampleFactory
from simulator.signers import TestPKI, dcc_payload, sign_hc1


def _vectors(section: str) -> Any:
    path = Path(os.environ["KIOSK_TEST_SAMPLES"]).with_name("sig_vectors.json")
    return json.loads(path.read_text())[section]


def test_documents_round_trip_and_key_helpers(tmp_path: Path) -> None:
    key = generate_operator_key()
    text = sign_document(key, "trust", 3, {"keys": []}, issued=100, expires=200)
    doc = verify_document(text, key.public_key(), "trust", now=150)
    assert doc == {"v": 1, "kind": "trust", "serial": 3, "issued": 100, "expires": 200,
                   "body": {"keys": []}}
    b64 = operator_key_b64(key.public_key())
    assert len(base64.b64decode(b64)) == 65
    assert verify_document(text, public_key_from_b64(b64), "trust") == doc
    save_private_key(key, tmp_path / "op.pem")
    assert (tmp_path / "op.pem").stat().st_mode & 0o077 == 0
    again = load_private_key(tmp_path / "op.pem")
    assert operator_key_b64(again.public_key()) == b64


def test_sign_document_refuses_what_a_kiosk_would_refuse() -> None:
    key = generate_operator_key()
    with pytest.raises(ValueError, match="kind"):
        sign_document(key, "firmware", 1, {}, issued=1, expires=2)
    with pytest.raises(ValueError, match="serial"):
        sign_document(key, "policy", 0, {}, issued=1, expires=2)
    with pytest.raises(ValueError, match="expires"):
        sign_document(key, "policy", 1, {}, issued=2, expires=2)
    with pytest.raises(ValueError, match="bytes"):
        sign_document(key, "policy", 1, {"x": "y" * 20000}, issued=1, expires=2)
    with pytest.raises(ValueError, match="P-256"):
        sign_document(ec.generate_private_key(ec.SECP384R1()), "policy", 1, {}, issued=1,
                      expires=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        public_key_from_b64("AAAA")


def test_load_private_key_names_a_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pem"
    path.write_bytes(b"not a key")
    with pytest.raises(ValueError):
        load_private_key(path)


def test_document_vectors_give_the_firmware_s_reasons() -> None:
    v = _vectors("docs")
    key = public_key_from_b64(v["operator_key"])
    checked = 0
    for c in v["cases"]:
        if c["expect"] in ("same_serial", "old_serial"):
            continue  # the holder's business: the host has no held serial
        try:
            doc = verify_document(c["text"], key, c["kind"], now=c["now"])
            reason = None
            assert doc["kind"] == c["kind"]
        except DocumentError as e:
            reason = e.reason
        assert reason == c["expect"], c["label"]
        checked += 1
    assert checked >= 20


def test_hc1_vectors_give_the_firmware_s_reasons() -> None:
    v = _vectors("hc1")
    trust = TrustList.from_body(v["trust_body"])
    assert not trust.skipped
    for c in v["cases"]:
        r = verify_hc1(c["text"], trust, c["now"])
        assert r.reason == c["expect"], c["label"]
        assert r.ok == (c["expect"] is None)
        if r.ok:
            assert r.kind == c["kind"] and r.uvci and r.dcc is not None
            json.dumps(r.dcc)  # JSON-able


def test_reading_errors_use_the_firmware_s_codes() -> None:
    pki = TestPKI()
    trust = TrustList.from_body(build_trust_body([pki.signer("vn").cert_der]))
    assert verify_hc1("HC2:abc", trust, 0).reason == "hc1_base45"
    assert verify_hc1("HC1:abc", trust, 0).reason == "hc1_base45"
    assert verify_hc1("HC1:" + "A" * 5000, trust, 0).reason == "hc1_base45"
    # zlib header followed by garbage
    import base45

    assert verify_hc1("HC1:" + base45.b45encode(b"\x78\x9c\x01\x02").decode(), trust,
                      0).reason == "hc1_zlib"
    assert verify_hc1("HC1:" + base45.b45encode(b"\x82\x01\x02").decode(), trust,
                      0).reason == "hc1_cose"


def test_trust_body_kids_and_bad_entries() -> None:
    pki = TestPKI()
    der = pki.signer("es256").cert_der
    body = build_trust_body([der])
    assert base64.b64decode(body["keys"][0]["kid"]) == kid_for(der) == pki.signer("es256").kid
    body["keys"].append({"kid": "!!", "cert": "x"})
    body["keys"].append("junk")
    trust = TrustList.from_body(body)
    assert len(trust.signers) == 1 and [i for i, _ in trust.skipped] == [1, 2]
    with pytest.raises(ValueError):
        TrustList.from_body({"keys": {}})


def test_samples_verify_on_the_host_with_their_trust_list() -> None:
    f = SampleFactory(seed=3)
    trust = TrustList.from_body(SampleFactory.trust_body())
    algs = set()
    for s in [f.hc1() for _ in range(6)]:
        r = verify_hc1(s.payload.decode(), trust, 1795564800)  # 2026-11-25
        assert r.ok, r.reason
        assert r.uvci == s.ident
        algs.add(len(s.payload))
    doc = verify_document(SampleFactory.trust_document(), public_key_from_b64(
        SampleFactory.operator_key_b64()), "trust")
    assert doc["body"] == SampleFactory.trust_body()


def test_signing_is_deterministic() -> None:
    pki = TestPKI()
    a = sign_hc1(pki.signer("vn"), dcc_payload("v", "U:1"), iat=1, exp=2, rng=random.Random(5))
    b = sign_hc1(TestPKI().signer("vn"), dcc_payload("v", "U:1"), iat=1, exp=2,
                 rng=random.Random(5))
    assert a == b
    assert TestPKI().trust_document([pki.signer("es256")]) == pki.trust_document(
        [pki.signer("es256")])
