"""A virtual kiosk (the real firmware on MicroPython) against a real Mosquitto.

The bridge's role is played by a small paho client here so the kiosk's own
behaviour is tested in isolation; tests/test_end_to_end.py uses the real bridge.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import BRIDGE_PASSWORD, wait_for

from kiosk.journal import pending_in  # the firmware's own journal code, on CPython
from simulator.broker import BRIDGE_USER, Broker, free_port
from simulator.codes import PASS, SampleFactory
from simulator.kiosk import VirtualKiosk, kiosk_config

VENUE = "HCM-Q1-000123"


class AckingBridge:
    """Receives check-ins and acknowledges them the way the bridge does; answers
    online checks with "pass" (the bridge's verify service, stood in for)."""

    def __init__(self, port: int, ack: bool = True) -> None:
        self.checkins: list[dict[str, Any]] = []
        self.status: dict[str, bytes] = {}
        self.ack = ack
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-bridge")
        self.client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, what="the test bridge's subscriptions")

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe([("kiosk/+/checkin", 1), ("kiosk/+/status", 1), ("kiosk/+/verify", 0)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[1]
        if msg.topic.endswith("/status"):
            self.status[device] = msg.payload
            return
        if msg.topic.endswith("/verify"):
            rid = json.loads(msg.payload)["rid"]
            answer = json.dumps({"v": 1, "rid": rid, "result": "pass", "reason": None})
            client.publish(f"kiosk/{device}/verify/result", answer, qos=0)
            return
        record = json.loads(msg.payload)
        with self._lock:
            self.checkins.append(record)
        if self.ack:
            ack = json.dumps({"v": 1, "seq": [record["seq"]]})
            client.publish(f"kiosk/{device}/ack", ack, qos=1)

    def unique(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return {c["seq"]: c for c in self.checkins}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def make_kiosk(tmp_path: Path, broker: Broker, device: str = "kiosk-t1") -> VirtualKiosk:
    """A kiosk that pins the test operator's key and holds the samples' trust list."""
    password = f"pw-{device}"
    broker.add_account(device, password)
    kiosk = VirtualKiosk(tmp_path / device, kiosk_config(
        device, VENUE, "A", broker.port, password,
        operator_key=SampleFactory.operator_key_b64()))
    kiosk.install_document("trust", SampleFactory.trust_document())
    return kiosk


@pytest.fixture
def kiosk_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that already knows the test kiosk's account."""
    b = Broker(tmp_path / "broker")
    b.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    b.add_account("kiosk-t1", "pw-kiosk-t1")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_checkins_reach_the_broker_and_acks_empty_the_journal(
    tmp_path: Path, kiosk_broker: Broker
) -> None:
    bridge = AckingBridge(kiosk_broker.port)
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    try:
        kiosk.wait_ready()
        f = SampleFactory(3)
        samples = [f.cccd(), f.pccovid(), f.hc1("v"), f.hc1("t"), f.hc1("r"), f.cccd(False)]
        for s in samples:
            kiosk.scanner.scan(s.payload)
        wait_for(lambda: len(bridge.unique()) == len(samples), what="all check-ins at the broker")
        got = bridge.unique()
        assert [got[i + 1]["id"] for i in range(len(samples))] == [s.ident for s in samples]
        assert {c["type"] for c in got.values()} == {"cccd", "pccovid", "hc1"}
        assert all(c["device"] == "kiosk-t1" and c["venue"] == VENUE for c in got.values())
        wait_for(lambda: kiosk.acked() == len(samples), what="every check-in acked")
        assert bridge.status.get("kiosk-t1") == b"online"
    finally:
        kiosk.stop()
        bridge.close()
    # The firmware's journal, read with the firmware's own code: nothing left once acked.
    assert pending_in(str(kiosk.state_dir / "journal")) == []


def test_bad_scanner_input_shows_unreadable_and_the_kiosk_carries_on(
    tmp_path: Path, kiosk_broker: Broker
) -> None:
    bridge = AckingBridge(kiosk_broker.port)
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    f = SampleFactory(5)
    try:
        kiosk.wait_ready()
        assert kiosk.scanner is not None
        kiosk.scanner.scan(f.binary_garbage().payload)
        kiosk.scanner.scan(f.invalid_utf8().payload)
        kiosk.scanner.write_raw(f.oversized_unterminated().payload)  # 10 KB, no CR
        wait_for(lambda: len(kiosk.display.verdicts()) == 3, what="three answers")
        good = f.cccd()
        kiosk.scanner.scan(good.payload)
        wait_for(lambda: len(kiosk.display.verdicts()) == 4, what="the next code answered")
        leds = [e["led"] for e in kiosk.display.verdicts()]
        assert leds == ["amber", "amber", "amber", "green"]
        assert kiosk.display.verdicts()[0]["lines"][0].startswith("KHONG DOC DUOC")
        wait_for(lambda: len(bridge.unique()) == 1, what="the good check-in")
        assert bridge.unique()[1]["id"] == good.ident
        assert kiosk.alive()
    finally:
        kiosk.stop()
        bridge.close()


def test_scans_work_offline_and_are_sent_after_the_broker_appears(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", port=free_port())
    broker.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    kiosk = make_kiosk(tmp_path, broker).start()  # broker not started yet
    f = SampleFactory(11)
    samples = [f.well_formed() for _ in range(5)]
    bridge = None
    try:
        kiosk.wait_ready()
        for s in samples:
            kiosk.scanner.scan(s.payload)  # type: ignore[union-attr]
        # The scan path never waits on the network: every verdict is shown while offline.
        wait_for(lambda: len(kiosk.display.verdicts()) == 5, what="verdicts while offline")
        assert all(e["led"] == "green" for e in kiosk.display.verdicts())
        broker.start()
        bridge = AckingBridge(broker.port)
        wait_for(lambda: len(bridge.unique()) == 5, timeout=60, what="replay after reconnect")
        assert [bridge.unique()[i + 1]["id"] for i in range(5)] == [s.ident for s in samples]
        # Decided without the network: certificates verified on the kiosk, identity
        # codes admitted by the offline rule and flagged for post-inspection.
        for i, s in enumerate(samples, start=1):
            got = bridge.unique()[i]
            want = (("pass", "verified", None) if s.type == "hc1"
                    else ("pass", "unverified", "offline"))
            assert (got["verdict"], got["how"], got.get("reason")) == want, s.label
    finally:
        kiosk.stop()
        if bridge:
            bridge.close()
        broker.stop()


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, kiosk_broker: Broker) -> None:
    f = SampleFactory(19)
    samples = [f.well_formed() for _ in range(20)]
    bridge = AckingBridge(kiosk_broker.port)
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    try:
        kiosk.wait_ready()
        for s in samples[:10]:
            kiosk.scanner.scan(s.payload)  # type: ignore[union-attr]
        wait_for(lambda: len(bridge.unique()) == 10, what="first half delivered")
        kiosk_broker.restart()  # persistence on: sessions and queued messages survive
        for s in samples[10:]:
            kiosk.scanner.scan(s.payload)  # type: ignore[union-attr]
        wait_for(lambda: len(kiosk.display.verdicts()) == 20, what="every scan answered")
        wait_for(lambda: len(bridge.unique()) == 20, timeout=60, what="second half after restart")
        got = bridge.unique()
        assert [got[i + 1]["id"] for i in range(20)] == [s.ident for s in samples]
        assert "mqtt: down:" in kiosk.console()  # it did notice the broker going away
    finally:
        kiosk.stop()
        bridge.close()


def test_power_cut_keeps_confirmed_checkins_and_sequence(
    tmp_path: Path, kiosk_broker: Broker
) -> None:
    f = SampleFactory(13)
    first = [f.well_formed() for _ in range(4)]
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    try:
        kiosk.wait_ready()
        for s in first:
            kiosk.scanner.scan(s.payload)  # type: ignore[union-attr]
        wait_for(lambda: len(kiosk.display.verdicts()) == 4, what="four verdicts")
    finally:
        kiosk.stop(kill=True)  # SIGKILL: nobody acknowledged anything (no bridge)
    assert pending_in(str(kiosk.state_dir / "journal")) == [1, 2, 3, 4]
    bridge = AckingBridge(kiosk_broker.port)
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    try:
        kiosk.wait_ready()
        second = f.well_formed()
        kiosk.scanner.scan(second.payload)  # type: ignore[union-attr]
        wait_for(lambda: len(bridge.unique()) == 5, what="old and new check-ins")
        got = bridge.unique()
        assert [got[i]["id"] for i in range(1, 5)] == [s.ident for s in first]
        assert got[5]["id"] == second.ident  # sequence continues, never reused
    finally:
        kiosk.stop()
        bridge.close()


def test_missing_config_field_is_named_on_the_display(tmp_path: Path, kiosk_broker: Broker) -> None:
    kiosk = make_kiosk(tmp_path, kiosk_broker)
    del kiosk.config["venue"]
    kiosk.start()
    try:
        def config_error_screen() -> dict[str, Any] | None:
            kiosk.display.poll()
            errors = [e for e in kiosk.display.events if e["lines"][0].startswith("LOI CAU HINH")]
            return errors[0] if errors else None

        screen = wait_for(config_error_screen, what="config error screen")
        assert screen["lines"][1].strip() == "venue"
        assert screen["led"] == "red"
        assert "venue: location code" in kiosk.console()
        assert kiosk.alive()  # it keeps the message up rather than crash-looping
    finally:
        kiosk.stop()


@pytest.mark.parametrize("sample_kind", ["cccd", "pccovid", "hc1"])
def test_pass_screen_masks_the_name(tmp_path: Path, kiosk_broker: Broker, sample_kind: str) -> None:
    f = SampleFactory(17)
    sample = getattr(f, sample_kind)()
    assert sample.expect == PASS
    bridge = AckingBridge(kiosk_broker.port)  # answers the online check of identity codes
    kiosk = make_kiosk(tmp_path, kiosk_broker).start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: bridge.status.get("kiosk-t1") == b"online", what="kiosk connected")
        kiosk.scanner.scan(sample.payload)  # type: ignore[union-attr]
        wait_for(lambda: kiosk.display.verdicts(), what="a verdict")
        screen = kiosk.display.verdicts()[0]
        assert screen["led"] == "green" and screen["buzz"] == "pass"
        assert screen["lines"][0] == "HOP LE - MOI VAO"
        assert "*" in screen["lines"][1]
        assert sample.ident not in " ".join(screen["lines"])
    finally:
        kiosk.stop()
        bridge.close()
