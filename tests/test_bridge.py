"""The bridge: payload gate, spool and forwarder units, then the real thing end to end.

Integration tests run a real Mosquitto (conftest's `broker`, with the
project's ACL), the backend emulator and `kiosk-bridge run` as subprocesses
(simulator/stack.py), and paho clients logged in as kiosks. Nothing sleeps to
synchronise: every wait is `wait_for` on an observable outcome, with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import BRIDGE_PASSWORD, wait_for
from fixtures_services import (
    DEVICE_A,
    DEVICE_B,
    KIOSK_PASSWORDS,
    Kiosk,
    backend_checkins,
    backend_stats,
    make_checkin,
    person_id,
)

from mqtt_bridge.forwarder import Backoff, Forwarder, idempotency_key
from mqtt_bridge.ingest import _BufferedClient
from mqtt_bridge.schema import CheckIn, Rejection, parse_checkin
from mqtt_bridge.spool import Spool, SpoolRow
from simulator.broker import BRIDGE_USER, Broker, free_port
from simulator.stack import ServiceProcess, start_backend, start_bridge, wait_bridge_ready

pytestmark = pytest.mark.timeout(60)

# Fast retries so outages in tests resolve within a second or two.
BRIDGE_ARGS = ["--retry-initial", "0.05", "--retry-max", "0.5", "--stats-interval", "1"]


def payload(**overrides: Any) -> bytes:
    """A valid check-in from DEVICE_A as MQTT payload bytes."""
    return json.dumps({**make_checkin(DEVICE_A), **overrides}).encode()


# -- the payload gate (mqtt_bridge.schema) ---------------------------------------------



def _publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT v5 QoS 0 PUBLISH (no properties), small enough for a 1-byte length."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + b"\x00" + payload
    return bytes([0x30, len(body)]) + body


def test_buffered_ingest_client_delivers_every_packet_a_read_brought() -> None:
    """The ingest's paho client reads the socket in large chunks (fewer system
    calls): packets that arrived together are all delivered at once, even
    though select() sees nothing more, and a packet split across reads is
    reassembled. Also guards the paho internals it relies on."""
    assert hasattr(mqtt.Client, "_sock_recv")  # paho 2.x; the override needs it
    ours, broker_end = socket.socketpair()
    ours.setblocking(False)
    client = _BufferedClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id="buffered-test", protocol=mqtt.MQTTv5)
    got: list[tuple[str, bytes]] = []
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client._sock = ours  # what connect() would have set
    try:
        third = _publish_packet("kiosk/k2/checkin", b"three")
        broker_end.sendall(_publish_packet("kiosk/k1/checkin", b"one")
                           + _publish_packet("kiosk/k1/checkin", b"two") + third[:5])
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got == [("kiosk/k1/checkin", b"one"), ("kiosk/k1/checkin", b"two")]
        broker_end.sendall(third[5:])
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got[-1] == ("kiosk/k2/checkin", b"three") and len(got) == 3
    finally:
        client._sock = None
        ours.close()
        broker_end.close()


def test_parse_accepts_the_protocol_example() -> None:
    example = (
        b'{"v":1,"device":"kiosk-q1-0001","venue":"HCM-Q1-000123","gate":"A","seq":17,'
        b'"ts":1764090000,"type":"cccd","id":"079201001234","verdict":"pass",'
        b'"how":"provisional","fw":"0.1.0"}'
    )
    record = parse_checkin(example, "kiosk-q1-0001")
    assert isinstance(record, CheckIn)
    assert record.identity == "kiosk-q1-0001:17"
    assert json.loads(record.to_json()) == json.loads(example)


REJECTIONS: list[tuple[bytes, str, int | None, str]] = [
    (payload(seq=7, how="x" * 3000), "too_large", 7, "payload: more than 2048 bytes"),
    (b"\xff\xfe not utf-8", "not_json", None, "payload: not UTF-8 JSON"),
    (b'{"v":1,"seq":', "not_json", None, "payload: not UTF-8 JSON"),
    (b'{"v":NaN}', "not_json", None, "payload: not UTF-8 JSON"),
    (b"[" * 2000, "not_json", None, "payload: not UTF-8 JSON"),
    (b"[1,2]", "invalid", None, "payload: must be a JSON object"),
    (b'{"seq":1,"seq":2}', "invalid", None, "payload: duplicate key"),
    (payload(seq=3, verdict="maybe"), "invalid", 3, "verdict: must be 'pass' or 'fail'"),
    (payload(seq=4, extra="x"), "invalid", 4, "extra: unexpected key"),
    (payload(seq=True), "invalid", None, "seq: must be an integer from 1 to 2^63-1"),
    (payload(seq=5, id="9" * 65), "invalid", 5, "id: must be a string of 1-64 chars"),
    (payload(seq=6, ts=1.5), "invalid", 6, "ts: must be an integer Unix time from 0 to 2^63-1"),
    (payload(seq=8, device=DEVICE_B), "device_mismatch", 8, "device: does not match the topic"),
]


@pytest.mark.parametrize(("raw", "error", "seq", "detail"), REJECTIONS)
def test_parse_rejects_with_code_seq_and_value_free_detail(
    raw: bytes, error: str, seq: int | None, detail: str
) -> None:
    result = parse_checkin(raw, DEVICE_A)
    assert isinstance(result, Rejection)
    assert (result.error, result.seq, result.detail) == (error, seq, detail)
    reply = json.loads(result.to_payload())
    assert reply == {"v": 1, "error": error, "seq": seq, "detail": detail}
    assert person_id(seq or 1) not in result.to_payload().decode()


def test_parse_missing_field_and_bad_topic() -> None:
    record = make_checkin(DEVICE_A, 2)
    del record["venue"]
    result = parse_checkin(json.dumps(record).encode(), DEVICE_A)
    assert result == Rejection("invalid", "venue: required", 2)
    result = parse_checkin(payload(seq=2), "Not A Device")
    assert isinstance(result, Rejection)
    assert result.error == "invalid"


# -- spool and forwarder units ------------------------------------------------------


def records(*seqs: int, device: str = DEVICE_A) -> list[CheckIn]:
    """Validated check-ins for the given seqs."""
    return [CheckIn.model_validate(make_checkin(device, s)) for s in seqs]


def test_spool_dedups_orders_and_dead_letters(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    try:
        assert spool.store(records(3, 1, 2)) == [3, 1, 2]
        outcome = spool.store_detailed(records(2, 4) + records(1, device=DEVICE_B))
        assert (outcome.seqs, outcome.new, outcome.duplicates) == ([2, 4, 1], 2, 1)
        assert spool.depth() == 5
        rows = spool.take(3)
        assert [r.identity for r in rows] == [f"{DEVICE_A}:3", f"{DEVICE_A}:1", f"{DEVICE_A}:2"]
        assert spool.delete(rows[:2]) == 2
        spool.dead_letter(rows[2], "422: verdict: must be 'pass' or 'fail'")
        assert spool.dead_letters() == [(DEVICE_A, 2, "422: verdict: must be 'pass' or 'fail'")]
        assert [r.identity for r in spool.take()] == [f"{DEVICE_A}:4", f"{DEVICE_B}:1"]
    finally:
        spool.close()
    # WAL mode is a property of the database file: check it survived.
    reopened = Spool(tmp_path / "spool.sqlite3")
    try:
        assert reopened.depth() == 2
        mode = reopened._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        reopened.close()


def test_forwarder_backs_off_dead_letters_and_keys_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.store(records(1, 2, 3))
    seen: list[tuple[str, list[int]]] = []
    answers: list[httpx.Response] = [
        httpx.Response(503),
        httpx.Response(422, json={"error": "verdict: must be 'pass' or 'fail'", "index": 1}),
        httpx.Response(200, json={"stored": 2, "duplicates": 0}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/checkins"
        body = json.loads(request.content)
        seen.append((request.headers["Idempotency-Key"], [c["seq"] for c in body["checkins"]]))
        return answers.pop(0)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    forwarded: list[int] = []
    forwarder = Forwarder(
        spool, "http://backend.test", client=client, on_forwarded=forwarded.append
    )
    try:
        assert forwarder.send(spool.take()) is False  # 503: back off, keep everything
        assert spool.depth() == 3
        assert forwarder.send(spool.take()) is True  # 422: row at index 1 dead-lettered
        assert spool.dead_letters() == [(DEVICE_A, 2, "422: verdict: must be 'pass' or 'fail'")]
        assert forwarder.send(spool.take()) is True  # 200: the rest is gone
        assert spool.depth() == 0
        assert forwarded == [2]
    finally:
        client.close()
        spool.close()
    # A retried batch carries the same key; a different set of identities another one.
    assert [seqs for _, seqs in seen] == [[1, 2, 3], [1, 2, 3], [1, 3]]
    assert seen[0][0] == seen[1][0] != seen[2][0]
    assert re.fullmatch(r"[0-9a-f]{64}", seen[0][0])


def test_idempotency_key_ignores_order_and_backoff_is_capped_full_jitter() -> None:
    rows = [SpoolRow(1, DEVICE_B, 1, "{}"), SpoolRow(2, DEVICE_A, 9, "{}")]
    key = idempotency_key(rows)
    assert key == idempotency_key(list(reversed(rows)))
    # Documented definition: sha256 of the sorted identities, one per line.
    assert key == hashlib.sha256(f"{DEVICE_A}:9\n{DEVICE_B}:1".encode()).hexdigest()
    backoff = Backoff(initial=0.2, cap=30.0)
    ceilings = [backoff.delay(n, rng=lambda lo, hi: hi) for n in range(12)]
    assert ceilings[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert ceilings[-1] == 30.0
    assert all(backoff.delay(n, rng=lambda lo, hi: lo) == 0.0 for n in range(5))


# -- the real bridge ------------------------------------------------------------------


@pytest.fixture
def kiosk_broker(broker: Broker) -> Broker:
    """conftest's broker, restarted with accounts for DEVICE_A and DEVICE_B."""
    for device, password in KIOSK_PASSWORDS.items():
        broker.add_account(device, password)
    broker.restart()
    return broker


@pytest.fixture
def bridge_factory(tmp_path: Path, kiosk_broker: Broker) -> Iterator[Callable[..., ServiceProcess]]:
    """Start bridges on one state folder (same spool each time); all stopped at the end."""
    started: list[ServiceProcess] = []

    def start(backend_url: str, *, wait_ready: bool = True) -> ServiceProcess:
        service = start_bridge(
            tmp_path / "bridge",
            kiosk_broker.port,
            BRIDGE_PASSWORD,
            backend_url,
            BRIDGE_ARGS,
            wait_ready=wait_ready,
        )
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def kiosks(kiosk_broker: Broker) -> Iterator[dict[str, Kiosk]]:
    """Connected kiosks DEVICE_A and DEVICE_B, listening to their ack and reply topics."""
    clients: dict[str, Kiosk] = {}
    try:
        for device in (DEVICE_A, DEVICE_B):
            clients[device] = Kiosk(kiosk_broker.port, device)
        yield clients
    finally:
        for client in clients.values():
            client.close()


def _assert_no_personal_data(log_text: str, seqs: range | list[int]) -> None:
    leaked = [s for s in seqs if person_id(s) in log_text]
    assert not leaked, f"person ids of seqs {leaked[:5]} appear in the log"


def test_checkins_reach_backend_exactly_and_kiosk_gets_acks(
    backend: ServiceProcess,
    bridge_factory: Callable[..., ServiceProcess],
    kiosks: dict[str, Kiosk],
) -> None:
    bridge = bridge_factory(backend.url)
    a, b = kiosks[DEVICE_A], kiosks[DEVICE_B]
    a.publish_seqs(range(1, 61))
    b.publish_seqs(range(1, 21), venue="HCM-Q3-000001")

    wait_for(lambda: a.acked == set(range(1, 61)), what="acks for kiosk A")
    wait_for(lambda: b.acked == set(range(1, 21)), what="acks for kiosk B")
    wait_for(lambda: backend_stats(backend.url)["total"] == 80, what="80 check-ins at the backend")
    assert backend_checkins(backend.url) == [make_checkin(DEVICE_A, s) for s in range(1, 61)]
    assert backend_checkins(backend.url, "HCM-Q3-000001") == [
        make_checkin(DEVICE_B, s, venue="HCM-Q3-000001") for s in range(1, 21)
    ]
    assert a.replies == [] and b.replies == []
    # Acks go to the kiosk that sent the check-ins, in the protocol's shape.
    assert all(set(ack) == {"v", "seq"} and ack["v"] == 1 for ack in a.acks)

    # The summary line reports the counters; then a clean shutdown.
    wait_for(
        lambda: re.search(
            r"received=80 stored=80 duplicates=0 rejected=0 forwarded=80", bridge.log_text()
        ),
        what="summary line with the final counters",
    )
    assert bridge.stop() == 0
    assert "bridge stopped" in bridge.log_text()
    _assert_no_personal_data(bridge.log_text(), range(1, 61))


def test_malformed_payloads_get_replies_and_change_nothing(
    backend: ServiceProcess,
    bridge_factory: Callable[..., ServiceProcess],
    kiosks: dict[str, Kiosk],
) -> None:
    bridge = bridge_factory(backend.url)
    a = kiosks[DEVICE_A]
    expected = []
    for raw, error, seq, detail in REJECTIONS:
        a.publish(raw)
        expected.append({"v": 1, "error": error, "seq": seq, "detail": detail})
    # After all that garbage, a good check-in still goes through.
    a.publish(make_checkin(DEVICE_A, 100))

    wait_for(lambda: a.acked == {100}, what="ack for the good check-in")
    wait_for(lambda: len(a.replies) == len(REJECTIONS), what="one reply per bad payload")

    def key(reply: dict[str, Any]) -> str:
        return json.dumps(reply, sort_keys=True)

    assert sorted(a.replies, key=key) == sorted(expected, key=key)
    wait_for(lambda: backend_stats(backend.url)["total"] == 1, what="the good check-in forwarded")
    assert backend_checkins(backend.url) == [make_checkin(DEVICE_A, 100)]
    # The payload claiming to be DEVICE_B (seq 8) was refused, not stored under either name.
    assert backend_stats(backend.url)["by_venue"] == {"HCM-Q1-000123": 1}

    assert bridge.alive()
    log = bridge.log_text()
    assert log.count("rejected a message") == len(REJECTIONS)
    _assert_no_personal_data(log, [*range(1, 9), 100])
    assert "9" * 65 not in log


def test_broker_acl_stops_a_kiosk_speaking_for_another(
    backend: ServiceProcess,
    bridge_factory: Callable[..., ServiceProcess],
    kiosks: dict[str, Kiosk],
    kiosk_broker: Broker,
) -> None:
    bridge_factory(backend.url)
    # A probe with the bridge's rights sees every check-in the broker routes.
    routed: list[str] = []
    probe = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="acl-probe",
        protocol=mqtt.MQTTv5,
    )
    probe.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    subscribed = threading.Event()
    probe.on_subscribe = lambda *args: subscribed.set()
    probe.on_message = lambda client, userdata, msg: routed.append(msg.topic)
    probe.connect("127.0.0.1", kiosk_broker.port)
    probe.subscribe("kiosk/+/checkin", qos=1)
    probe.loop_start()
    try:
        wait_for(subscribed.is_set, what="probe subscribed")
        a, b = kiosks[DEVICE_A], kiosks[DEVICE_B]
        forged = make_checkin(DEVICE_B, 1, venue="FORGED")
        forged_mid = a.publish(forged, topic=f"kiosk/{DEVICE_B}/checkin")
        # Then a legitimate one on the same connection: the broker handles them in order,
        # so once this one is through, the forged one had its chance to be routed.
        a.publish(make_checkin(DEVICE_A, 1))
        wait_for(lambda: a.acked == {1}, what="ack for A's own check-in")
        wait_for(lambda: f"kiosk/{DEVICE_A}/checkin" in routed, what="probe saw A's check-in")

        assert f"kiosk/{DEVICE_B}/checkin" not in routed
        # MQTT v5 tells the publisher: PUBACK reason 135, Not authorized.
        wait_for(lambda: forged_mid in a.puback, what="PUBACK for the forged publish")
        assert a.puback[forged_mid].value == 135
        wait_for(lambda: backend_stats(backend.url)["total"] == 1, what="A's check-in forwarded")
        assert backend_checkins(backend.url, "FORGED") == []
        assert b.acked == set() and b.replies == []
    finally:
        probe.disconnect()
        probe.loop_stop()


def test_bridge_killed_while_messages_flow_loses_nothing(
    backend: ServiceProcess,
    bridge_factory: Callable[..., ServiceProcess],
    kiosks: dict[str, Kiosk],
) -> None:
    total, first = 5000, 4000
    bridge = bridge_factory(backend.url)
    a = kiosks[DEVICE_A]
    a.publish_seqs(range(1, first + 1))
    wait_for(lambda: len(a.acked) >= 40, what="the bridge acking the first check-ins")
    bridge.stop(kill=True)  # SIGKILL mid-stream: no chance to flush or ack anything more
    assert len(a.acked) < first, "the kill came too late to exercise anything"

    # While the bridge is down the broker queues for its persistent session.
    a.publish_seqs(range(first + 1, total + 1))
    restarted = bridge_factory(backend.url)
    assert restarted.pid != bridge.pid

    wait_for(
        lambda: backend_stats(backend.url)["total"] == total,
        timeout=20,
        what=f"all {total} check-ins at the backend",
    )
    assert backend_checkins(backend.url, limit=10_000) == [
        make_checkin(DEVICE_A, s) for s in range(1, total + 1)
    ]
    # A real kiosk resends what stays unacked in its journal; do the same. The bridge
    # acks duplicates, so every seq ends up acked.
    missing = sorted(set(range(1, total + 1)) - a.acked)
    a.publish_seqs(missing)
    wait_for(lambda: a.acked == set(range(1, total + 1)), what="acks for every seq")
    assert backend_stats(backend.url)["total"] == total
    _assert_no_personal_data(restarted.log_text(since_start=False), range(1, total + 1))


def test_backend_outage_then_recovery_delivers_everything(
    tmp_path: Path,
    bridge_factory: Callable[..., ServiceProcess],
    kiosks: dict[str, Kiosk],
) -> None:
    port = free_port()  # nothing listens here yet: the backend is "down"
    bridge = bridge_factory(f"http://127.0.0.1:{port}")
    a = kiosks[DEVICE_A]
    a.publish_seqs(range(1, 101))
    # Acks mean "in the spool": they do not wait for the backend.
    wait_for(lambda: a.acked == set(range(1, 101)), what="acks while the backend is down")
    wait_for(lambda: "retrying with backoff" in bridge.log_text(), what="backend failure logged")

    backend = start_backend(tmp_path / "late-backend", port=port)
    try:
        wait_for(
            lambda: backend_stats(backend.url)["total"] == 100,
            timeout=15,
            what="every check-in after the backend came back",
        )
        assert backend_checkins(backend.url) == [make_checkin(DEVICE_A, s) for s in range(1, 101)]
        wait_for(lambda: "backend accepts check-ins again" in bridge.log_text(), what="recovery")
    finally:
        backend.stop()


def test_bridge_started_before_its_broker_waits_for_it(
    backend: ServiceProcess,
    bridge_factory: Callable[..., ServiceProcess],
    kiosk_broker: Broker,
) -> None:
    kiosk_broker.stop()
    bridge = bridge_factory(backend.url, wait_ready=False)
    wait_for(lambda: "not reachable" in bridge.log_text(), what="the bridge saying it waits")
    assert bridge.alive()
    kiosk_broker.start()
    wait_bridge_ready(bridge)
    kiosk = Kiosk(kiosk_broker.port, DEVICE_A)
    try:
        kiosk.publish(make_checkin(DEVICE_A, 1))
        wait_for(lambda: kiosk.acked == {1}, what="ack once the broker is up")
    finally:
        kiosk.close()
    assert "Traceback" not in bridge.log_text()


def test_cli_refuses_a_missing_password_and_bad_arguments(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_BRIDGE_MQTT_PASSWORD"}
    cases = [
        (["run", "--db", str(tmp_path / "s.sqlite3")], "KIOSK_BRIDGE_MQTT_PASSWORD"),
        (["run", "--broker-port", "70000"], "port out of range"),
        (["run", "--backend-url", "ftp://x"], "not an http(s) URL"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "mqtt_bridge", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2, args
        assert message in result.stderr
        assert "Traceback" not in result.stderr
