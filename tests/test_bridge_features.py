"""The bridge's services beyond ingest: online checks, signed fleet documents, fleet view,
/metrics, OAuth2 towards the backend, configuration, retention, and fuzzed input.

Real Mosquitto (project config and ACL), the backend emulator and `kiosk-bridge run`
as subprocesses; paho clients logged in as kiosks. Waits are conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from bridge_helpers import backend_total, metrics_port, scrape, tls_cert, write_pem
from conftest import BRIDGE_PASSWORD, wait_for
from fixtures_services import make_checkin, person_id
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_bridge.backend_client import BackendClient
from mqtt_bridge.cli import build_config
from mqtt_bridge.config import ConfigError, load_file
from mqtt_bridge.documents import public_key_from_b64, save_private_key, verify_document
from mqtt_bridge.fleet import parse_telemetry
from mqtt_bridge.schema import CheckIn, Rejection, parse_checkin
from mqtt_bridge.service import BridgeConfig, BridgeService
from mqtt_bridge.spool import Spool, SpoolRow
from mqtt_bridge.verify import parse_request
from simulator.backend import person_status, sample_people
from simulator.broker import BRIDGE_USER, Broker
from simulator.stack import ServiceProcess, start_backend, start_bridge

pytestmark = pytest.mark.timeout(120)

KIOSKS = ["kiosk-f-0001", "kiosk-f-0002", "kiosk-f-0003"]
FUZZER = "fuzzer"
FAST = ["--retry-initial", "0.05", "--retry-max", "0.5", "--stats-interval", "1"]


class BroadBroker(Broker):
    """The project's broker plus one test account with broad write rights on kiosk/#,
    standing for a kiosk whose credentials were misconfigured or stolen."""

    def _write_files(self) -> Path:
        conf = super()._write_files()
        with open(self.state_dir / "acl", "a") as acl:
            acl.write(f"\nuser {FUZZER}\ntopic write kiosk/#\n")
        return conf


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = BroadBroker(tmp_path / "broker")
    broker.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    broker.add_account(FUZZER, "fuzz")
    for device in KIOSKS:
        broker.add_account(device, f"pw-{device}")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class KioskClient:
    """A paho MQTT v5 kiosk: birth/will on its status topic, listens to its own topics."""

    def __init__(self, port: int, device: str, *, will: bool = True, user: str | None = None):
        self.device = device
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=user or device,
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(user or device, "fuzz" if user == FUZZER else f"pw-{device}")
        if will:
            c.will_set(f"kiosk/{device}/status", "offline", qos=1, retain=True)
        c.on_connect = lambda client, *a: client.subscribe(
            [(f"kiosk/{device}/{t}", 1) for t in ("ack", "reply", "verify/result")]
            + [("fleet/#", 1)]
        )
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        wait_for(self._ready.is_set, what=f"{device} subscribed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t.endswith(suffix)]

    def publish(self, suffix: str, payload: bytes | str, *, qos: int = 1, retain: bool = False):
        topic = f"kiosk/{self.device}/{suffix}" if not suffix.startswith("kiosk/") else suffix
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def ask(self, rid: int, **request: Any) -> dict[str, Any]:
        """An online check; waits for the answer with this rid."""
        self.publish("verify", json.dumps({"v": 1, "rid": rid, **request}), qos=0)

        def answered() -> dict[str, Any] | None:
            for payload in self.on("/verify/result"):
                body = json.loads(payload)
                if body["rid"] == rid:
                    return body
            return None

        return wait_for(answered, timeout=10, what=f"answer to rid {rid}")

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- online checks and signed documents ---------------------------------------------------


def test_verify_service_and_signed_documents(tmp_path: Path, fleet_broker: Broker) -> None:
    from simulator.signers import TestPKI, dcc_payload, sign_hc1, trust_body

    pki = TestPKI()
    signer = pki.signer("es256")
    key_path = tmp_path / "operator.pem"
    save_private_key(pki.operator_key, key_path)
    (tmp_path / "trust.json").write_text(json.dumps(trust_body([signer])))
    (tmp_path / "policy.json").write_text(json.dumps({"offline": "admit_unverified"}))
    backend = start_backend(tmp_path / "backend")
    httpx.get(f"{backend.url}/api/v1/status/warm-up", timeout=30)  # builds the sample people
    bridge = start_bridge(
        tmp_path / "bridge",
        fleet_broker.port,
        BRIDGE_PASSWORD,
        backend.url,
        [
            *FAST,
            "--operator-key",
            str(key_path),
            "--trust",
            str(tmp_path / "trust.json"),
            "--policy",
            str(tmp_path / "policy.json"),
            "--verify-deadline",
            "0.4",
            "--metrics-port",
            "0",
        ],
    )
    kiosk = KioskClient(fleet_broker.port, KIOSKS[0])
    try:
        # Signed, retained documents reach a kiosk that subscribes to fleet/#.
        docs = wait_for(lambda: len(kiosk.on("fleet/policy")) and len(kiosk.on("fleet/trust")))
        assert docs
        operator = public_key_from_b64(pki.operator_key_b64)
        policy = verify_document(kiosk.on("fleet/policy")[-1].decode(), operator, "policy")
        trust = verify_document(kiosk.on("fleet/trust")[-1].decode(), operator, "trust")
        assert policy["body"] == {"offline": "admit_unverified"}
        assert trust["body"] == trust_body([signer])
        # `kiosk-bridge publish` signs a new policy with a higher serial.
        (tmp_path / "policy2.json").write_text(json.dumps({"offline": "refuse"}))
        env = {**os.environ, "KIOSK_BRIDGE_MQTT_PASSWORD": BRIDGE_PASSWORD}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mqtt_bridge",
                "publish",
                "--kind",
                "policy",
                "--body",
                str(tmp_path / "policy2.json"),
                "--operator-key",
                str(key_path),
                "--broker-port",
                str(fleet_broker.port),
                "--db",
                str(bridge.db_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        newer = wait_for(lambda: len(kiosk.on("fleet/policy")) >= 2) and verify_document(
            kiosk.on("fleet/policy")[-1].decode(), operator, "policy"
        )
        assert newer["body"] == {"offline": "refuse"} and newer["serial"] > policy["serial"]

        # Identity codes: the backend's status decides; unknown people are "unknown".
        people = sample_people()
        clear = next(
            i
            for _, i in people
            if person_status(i)["isolation"] is False
            and person_status(i)["test"] != "positive"
            and person_status(i)["declaration"] == "valid"
        )
        isolated = next(i for _, i in people if person_status(i)["isolation"])
        assert kiosk.ask(1, type="cccd", id=clear) == {
            "v": 1,
            "rid": 1,
            "result": "pass",
            "reason": None,
        }
        assert kiosk.ask(2, type="pccovid", id=isolated)["reason"] == "isolation"
        assert kiosk.ask(3, type="cccd", id="000000000000") == {
            "v": 1,
            "rid": 3,
            "result": "unknown",
            "reason": "unknown_person",
        }
        assert kiosk.ask(4, type="cccd")["reason"] == "invalid_request"  # no id
        # Cached: answered even while the status API fails.
        httpx.post(f"{backend.url}/admin/faults", json={"status": 503, "scope": "status"})
        assert kiosk.ask(5, type="cccd", id=clear)["result"] == "pass"
        assert kiosk.ask(6, type="cccd", id="079999999999")["reason"] == "backend_error"
        # A slow backend: the answer comes at the deadline, "unknown", not late.
        httpx.post(f"{backend.url}/admin/faults", json={"delay": 3, "scope": "status"})
        started = time.monotonic()
        assert kiosk.ask(7, type="cccd", id="079888888888")["reason"] == "timeout"
        assert time.monotonic() - started < 2.5
        httpx.delete(f"{backend.url}/admin/faults")

        # HC1 certificates are verified against the configured trust list.
        now = int(time.time())
        good = sign_hc1(
            signer,
            dcc_payload("v", "URN:UVCI:01:VN:TEST1"),
            iat=now - 86400,
            exp=now + 300 * 86400,
            rng=random.Random(1),
        )
        assert kiosk.ask(8, type="hc1", code=good)["result"] == "pass"
        stranger = sign_hc1(
            pki.signer("es256-b"),
            dcc_payload("v", "URN:UVCI:01:VN:TEST2"),
            iat=now - 86400,
            exp=now + 300 * 86400,
            rng=random.Random(2),
        )
        assert kiosk.ask(9, type="hc1", code=stranger) == {
            "v": 1,
            "rid": 9,
            "result": "fail",
            "reason": "no_signer",
        }

        scraped = scrape(metrics_port(bridge))
        assert scraped["kiosk_bridge_verify_requests"] == 9
        assert scraped["kiosk_bridge_verify_invalid"] == 1
        assert scraped["kiosk_bridge_verify_latency_seconds_count"] == 9
        # No identifier in the bridge's log.
        assert clear not in bridge.log_text() and isolated not in bridge.log_text()
    finally:
        kiosk.close()
        bridge.stop()
        backend.stop()


# -- fleet view and /metrics ----------------------------------------------------------------


def _fleet_table(db: Path, stale_after: float, *extra: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_bridge",
            "fleet",
            "--fleet-db",
            str(db),
            "--stale-after",
            str(stale_after),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _table_with(db: Path, stale_after: float, marker: str, device: str) -> str | None:
    """The fleet table once `device`'s row shows `marker`."""
    table = _fleet_table(db, stale_after)
    row = next((line for line in table.splitlines() if device in line), "")
    return table if marker in row else None


def test_fleet_view_flags_offline_and_stale_and_metrics(
    tmp_path: Path, fleet_broker: Broker, backend: ServiceProcess
) -> None:
    bridge = start_bridge(
        tmp_path / "bridge",
        fleet_broker.port,
        BRIDGE_PASSWORD,
        backend.url,
        [*FAST, "--metrics-port", "0"],
    )
    port = metrics_port(bridge)
    fresh, dying, silent = (KioskClient(fleet_broker.port, d) for d in KIOSKS)
    try:
        for k in (fresh, dying, silent):
            k.publish("status", "online", retain=True)
        telemetry = {
            "v": 1,
            "fw": "0.3.0",
            "uptime": 100,
            "heap_free": 60000,
            "rssi": -61,
            "reconnects": 0,
            "journal": 12,
            "journal_full": False,
            "clock": "ntp",
        }
        fresh.publish("telemetry", json.dumps(telemetry), qos=0)
        fresh.publish("telemetry", b"\x00garbage", qos=0)  # counted, nothing else
        fresh.publish("checkin", json.dumps(make_checkin(KIOSKS[0], 1)))
        wait_for(lambda: scrape(port)["kiosk_bridge_kiosks_online"] == 3, what="3 online")
        dying.crash()  # the broker publishes its last will: offline
        wait_for(lambda: scrape(port)["kiosk_bridge_kiosks_online"] == 2, what="will seen")
        db = tmp_path / "bridge" / "fleet.sqlite3"
        table = wait_for(
            lambda: _table_with(db, 60, "OFFLINE", KIOSKS[1]),
            what="offline in the table",
        )
        row = next(line for line in table.splitlines() if KIOSKS[0] in line)
        assert "online" in row and "0.3.0" in row and "12" in row
        # The silent kiosk is "online" by its status but has said nothing since: stale.
        # (`fresh` keeps talking; the view is written every 2 s, so a 5 s limit.)
        stop = threading.Event()

        def chatter() -> None:
            while not stop.wait(0.3):
                fresh.publish("telemetry", json.dumps(telemetry), qos=0)

        talker = threading.Thread(target=chatter, daemon=True)
        talker.start()
        try:
            table = wait_for(
                lambda: _table_with(db, 5, "STALE", KIOSKS[2]),
                timeout=20,
                what="stale in the table",
            )
        finally:
            stop.set()
            talker.join()
        assert "STALE" not in next(line for line in table.splitlines() if KIOSKS[0] in line)
        # With kioskctl's registry, a registered kiosk that never connected is listed too.
        registry = tmp_path / "fleet.json"
        registered = {d: {"venue": "HCM-Q1-000123", "gate": "A"} for d in KIOSKS}
        registry.write_text(json.dumps({"v": 1, "devices": {**registered, "kiosk-f-9999": {}}}))
        table = _fleet_table(db, 60, "--registry", str(registry))
        assert "NEVER SEEN" in next(line for line in table.splitlines() if "kiosk-f-9999" in line)
        assert "never seen 1" in table

        wait_for(lambda: backend_total(backend) == 1)
        m = scrape(port)
        assert m["kiosk_bridge_received"] == 1 and m["kiosk_bridge_stored"] == 1
        assert m["kiosk_bridge_forwarded"] == 1 and m["kiosk_bridge_spool_depth"] == 0
        assert m["kiosk_bridge_telemetry_invalid"] >= 1
        assert m["kiosk_bridge_backend_latency_seconds_count"] >= 1
        assert m["kiosk_bridge_broker_connected"] == 1
    finally:
        for k in (fresh, silent):
            k.close()
        bridge.stop()


# -- OAuth2 towards the backend, TLS settings -------------------------------------------


def test_forwarder_uses_oauth2_tokens_and_refreshes_on_401(
    tmp_path: Path, fleet_broker: Broker
) -> None:
    backend = start_backend(tmp_path / "backend", client_id="bridge-1", client_secret="s3cret")
    bridge = start_bridge(
        tmp_path / "bridge",
        fleet_broker.port,
        BRIDGE_PASSWORD,
        backend.url,
        [*FAST, "--token-url", f"{backend.url}/oauth/token", "--oauth-client-id", "bridge-1"],
        client_secret="s3cret",
    )
    kiosk = KioskClient(fleet_broker.port, KIOSKS[0])
    http = httpx.Client(timeout=10)

    def total() -> int:
        token = http.post(
            f"{backend.url}/oauth/token",
            auth=("bridge-1", "s3cret"),
            data={"grant_type": "client_credentials"},
        ).json()["access_token"]
        stats = http.get(
            f"{backend.url}/api/v1/stats", headers={"Authorization": f"Bearer {token}"}
        )
        return int(stats.json()["total"])

    try:
        kiosk.publish("checkin", json.dumps(make_checkin(KIOSKS[0], 1)))
        wait_for(lambda: total() == 1, what="forwarded with a token")
        issued = http.get(f"{backend.url}/admin/faults").json()["tokens_issued"]
        http.post(f"{backend.url}/admin/revoke-tokens")  # the gateway forgets every token
        kiosk.publish("checkin", json.dumps(make_checkin(KIOSKS[0], 2)))
        wait_for(lambda: total() == 2, what="forwarded after the 401")
        # The bridge fetched a new one (the test's own total() calls fetch one each too).
        assert "refused the access token (401)" in bridge.log_text()
        assert http.get(f"{backend.url}/admin/faults").json()["tokens_issued"] > issued
        assert "s3cret" not in bridge.log_text()
    finally:
        http.close()
        kiosk.close()
        bridge.stop()
        backend.stop()


def test_backend_tls_is_verified_and_a_ca_can_be_named(
    tmp_path: Path, fleet_broker: Broker
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = ec.generate_private_key(ec.SECP256R1())
    write_pem(tmp_path / "ca", tls_cert("city CA", ca_key, ca_key, "city CA", ca=True), ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    write_pem(tmp_path / "server", tls_cert("lgsp", key, ca_key, "city CA", server=True), key)
    ca = tmp_path / "ca.crt"
    backend = start_backend(
        tmp_path / "backend", tls=(tmp_path / "server.crt", tmp_path / "server.key", ca)
    )
    assert backend.url.startswith("https://")
    kiosk = KioskClient(fleet_broker.port, KIOSKS[0])
    bridge = start_bridge(tmp_path / "b1", fleet_broker.port, BRIDGE_PASSWORD, backend.url, FAST)
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10)

    def held() -> int:
        return int(http.get(f"{backend.url}/api/v1/stats").json()["total"])

    try:
        # System CAs only: the city's private CA is not trusted, nothing is sent.
        kiosk.publish("checkin", json.dumps(make_checkin(KIOSKS[0], 1)))
        wait_for(lambda: "ConnectError" in bridge.log_text(), what="a TLS failure logged")
        assert held() == 0
        bridge.stop()
        # Named CA: the same spool drains.
        bridge = start_bridge(
            tmp_path / "b1",
            fleet_broker.port,
            BRIDGE_PASSWORD,
            backend.url,
            [*FAST, "--backend-ca", str(ca)],
        )
        wait_for(lambda: held() == 1, what="forwarded over verified TLS")
    finally:
        http.close()
        kiosk.close()
        bridge.stop()
        backend.stop()


def test_tls_verification_cannot_be_turned_off() -> None:
    with pytest.raises(ValueError, match="cannot be turned off"):
        BackendClient("https://backend.example", verify=False)
    with pytest.raises(ValueError, match="token_url needs"):
        BackendClient("https://backend.example", token_url="https://t.example/token")


# -- configuration ----------------------------------------------------------------------


def test_toml_config_flags_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt.secret").write_text("mqtt-pass\n")
    (tmp_path / "oauth.secret").write_text("oauth-pass\n")
    conf = tmp_path / "bridge.toml"
    conf.write_text(
        '[broker]\nport = 8883\npassword_file = "mqtt.secret"\ngroup = "city"\ninstance = "2"\n'
        '[spool]\npath = "spool.sqlite3"\nhigh_water = 1000\nretention_days = 3\n'
        '[backend]\nurl = "https://lgsp.example"\ntoken_url = "https://lgsp.example/token"\n'
        'client_id = "hcm"\nclient_secret_file = "oauth.secret"\n'
        "[metrics]\nport = 9108\n"
    )
    monkeypatch.delenv("KIOSK_BRIDGE_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("KIOSK_BRIDGE_CLIENT_SECRET", raising=False)
    settings_ = load_file(conf)
    config = build_config({**settings_, "broker_port": 1884})  # a flag wins over the file
    assert config.broker_port == 1884 and config.client_id == "kiosk-bridge-2"
    assert config.group == "city" and config.db == tmp_path / "spool.sqlite3"
    assert config.high_water == 1000 and config.low_water == 750
    assert config.password == "mqtt-pass" and config.oauth_client_secret == "oauth-pass"
    assert config.backend_verify is True and config.metrics_port == 9108
    assert "mqtt-pass" not in repr(config) and "oauth-pass" not in repr(config)

    conf.write_text("[spool]\nhigh_watre = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key spool\.high_watre"):
        load_file(conf)
    conf.write_text('[broker]\nport = "1883"\n')
    with pytest.raises(ConfigError, match=r"broker\.port: must be an integer"):
        load_file(conf)
    monkeypatch.setenv("KIOSK_BRIDGE_MQTT_PASSWORD", "x")
    with pytest.raises(ConfigError, match="distinct client id"):
        build_config({"group": "city", "db": tmp_path / "s.db"})
    with pytest.raises(ConfigError, match="no such file"):
        build_config({"backend_ca": tmp_path / "missing.pem", "db": tmp_path / "s.db"})
    with pytest.raises(ConfigError, match="low_water"):
        build_config({"high_water": 10, "low_water": 20, "db": tmp_path / "s.db"})

    out = subprocess.run(
        [sys.executable, "-m", "mqtt_bridge", "run", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "KIOSK_BRIDGE_MQTT_PASSWORD": "x"},
    )
    assert out.returncode == 2 and "broker.port: must be an integer" in out.stderr


def test_dead_letters_are_purged_after_the_retention_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    record = CheckIn.model_validate(make_checkin("kiosk-f-0001", 1))
    fresh = CheckIn.model_validate(make_checkin("kiosk-f-0001", 2))
    spool.store([record, fresh])
    rows = spool.take()
    spool.dead_letter(rows[0], "422: test")
    # Backdate the first dead letter by 10 days.
    spool._db.execute("UPDATE dead_letter SET failed_at = failed_at - 864000")
    spool.dead_letter(rows[1], "422: test")
    spool.close()
    config = BridgeConfig(db=tmp_path / "spool.sqlite3", password="x", retention_days=7)
    service = BridgeService(config)
    try:
        assert service.purge_expired() == 1
        assert service.spool.dead_letters() == [("kiosk-f-0001", 2, "422: test")]
        assert service.counters.snapshot()["purged"] == 1
    finally:
        service.fleet.close()
        service.backend.close()
        service.spool.close()
    assert isinstance(rows[0], SpoolRow)


# -- hostile input --------------------------------------------------------------------------


def _fuzz_payloads(rng: random.Random) -> list[bytes]:
    base = make_checkin("kiosk-f-0001", 1)
    junk: list[Any] = [None, True, -1, 2**70, 1.5, "", "x" * 5000, [], {}, [[[]]], {"a": {}}]
    out = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 3000))) for _ in range(40)]
    out.append(b"[" * 30000 + b"]" * 30000)  # deeply nested, under the broker's 64 KiB
    out.append(b'{"a":' * 10000 + b"1" + b"}" * 10000)
    out.append(json.dumps({"v": 1, "blob": "x" * 60000}).encode())  # huge
    out.append(b"")
    for key in base:
        for value in rng.sample(junk, 4):
            out.append(json.dumps({**base, key: value}).encode())
    out.append(json.dumps({**base, "extra": {"nested": [1, 2, {"deep": None}]}}).encode())
    return out


def test_fuzzed_payloads_and_forged_ids_never_stop_the_bridge(
    tmp_path: Path, fleet_broker: Broker, backend: ServiceProcess
) -> None:
    bridge = start_bridge(
        tmp_path / "bridge",
        fleet_broker.port,
        BRIDGE_PASSWORD,
        backend.url,
        [*FAST, "--metrics-port", "0"],
    )
    port = metrics_port(bridge)
    fuzzer = KioskClient(fleet_broker.port, KIOSKS[1], will=False, user=FUZZER)
    kiosk = KioskClient(fleet_broker.port, KIOSKS[0])
    try:
        payloads = _fuzz_payloads(random.Random(5))
        topics = [f"kiosk/{KIOSKS[1]}/{t}" for t in ("checkin", "verify", "telemetry", "status")]
        topics.append("kiosk/NOT_A_DEVICE/checkin")
        infos = [fuzzer.publish(topic, p) for topic in topics for p in payloads]
        # A kiosk account with broad rights forging another kiosk's check-in: the
        # broker lets it through, the bridge refuses it (payload device != topic).
        forged = make_checkin(KIOSKS[0], 99, venue="FORGED")
        infos.append(fuzzer.publish(f"kiosk/{KIOSKS[1]}/checkin", json.dumps(forged)))
        for info in infos:
            info.wait_for_publish(30)
        checkin_count = 2 * len(payloads) + 1
        wait_for(
            lambda: scrape(port)["kiosk_bridge_rejected"] == checkin_count,
            timeout=60,
            what="every fuzzed check-in refused",
        )
        # Still alive and still doing its job.
        kiosk.publish("checkin", json.dumps(make_checkin(KIOSKS[0], 1)))
        wait_for(lambda: backend_total(backend) == 1, what="a real check-in after the fuzz")
        assert bridge.alive()
        m = scrape(port)
        assert m["kiosk_bridge_stored"] == 1
        assert m["kiosk_bridge_verify_invalid"] == len(payloads)
        mismatch = [json.loads(p) for p in fuzzer.on("/reply")]
        assert mismatch == []  # replies go to the kiosk whose topic it was, not the sender
        with httpx.Client() as http:
            held = http.get(f"{backend.url}/api/v1/checkins", params={"venue": "FORGED"}).json()
        assert held == {"checkins": []}
        assert person_id(1) not in bridge.log_text()
    finally:
        fuzzer.close()
        kiosk.close()
        bridge.stop()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=3000))
def test_parsers_never_raise_on_random_bytes(payload: bytes) -> None:
    assert isinstance(parse_checkin(payload, "kiosk-f-0001"), CheckIn | Rejection)
    parse_request(payload)
    parse_telemetry(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from([*sorted(make_checkin()), "x"]), json_values))
def test_parsers_never_raise_on_wrong_types(obj: dict[str, Any]) -> None:
    payload = json.dumps({**make_checkin("kiosk-f-0001", 1), **obj}).encode()
    result = parse_checkin(payload, "kiosk-f-0001")
    assert isinstance(result, CheckIn | Rejection)
    request = json.dumps({"v": 1, "rid": 1, **obj}).encode()
    parse_request(request)
    parse_telemetry(json.dumps({"v": 1, **obj}).encode())
