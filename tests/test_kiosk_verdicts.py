"""The kiosk decides for real: a virtual kiosk (the firmware on MicroPython)
against a real Mosquitto, with operator-signed policy and trust documents.

Every rule and every rejection reason must be visible twice: on the display
(Vietnamese, folded to ASCII) and in the check-in (`verdict`, `how`,
`reason`). The bridge's part (acks, the online check's answers, publishing
the signed documents) is played by a small paho client here; the bridge's
real verify service is tested with the bridge.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
import pytest
from conftest import BRIDGE_PASSWORD, wait_for

from kiosk import ui  # the firmware's own texts, on CPython
from mqtt_bridge.documents import b64url, b64url_decode, sign_document
from simulator import signers
from simulator.broker import BRIDGE_USER, Broker
from simulator.kiosk import VirtualKiosk, kiosk_config

VENUE = "HCM-Q1-000123"
DEVICE = "kiosk-v1"
NOW = datetime.now(UTC)
TODAY = NOW.date()
PKI = signers.TestPKI()
RAT, PCR = "LP217198-3", "LP6464-4"
DENIED_CCCD = "079201000666"
DENIED_UVCI = "URN:UVCI:01:VN:DENIED#1"
SALT = "5a17c0ffee5a17c0ffee5a17c0ffee00"


def _deny_hashes(*idents: str) -> list[str]:
    return [hashlib.sha256(bytes.fromhex(SALT) + i.encode()).hexdigest() for i in idents]


def policy_body(level: int = 2, **identity: Any) -> dict[str, Any]:
    """The city's policy for these tests: level 2 admits vaccination, test and
    recovery certificates and asks identity codes online (2 s); level 3 also
    refuses identity codes when no answer comes."""
    ident = {"online": True, "deadline_ms": 2000, "offline": "admit_unverified"}
    ident.update(identity)
    level2 = {
        "vaccination": {"complete": True, "min_days": 14, "max_days": 365,
                        "products": ["EU/1/20/1528", "EU/1/20/1507"]},
        "test": {"types": [RAT, PCR], "max_hours": 72},
        "recovery": {"min_days": 11, "max_days": 180},
        "identity": ident,
    }
    level3 = dict(level2, identity=dict(ident, offline="refuse"))
    return {"level": level, "levels": {"2": level2, "3": level3},
            "deny": {"salt": SALT, "sha256": _deny_hashes(DENIED_CCCD, DENIED_UVCI)},
            "dedup_s": 30}


class TestBridge:
    """Acks check-ins, answers online checks from a table, publishes documents."""

    __test__ = False

    def __init__(self, port: int, answers: dict[str, tuple[str, str | None] | None]) -> None:
        self.answers = answers  # id -> (result, reason), or None: never answer
        self.checkins: dict[int, dict[str, Any]] = {}
        self.asked: list[str] = []
        self.status: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-bridge")
        self.client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("kiosk/+/checkin", 1), ("kiosk/+/status", 1), ("kiosk/+/verify", 0)])
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, what="test bridge subscribed")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[1]
        if msg.topic.endswith("/status"):
            self.status[device] = msg.payload
        elif msg.topic.endswith("/verify"):
            req = json.loads(msg.payload)
            with self._lock:
                self.asked.append(req["id"])
            answer = self.answers.get(req["id"])
            if answer is not None:
                client.publish(f"kiosk/{device}/verify/result", json.dumps(
                    {"v": 1, "rid": req["rid"], "result": answer[0], "reason": answer[1]}))
        else:
            record = json.loads(msg.payload)
            with self._lock:
                self.checkins[record["seq"]] = record
            client.publish(f"kiosk/{device}/ack", json.dumps({"v": 1, "seq": [record["seq"]]}),
                           qos=1)

    def publish_document(self, kind: str, text: str) -> None:
        """Retained on fleet/<kind>, as the bridge publishes the operator's documents."""
        self.client.publish(f"fleet/{kind}", text, qos=1, retain=True).wait_for_publish(5)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.checkins[k] for k in sorted(self.checkins)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def verdict_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    b.add_account(DEVICE, "pw-" + DEVICE)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def make_kiosk(tmp_path: Path, broker: Broker, **kw: Any) -> VirtualKiosk:
    cfg = kiosk_config(DEVICE, VENUE, "A", broker.port, "pw-" + DEVICE,
                       operator_key=PKI.operator_key_b64)
    return VirtualKiosk(tmp_path / DEVICE, cfg, **kw)


def wait_connected(bridge: TestBridge) -> None:
    wait_for(lambda: bridge.status.get(DEVICE) == b"online", what="kiosk connected")


def expected_screen(verdict: str, how: str, reason: str | None, name: str = "") -> list[str]:
    """The two LCD lines the firmware's ui module gives for this verdict."""
    if verdict == "pass":
        head = "MOI VAO-HAU KIEM" if how == "unverified" else "HOP LE - MOI VAO"
        return [ui.fit(head), ui.fit(ui.mask_name(name))]
    head = "CHUA XAC MINH" if reason in ui.UNCHECKED else "KHONG HOP LE"
    return [ui.fit(head), ui.fit(ui.REASONS[reason or ""])]


# -- certificates ----------------------------------------------------------------


def _day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def hc1(signer: signers.DccSigner, kind: str, uvci: str, *, day: int = 30,
        iat_days: int = 10, exp_days: int = 300, tamper: bool = False, alg: int | None = None,
        **entry: Any) -> str:
    dcc = signers.dcc_payload(kind, uvci, day=_day(day), **entry)
    iat = int((NOW - timedelta(days=iat_days)).timestamp())
    exp = int((NOW + timedelta(days=exp_days)).timestamp())
    rng = random.Random(uvci)
    claims = signers.claims(dcc, iat=iat, exp=exp)
    if alg is not None:
        return signers.hc1_text(signers.cose_sign1(signer, claims, rng, alg=alg))
    if not tamper:
        return signers.sign_hc1(signer, dcc, iat=iat, exp=exp, rng=rng)
    cose = cbor2.loads(signers.cose_sign1(signer, claims, rng))
    protected, unprotected, payload, signature = cose.value
    sig = bytearray(signature)
    sig[10] ^= 0x01
    tampered = cbor2.CBORTag(18, [protected, unprotected, payload, bytes(sig)])
    return signers.hc1_text(cbor2.dumps(tampered))


def certificate_cases() -> list[tuple[str, str, str, str | None]]:
    """(HC1 text, verdict, how, reason) covering every rule and rejection."""
    vn, es = PKI.signer("vn"), PKI.signer("es256")
    vax_only = PKI.signer("rsa2048-b", eku="v")
    old = PKI.signer("es256-b", not_after=datetime(2024, 1, 1, tzinfo=UTC))
    stranger = PKI.signer("rsa3072")  # not in the trust list
    ok = ("pass", "verified", None)

    def fail(reason: str, how: str = "verified") -> tuple[str, str, str]:
        return ("fail", how, reason)

    cases = [
        (hc1(vn, "v", "URN:UVCI:01:VN:V-OK#1"), *ok),  # PS256, RSA-2048 like Viet Nam's
        (hc1(es, "t", "URN:UVCI:01:VN:T-OK#1", day=1), *ok),  # ES256
        (hc1(vax_only, "v", "URN:UVCI:01:VN:V-OK#2", dn=3, sd=3, mp="EU/1/20/1507"), *ok),
        (hc1(vn, "r", "URN:UVCI:01:VN:R-OK#1", day=30), *ok),
        (hc1(vn, "v", "URN:UVCI:01:VN:V-1DOSE", dn=1), *fail("too_few_doses")),
        (hc1(vn, "v", "URN:UVCI:01:VN:V-NEW", day=5), *fail("too_recent")),
        (hc1(vn, "v", "URN:UVCI:01:VN:V-OLD", day=400), *fail("vaccination_expired")),
        (hc1(es, "v", "URN:UVCI:01:VN:V-PROD", mp="EU/1/21/1529"), *fail("vaccine_product")),
        (hc1(es, "t", "URN:UVCI:01:VN:T-TYPE", day=1, tt="LP0000-0"), *fail("test_type")),
        (hc1(es, "t", "URN:UVCI:01:VN:T-POS", day=1, tr="260373001"), *fail("positive_test")),
        (hc1(es, "t", "URN:UVCI:01:VN:T-OLD", day=4), *fail("test_expired")),
        (hc1(vn, "r", "URN:UVCI:01:VN:R-NEW", day=5), *fail("recovery_too_recent")),
        (hc1(vn, "r", "URN:UVCI:01:VN:R-OLD", day=200, du=_day(20)), *fail("recovery_expired")),
        (hc1(vn, "v", "URN:UVCI:01:VN:SIG", tamper=True), *fail("bad_signature")),
        (hc1(stranger, "v", "URN:UVCI:01:VN:WHO"), *fail("no_signer")),
        (hc1(vax_only, "t", "URN:UVCI:01:VN:EKU", day=1), *fail("wrong_key_usage")),
        (hc1(vn, "v", "URN:UVCI:01:VN:EXP", iat_days=400, exp_days=-1), *fail("expired")),
        (hc1(vn, "v", "URN:UVCI:01:VN:IAT", iat_days=-3), *fail("not_yet_valid")),
        (hc1(old, "v", "URN:UVCI:01:VN:DSC-OLD"), *fail("signer_expired")),
        (hc1(vn, "v", DENIED_UVCI), *fail("denied", how="refused")),
        (hc1(es, "v", "URN:UVCI:01:VN:ALG", alg=-35), *fail("unsupported_alg")),  # ES384
        (hc1(vn, "v", "URN:UVCI:01:VN:TG", tg="840539007"), *fail("disease")),
        (hc1(vn, "v", "URN:UVCI:01:VN:DN", dn="two"), *fail("bad_entry")),
    ]
    return cases


def trust_document(serial: int = 1, **kw: Any) -> str:
    signers_ = [PKI.signer("vn"), PKI.signer("es256"), PKI.signer("rsa2048-b", eku="v"),
                PKI.signer("es256-b", not_after=datetime(2024, 1, 1, tzinfo=UTC))]
    return PKI.trust_document(signers_, serial, **kw)


def cccd(number: str, name: str = "Trần Thị Bình") -> str:
    return f"{number}||{name}|01011990|Nữ|12 Lê Lợi, Q1|15082021"


# -- tests ---------------------------------------------------------------------


def test_every_certificate_rule_and_reason_on_the_display_and_in_the_checkin(
    tmp_path: Path, verdict_broker: Broker
) -> None:
    cases = certificate_cases()
    bridge = TestBridge(verdict_broker.port, {})
    kiosk = make_kiosk(tmp_path, verdict_broker)
    kiosk.install_document("trust", trust_document())
    kiosk.install_document("policy", PKI.policy_document(policy_body()))
    kiosk.start()
    try:
        kiosk.wait_ready()
        assert kiosk.scanner is not None
        # Scanner setup at boot: continuous mode, CR tail, 9600 baud, saved.
        assert kiosk.scanner.mode == 2 and kiosk.scanner.zones[0x60] & 0x60 == 0
        assert kiosk.scanner.zones[0x2A:0x2C] == b"\x39\x01"
        assert kiosk.scanner.flash == bytes(kiosk.scanner.zones)
        for text, *_ in cases:
            kiosk.scanner.scan(text)
        wait_for(lambda: len(bridge.records()) == len(cases), timeout=30,
                 what="a check-in for every certificate")
        screens = kiosk.display.verdicts()
        assert len(screens) == len(cases)
        for (_text, verdict, how, reason), record, screen in zip(
                cases, bridge.records(), screens, strict=True):
            got = (record["verdict"], record["how"], record.get("reason"))
            assert got == (verdict, how, reason), (record["id"], got)
            assert record["type"] == "hc1"
            want = expected_screen(verdict, how, reason, "Nguyễn Văn An")
            assert screen["lines"] == want, (reason, screen["lines"])
            assert screen["led"] == ("green" if verdict == "pass" else "red")
            assert screen["buzz"] == verdict
            assert record["id"] not in " ".join(screen["lines"])
        console = kiosk.console()
        assert "policy document 1 in use" in console and "trust document 1 in use" in console
        assert "Nguy" not in console and DENIED_UVCI not in console  # no personal data logged
    finally:
        kiosk.stop()
        bridge.close()


def test_identity_codes_online_check_deadline_offline_rule_and_repeats(
    tmp_path: Path, verdict_broker: Broker
) -> None:
    ids = {"pass": "079201000001", "isolation": "079201000002", "silent": "079201000004",
           "refuse": "079201000005", "paused": "079201000006"}
    qid = "QIDUNKNOWN01"
    bridge = TestBridge(verdict_broker.port, {
        ids["pass"]: ("pass", None), ids["isolation"]: ("fail", "isolation"),
        qid: ("unknown", None), ids["silent"]: None, ids["refuse"]: None,
        ids["paused"]: ("pass", None)})
    kiosk = make_kiosk(tmp_path, verdict_broker)
    kiosk.install_document("policy", PKI.policy_document(policy_body()))
    kiosk.start()
    try:
        kiosk.wait_ready()
        wait_connected(bridge)
        assert kiosk.scanner is not None
        online_pass = ("pass", "online", None)
        # (code, its check-in or None, the screen shown or None)
        scans: list[tuple[str, tuple[str, str, str | None] | None,
                          tuple[str, str, str | None] | None]] = [
            (cccd(ids["pass"]), online_pass, online_pass),
            # Read again while its verdict is still up (a phone held under the
            # scanner): no new screen, no beep, no second check-in.
            (cccd(ids["pass"]), None, None),
            (cccd(ids["isolation"]), ("fail", "online", "isolation"),
             ("fail", "online", "isolation")),
            # A repeat within dedup_s once another code came between: the previous
            # verdict again, still no second check-in.
            (cccd(ids["pass"]), None, online_pass),
            (f"0792*****234|TRAN THI BINH|1990-**-**|0|{qid}|1‹0‹123456",
             ("pass", "unverified", "online_unknown"), ("pass", "unverified", "online_unknown")),
            (cccd(ids["silent"]), ("pass", "unverified", "online_timeout"),
             ("pass", "unverified", "online_timeout")),
            # After a timeout nobody waits out the deadline in turn: decided at once.
            (cccd(ids["paused"]), ("pass", "unverified", "offline"),
             ("pass", "unverified", "offline")),
            (cccd(DENIED_CCCD), ("fail", "refused", "denied"), ("fail", "refused", "denied")),
        ]
        for text, _, _ in scans:
            kiosk.scanner.scan(text)
        expected = [record for _, record, _ in scans if record]
        shown = [expected_screen(*screen, "Trần Thị Bình") for _, _, screen in scans if screen]
        wait_for(lambda: len(bridge.records()) == len(expected), timeout=20,
                 what="every identity check-in")
        wait_for(lambda: len(kiosk.display.verdicts()) == len(shown), what="every scan answered")
        got = [(r["verdict"], r["how"], r.get("reason")) for r in bridge.records()]
        assert got == expected
        assert [s["lines"] for s in kiosk.display.verdicts()] == shown
        # "checking" was shown while each online check ran; the deny list needed no question.
        checking = [e for e in kiosk.display.events if e["lines"][0] == ui.fit("DANG KIEM TRA...")]
        assert len(checking) == 4 and all(e["led"] == "blue" for e in checking)
        assert DENIED_CCCD not in bridge.asked and bridge.asked.count(ids["pass"]) == 1
        assert ids["paused"] not in bridge.asked

        # The city raises the level: a new signed policy, delivered retained, takes over;
        # without an answer (still none: the pause after the timeout) identity codes
        # are now refused.
        bridge.publish_document("policy", PKI.policy_document(policy_body(level=3), serial=2))
        wait_for(lambda: "policy document 2 in use" in kiosk.console(), what="policy 2 taken")
        kiosk.scanner.scan(cccd(ids["refuse"]))
        wait_for(lambda: len(bridge.records()) == len(expected) + 1, what="refused check-in")
        last = bridge.records()[-1]
        assert (last["verdict"], last["how"], last["reason"]) == ("fail", "refused", "offline")
        assert kiosk.display.verdicts()[-1]["lines"] == expected_screen(
            "fail", "refused", "offline")
    finally:
        kiosk.stop()
        bridge.close()


def test_bad_documents_are_rejected_and_the_last_good_one_kept_across_a_restart(
    tmp_path: Path, verdict_broker: Broker
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    bridge = TestBridge(verdict_broker.port, {})
    # The good policy: no online check, refuse -> every identity code says "not checked".
    good_body = policy_body(online=False, offline="refuse")
    good = PKI.policy_document(good_body, serial=5)
    header, payload, sig = good.split(".")
    rogue = sign_document(ec.generate_private_key(ec.SECP256R1()), "policy", 9, good_body,
                          issued=signers.DOC_ISSUED, expires=signers.DOC_EXPIRES)
    forged_payload = json.loads(b64url_decode(payload))
    forged_payload["serial"] = 9
    bad = [
        (rogue, "bad_signature"),  # signed, but not by the pinned operator key
        (header + "." + b64url(json.dumps(forged_payload).encode()) + "." + sig,
         "bad_signature"),  # tampered after signing
        (b64url(b'{"alg":"none","typ":"kiosk-doc"}') + "." + payload + ".", "bad_header"),
        (PKI.policy_document(good_body, serial=6, issued=1600000000, expires=1700000000),
         "stale"),
        (PKI.policy_document(good_body, serial=4), "old_serial"),
        (trust_document(serial=8), "wrong_kind"),
        ("hello", "not_jws"),
        (PKI.policy_document(dict(good_body, level=9), serial=7), "bad_policy"),
    ]
    kiosk = make_kiosk(tmp_path, verdict_broker)
    kiosk.start()
    try:
        kiosk.wait_ready()
        wait_connected(bridge)
        assert kiosk.scanner is not None
        # No trust list yet: a certificate cannot be verified, and says so.
        kiosk.scanner.scan(hc1(PKI.signer("vn"), "v", "URN:UVCI:01:VN:EARLY#1"))
        wait_for(lambda: len(bridge.records()) == 1, what="the early certificate's check-in")
        r0 = bridge.records()[0]
        assert (r0["verdict"], r0["how"], r0["reason"]) == ("fail", "refused", "no_trust_list")
        assert kiosk.display.verdicts()[-1]["lines"] == expected_screen(
            "fail", "refused", "no_trust_list")
        bridge.publish_document("policy", good)
        bridge.publish_document("trust", trust_document(serial=3))
        wait_for(lambda: "policy document 5 in use" in kiosk.console(), what="good policy")
        wait_for(lambda: "trust document 3 in use" in kiosk.console(), what="good trust list")
        for text, reason in bad:
            bridge.publish_document("policy", text)
            wait_for(lambda r=reason: f"policy document rejected: {r}" in kiosk.console(),
                     what=f"rejection {reason}")
        # Still the good policy: identity codes are not checked and refused.
        kiosk.scanner.scan(cccd("079201000010"))
        # And the trust list received over MQTT verifies certificates.
        kiosk.scanner.scan(hc1(PKI.signer("vn"), "v", "URN:UVCI:01:VN:TRUST#1"))
        wait_for(lambda: len(bridge.records()) == 3, what="two more check-ins")
        _, r1, r2 = bridge.records()
        assert (r1["verdict"], r1["how"], r1["reason"]) == ("fail", "refused", "not_checked")
        assert (r2["verdict"], r2["how"]) == ("pass", "verified")
    finally:
        kiosk.stop()
    assert (kiosk.state_dir / "policy.jws").read_text() == good  # stored as received

    # A restart: the stored documents are verified again; the broker still holds the
    # last bad one (retained), which is rejected again.
    kiosk.start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: kiosk.console().count("policy document rejected: bad_policy") == 2,
                 what="the retained bad policy rejected after the restart")
        assert kiosk.console().count("policy document 5 in use") == 2
        kiosk.scanner.scan(cccd("079201000011"))  # type: ignore[union-attr]
        wait_for(lambda: len(bridge.records()) == 4, what="check-in after restart")
        r3 = bridge.records()[3]
        assert (r3["verdict"], r3["how"], r3["reason"]) == ("fail", "refused", "not_checked")
    finally:
        kiosk.stop()
        bridge.close()


def test_a_silent_scanner_is_shown_and_the_kiosk_carries_on(
    tmp_path: Path, verdict_broker: Broker
) -> None:
    kiosk = make_kiosk(tmp_path, verdict_broker, scanner_silent=True)
    kiosk.start()
    try:
        kiosk.wait_ready()
        assert "GM65 setup failed: 0x0000: no answer" in kiosk.console()
        fault = kiosk.display.verdicts()[0]
        assert fault["lines"] == [ui.fit("LOI MAY QUET"), ui.fit("Kiem tra day noi")]
        assert fault["led"] == "red"
        def idle_names_the_fault() -> bool:
            kiosk.display.poll()
            return any(e["lines"][1] == ui.fit("LOI MAY QUET") for e in kiosk.display.events)

        wait_for(idle_names_the_fault, what="the idle screen names the fault")
        # Codes still arrive (the module's decoding side works): the kiosk still decides.
        assert kiosk.scanner is not None
        kiosk.scanner.scan("not a personal code")
        wait_for(lambda: len(kiosk.display.verdicts()) == 2, what="the scan answered")
        assert kiosk.display.verdicts()[1]["lines"][0] == ui.fit("KHONG DOC DUOC")
        assert kiosk.alive()
    finally:
        kiosk.stop()
