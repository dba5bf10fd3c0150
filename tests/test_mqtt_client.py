"""The firmware's own MQTT client (firmware/kiosk/mqtt.py) on the real MicroPython
unix port against a real Mosquitto: QoS 1 retransmission after a reconnect,
the persistent session, keepalive with a missing-PINGRESP check, the retained
birth/will, and TLS with a pinned CA and a per-device client certificate.

The client runs in tests/firmware/mqtt_driver.py; paho plays the other side;
simulator/netfault.py breaks the path in between.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import BRIDGE_PASSWORD, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.broker import BRIDGE_USER, Broker, free_port, mosquitto_binary
from simulator.netfault import FaultProxy

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "firmware" / "mqtt_driver.py"
FIRMWARE = HERE.parent / "firmware"
DEVICE = "kiosk-drv"


class Driver:
    """The MicroPython process running the client; its event lines, as they come."""

    def __init__(self, micropython: str, **env: str) -> None:
        full = {"PATH": os.environ.get("PATH", ""), "MICROPYPATH": f"{FIRMWARE}:.frozen",
                "MQTT_ID": DEVICE, **env}
        self.proc = subprocess.Popen([micropython, str(DRIVER)], env=full, cwd=FIRMWARE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def seen(self, prefix: str) -> list[str]:
        return [ln for ln in list(self.lines) if ln.startswith(prefix)]

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(10)
        self._reader.join(5)


class Peer:
    """A paho client (the bridge's account) watching and talking to the driver."""

    def __init__(self, port: int, subs: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool, bool]] = []  # topic, payload, dup, retain
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="peer")
        self.client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, m.payload, bool(m.dup), bool(m.retain)))
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subs:
            self.client.subscribe([(s, 1) for s in subs])
            assert self.subscribed.wait(10)

    def payloads(self, topic: str) -> list[bytes]:
        return [m[1] for m in list(self.messages) if m[0] == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def kiosk_broker(broker: Broker) -> Broker:
    broker.add_account(DEVICE, "drv-secret")
    broker.restart()
    return broker


def test_qos1_messages_cut_off_mid_flight_are_resent_after_the_reconnect(
    kiosk_broker: Broker, micropython_bin: str
) -> None:
    peer = Peer(kiosk_broker.port, [f"kiosk/{DEVICE}/checkin"])
    with FaultProxy(kiosk_broker.port) as proxy:
        drv = Driver(micropython_bin, MQTT_PORT=str(proxy.port), MQTT_USER=DEVICE,
                     MQTT_PASSWORD="drv-secret", MQTT_COUNT="40", MQTT_EVERY_MS="20",
                     MQTT_KEEPALIVE="5", MQTT_MAX_MS="40000")
        try:
            wait_for(lambda: len(drv.seen("sent")) >= 10, what="first publishes")
            proxy.blackhole()  # PUBLISHes vanish, no PUBACK comes back
            wait_for(lambda: drv.seen("down"), timeout=20, what="the dead path noticed")
            proxy.heal()
            wait_for(lambda: drv.seen("done"), timeout=30, what="every message PUBACKed")
        finally:
            drv.stop()
    got = peer.payloads(f"kiosk/{DEVICE}/checkin")
    # None lost: those without a PUBACK went again after the reconnect (QoS 1
    # allows a repeat; the bridge deduplicates check-ins).
    assert {p.decode() for p in got} == {f"m{i}" for i in range(40)}
    assert len(drv.seen("up")) >= 2
    assert drv.seen("up 1")  # the broker kept the session (clean_session off)
    peer.close()


def test_missing_pingresp_drops_the_session_and_the_will_says_offline(
    kiosk_broker: Broker, micropython_bin: str
) -> None:
    status = f"kiosk/{DEVICE}/status"
    peer = Peer(kiosk_broker.port, [status])
    with FaultProxy(kiosk_broker.port) as proxy:
        drv = Driver(micropython_bin, MQTT_PORT=str(proxy.port), MQTT_USER=DEVICE,
                     MQTT_PASSWORD="drv-secret", MQTT_WILL=status, MQTT_KEEPALIVE="5",
                     MQTT_MAX_MS="30000")
        try:
            wait_for(lambda: b"online" in peer.payloads(status), what="birth message")
            proxy.blackhole()
            # Quiet for half the keepalive: PINGREQ; no PINGRESP within 5 s: down.
            line = wait_for(lambda: drv.seen("down"), timeout=20, what="keepalive failure")
            assert "PINGRESP" in line[0] or "silent" in line[0]
            # The broker gives up on the silent client after 1.5x keepalive: the will.
            wait_for(lambda: peer.payloads(status)[-1:] == [b"offline"], timeout=20,
                     what="last will published")
            proxy.heal()
            wait_for(lambda: peer.payloads(status)[-1:] == [b"online"], timeout=20,
                     what="back online")
        finally:
            drv.stop()
    retained = [m for m in peer.messages if m[0] == status]
    assert retained
    peer.close()


def test_messages_sent_while_away_arrive_after_reconnect(
    kiosk_broker: Broker, micropython_bin: str
) -> None:
    ack = f"kiosk/{DEVICE}/ack"
    status = f"kiosk/{DEVICE}/status"
    common = {"MQTT_PORT": str(kiosk_broker.port), "MQTT_USER": DEVICE,
              "MQTT_PASSWORD": "drv-secret", "MQTT_SUB": ack, "MQTT_WILL": status,
              "MQTT_MAX_MS": "20000"}
    peer = Peer(kiosk_broker.port, [status])
    drv = Driver(micropython_bin, **common)
    # The birth message follows the SUBSCRIBE: once it is here, so is the subscription.
    wait_for(lambda: b"online" in peer.payloads(status), what="first session subscribed")
    drv.stop(kill=True)
    peer.client.publish(ack, b'{"v":1,"seq":[1]}', qos=1).wait_for_publish(10)
    drv = Driver(micropython_bin, **common)
    try:
        wait_for(lambda: drv.seen("msg"), timeout=15, what="queued ack delivered")
        assert drv.seen("up 1")
        assert drv.seen("msg")[0] == f'msg {ack} {{"v":1,"seq":[1]}}'
    finally:
        drv.stop()
        peer.close()


# -- TLS ----------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
          signer: ec.EllipticCurvePrivateKey, ca: bool, san: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(signer, hashes.SHA256())


def _write_pki(d: Path, name: str) -> dict[str, Path]:
    """A CA, the broker's certificate (127.0.0.1) and the kiosk's, as PEM files."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    srv_key = ec.generate_private_key(ec.SECP256R1())
    dev_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{name} CA", f"{name} CA", ca_key, ca_key, True)
    files = {
        "ca": (ca, None),
        "server": (_cert("127.0.0.1", f"{name} CA", srv_key, ca_key, False, san=True), srv_key),
        "device": (_cert(DEVICE, f"{name} CA", dev_key, ca_key, False), dev_key),
    }
    out: dict[str, Path] = {}
    for stem, (cert, key) in files.items():
        out[stem] = d / f"{stem}.pem"
        out[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            out[stem + "_key"] = d / f"{stem}.key"
            out[stem + "_key"].write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption()))
    return out


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path], Path]]:
    """Mosquitto with a TLS listener that requires a client certificate from our CA;
    the certificate's CN is the MQTT username."""
    pki = _write_pki(tmp_path / "pki", "Test fleet")
    other = _write_pki(tmp_path / "other", "Someone else")
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
        "persistence false\n"
        + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        import socket

        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0,
                 what="TLS listener up")
        yield port, pki, other["ca"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_with_pinned_ca_and_client_certificate(
    tls_broker: tuple[int, dict[str, Path], Path], micropython_bin: str
) -> None:
    port, pki, _ = tls_broker
    drv = Driver(micropython_bin, MQTT_PORT=str(port), MQTT_CA=str(pki["ca"]),
                 MQTT_CERT=str(pki["device"]), MQTT_KEY=str(pki["device_key"]),
                 MQTT_COUNT="5", MQTT_MAX_MS="20000")
    try:
        wait_for(lambda: drv.seen("done") or drv.proc.poll() is not None, timeout=20,
                 what=f"publishes over TLS: {drv.lines[-5:]}")
        assert drv.seen("up") and drv.seen("done"), drv.lines
    finally:
        drv.stop()


def test_tls_refuses_a_broker_signed_by_another_ca(
    tls_broker: tuple[int, dict[str, Path], Path], micropython_bin: str
) -> None:
    port, pki, other_ca = tls_broker
    drv = Driver(micropython_bin, MQTT_PORT=str(port), MQTT_CA=str(other_ca),
                 MQTT_CERT=str(pki["device"]), MQTT_KEY=str(pki["device_key"]),
                 MQTT_COUNT="1", MQTT_MAX_MS="4000")
    try:
        wait_for(lambda: drv.seen("down"), timeout=10, what="handshake refused")
        assert not drv.seen("up"), drv.lines
    finally:
        drv.stop()
