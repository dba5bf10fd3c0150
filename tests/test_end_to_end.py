"""One check-in path, end to end, on real parts.

A virtual kiosk (the real firmware under the MicroPython unix port, its
scanner on a pseudo-terminal driven by pyserial) → a real Mosquitto with the
project's config → the bridge (paho-mqtt, SQLite spool) → the city-backend
emulator over HTTP. 200 scanned codes of every kind, garbage included. The
bridge publishes the operator-signed trust list the kiosk verifies HC1
certificates with, and answers the kiosk's online checks of identity codes
from the backend's status API.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import BRIDGE_PASSWORD, wait_for

from kiosk.journal import pending_in
from kiosk.policycheck import DEFAULT_BODY  # the firmware's own code, on CPython
from kiosk.version import VERSION
from mqtt_bridge.documents import save_private_key
from mqtt_bridge.verify import answer_from_status
from simulator import codes as sample_codes
from simulator.backend import person_status
from simulator.broker import Broker
from simulator.codes import PASS, REFUSED, UNREADABLE, Sample, SampleFactory
from simulator.kiosk import VirtualKiosk, kiosk_config
from simulator.stack import ServiceProcess, start_bridge

VENUE = "HCM-Q1-000123"
DEVICE = "kiosk-e2e-01"
LED_FOR = {PASS: "green", REFUSED: "red", UNREADABLE: "amber"}

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(
    tmp_path: Path, broker: Broker, backend: ServiceProcess
) -> Iterator[tuple[Broker, ServiceProcess, ServiceProcess]]:
    # The operator's key, policy and trust list: the bridge signs and publishes them
    # (retained). The policy is the kiosks' default with generous online deadlines, so
    # a busy test host cannot turn an answer into a timeout.
    docs = tmp_path / "operator"
    docs.mkdir()
    save_private_key(sample_codes.test_pki().operator_key, docs / "operator.pem")
    policy = copy.deepcopy(DEFAULT_BODY)
    policy["levels"]["2"]["identity"]["deadline_ms"] = 8000
    (docs / "policy.json").write_text(json.dumps(policy))
    (docs / "trust.json").write_text(json.dumps(SampleFactory.trust_body()))
    bridge = start_bridge(tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url,
                          ["--operator-key", str(docs / "operator.pem"),
                           "--policy", str(docs / "policy.json"),
                           "--trust", str(docs / "trust.json"), "--verify-deadline", "6"])
    try:
        yield broker, backend, bridge
    finally:
        bridge.stop()


def scan_and_wait(kiosk: VirtualKiosk, sample: Sample) -> None:
    """Show one code to the scanner and wait until the kiosk has answered it."""
    assert kiosk.scanner is not None
    before = len(kiosk.display.verdicts())
    if sample.terminated:
        kiosk.scanner.scan(sample.payload)
    else:
        kiosk.scanner.write_raw(sample.payload)
    wait_for(lambda: len(kiosk.display.verdicts()) > before, what=f"answer to {sample.label}")


def expected_verdict(sample: Sample) -> tuple[str, str, str | None]:
    """(verdict, how, reason) for a well-formed code: certificates are verified on
    the kiosk; identity codes get the backend's answer through the bridge."""
    if sample.type == "hc1":
        return "pass", "verified", None
    answer = answer_from_status(person_status(sample.ident or ""))
    return answer.result, "online", answer.reason


def test_two_hundred_codes_from_scanner_to_backend(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess, ServiceProcess]
) -> None:
    broker, backend, _bridge = stack
    broker.add_account(DEVICE, "kiosk-secret")
    broker.restart()  # load the kiosk's account; the bridge reconnects by itself
    samples = SampleFactory(seed=2021).stream(200, bad_ratio=0.2)
    expected = [s for s in samples if s.expect == PASS]
    kinds = {s.expect for s in samples}
    assert kinds == {PASS, REFUSED, UNREADABLE}
    assert {s.type for s in expected} == {"hc1", "pccovid", "cccd"}

    started = int(time.time())
    kiosk = VirtualKiosk(tmp_path / DEVICE, kiosk_config(
        DEVICE, VENUE, "GATE-1", broker.port, "kiosk-secret",
        operator_key=SampleFactory.operator_key_b64()))
    kiosk.start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: re.search(r"trust document \d+ in use", kiosk.console())
                 and re.search(r"policy document \d+ in use", kiosk.console()),
                 what="the trust list the bridge published, verified by the kiosk")
        # The emulator builds its people on first use (seconds of CPU, more on a busy host).
        httpx.get(backend.url + "/api/v1/status/warm-up", timeout=60)
        for s in samples:
            scan_and_wait(kiosk, s)

        # The kiosk showed the right verdict for each code, in order.
        shown = kiosk.display.verdicts()
        for e, s in zip(shown, samples, strict=True):
            if s.expect == PASS:
                verdict, _how, _reason = expected_verdict(s)
                if verdict == "pass":
                    assert e["lines"][0] == "HOP LE - MOI VAO" and e["buzz"] == "pass"
                    assert e["led"] == "green"
                else:
                    assert e["lines"][0].startswith("KHONG HOP LE") and e["led"] == "red"
            elif s.expect == REFUSED:
                assert e["lines"][0].startswith("KHONG HOP LE") and e["buzz"] == "fail"
            else:
                assert e["lines"][0].startswith("KHONG DOC DUOC") and e["buzz"] == "retry"
            if s.expect != PASS:
                assert e["led"] == LED_FOR[s.expect]

        # The backend holds exactly the well-formed check-ins, with the right fields.
        with httpx.Client(base_url=backend.url, timeout=5) as http:
            wait_for(lambda: http.get("/api/v1/stats").json()["total"] == len(expected),
                     timeout=30, what="every check-in at the backend")
            rows = http.get("/api/v1/checkins", params={"venue": VENUE, "limit": 1000}).json()
        held = rows["checkins"]
        assert len(held) == len(expected)
        by_seq = {r["seq"]: r for r in held}
        assert sorted(by_seq) == list(range(1, len(expected) + 1))
        for seq, s in enumerate(expected, start=1):
            r = by_seq[seq]
            assert (r["type"], r["id"]) == (s.type, s.ident)
            assert r["device"] == DEVICE and r["venue"] == VENUE and r["gate"] == "GATE-1"
            assert (r["verdict"], r["how"], r.get("reason")) == expected_verdict(s)
            assert r["fw"] == VERSION  # the firmware that took it
            assert started - 5 <= r["ts"] <= int(time.time()) + 5
        assert kiosk.alive()
        # The bridge acknowledged every check-in back to the kiosk ...
        wait_for(lambda: kiosk.acked() == len(expected), what="acks back at the kiosk")
    finally:
        kiosk.stop()
    # ... so its journal, read with the firmware's own code, holds nothing any more.
    assert pending_in(str(kiosk.state_dir / "journal")) == []
