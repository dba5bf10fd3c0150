"""deploy/mosquitto: the production broker config, run for real.

Mosquitto starts with deploy/mosquitto/mosquitto.conf itself, only its paths
and ports rewritten to a temporary folder; the test CA, server and kiosk
certificates are made here. A kiosk (TLS client certificate, CN = device id)
may publish under its own id and is refused under another's; the bridge
(loopback listener, password) receives what kiosks may send.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from bridge_helpers import tls_cert, write_pem
from conftest import ROOT, wait_for
from cryptography.hazmat.primitives.asymmetric import ec

from simulator.broker import _wait_port, free_port, mosquitto_binary
from simulator.fleetload import connect_packet

pytestmark = pytest.mark.timeout(60)

DEPLOY = ROOT / "deploy" / "mosquitto"
BRIDGE_PASSWORD = "deploy-bridge-secret"


@dataclass
class DeployedBroker:
    tls_port: int
    local_port: int
    certs: Path


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[DeployedBroker]:
    etc, certs, data = tmp_path / "etc", tmp_path / "etc" / "certs", tmp_path / "data"
    certs.mkdir(parents=True)
    data.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = tls_cert("kiosk test CA", ca_key, ca_key, "kiosk test CA", ca=True)
    write_pem(certs / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    write_pem(
        certs / "server",
        tls_cert("broker", server_key, ca_key, "kiosk test CA", server=True),
        server_key,
    )
    for device in ("kiosk-a", "kiosk-b", "kiosk-bridge"):
        key = ec.generate_private_key(ec.SECP256R1())
        write_pem(certs / device, tls_cert(device, key, ca_key, "kiosk test CA"), key)
    tls_port, local_port = free_port(), free_port()
    text = (DEPLOY / "mosquitto.conf").read_text()
    replacements = {
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {local_port} 127.0.0.1",
        "/etc/mosquitto/kiosk/": f"{etc}/",
        "/var/lib/mosquitto/": f"{data}/",
        "log_dest syslog": f"log_dest file {tmp_path}/mosquitto.log",
    }
    for old, new in replacements.items():
        assert old in text, old  # the test keeps up with the file
        text = text.replace(old, new)
    if os.geteuid() == 0:
        text += "\nuser root\n"  # do not drop to `mosquitto`, which cannot read tmp_path
    for acl in ("acl-kiosks", "acl-bridge"):
        shutil.copy(DEPLOY / acl, etc / acl)
    passwd = etc / "passwd-bridge"
    passwd.write_text(f"kiosk-bridge:{BRIDGE_PASSWORD}\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
    conf = etc / "mosquitto.conf"
    conf.write_text(text)
    log = open(tmp_path / "mosquitto.stdout", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:
        deadline = time.monotonic() + 10
        _wait_port(tls_port, deadline, proc)
        _wait_port(local_port, deadline, proc)
        yield DeployedBroker(tls_port, local_port, certs)
    finally:
        proc.terminate()
        proc.wait(10)


class Client:
    """A paho MQTT v5 client recording PUBACK / SUBACK reason codes and messages."""

    def __init__(self, client_id: str) -> None:
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.messages: list[str] = []
        self.connected = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        c.on_connect = lambda *a: self.connected.set()
        # Mosquitto 2.0 on a TLS listener drops the connection right after a PUBACK
        # "not authorized"; paho reconnects, and every step below waits for that.
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_publish = lambda cl, ud, mid, rc, props: self._set(self.pubacks, mid, rc.value)
        c.on_subscribe = lambda cl, ud, mid, rcs, props: self._set(
            self.subacks, mid, [r.value for r in rcs]
        )
        c.on_message = lambda cl, ud, msg: self._add(msg.topic)
        self.c = c

    def _set(self, d: dict[int, object], k: int, v: object) -> None:
        with self.lock:
            d[k] = v

    def _add(self, topic: str) -> None:
        with self.lock:
            self.messages.append(topic)

    def start(self, port: int) -> Client:
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(self.connected.is_set, what="connected")
        return self

    def publish(self, topic: str) -> int:
        wait_for(self.connected.is_set, what="connected")
        mid = self.c.publish(topic, b"{}", qos=1).mid
        return int(wait_for(lambda: self.pubacks.get(mid) is not None and (self.pubacks[mid],))[0])

    def subscribe(self, topic: str) -> int:
        wait_for(self.connected.is_set, what="connected")
        mid = self.c.subscribe(topic, qos=1)[1]
        return wait_for(lambda: self.subacks.get(mid))[0]

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def kiosk(deployed: DeployedBroker, device: str) -> Client:
    client = Client(device)
    certs = deployed.certs
    client.c.tls_set(
        ca_certs=str(certs / "ca.crt"),
        certfile=str(certs / f"{device}.crt"),
        keyfile=str(certs / f"{device}.key"),
    )
    return client.start(deployed.tls_port)


def test_kiosk_speaks_only_for_itself_on_the_production_broker(deployed: DeployedBroker) -> None:
    bridge = Client("kiosk-bridge-1")
    bridge.c.username_pw_set("kiosk-bridge", BRIDGE_PASSWORD)
    bridge.start(deployed.local_port)
    a = kiosk(deployed, "kiosk-a")
    try:
        assert bridge.subscribe("$share/city/kiosk/+/checkin") == 1  # granted QoS 1
        assert a.publish("kiosk/kiosk-a/checkin") == 0  # own id: accepted
        assert a.publish("kiosk/kiosk-b/checkin") == 135  # another's: Not authorized
        assert a.publish("kiosk/kiosk-a/ack") == 135  # only the bridge writes acks
        assert a.publish("fleet/policy") == 135  # only the bridge signs for the fleet
        assert a.publish("kiosk/kiosk-a/checkin") == 0
        wait_for(lambda: len(bridge.messages) == 2, what="the bridge got both of a's")
        assert bridge.messages == ["kiosk/kiosk-a/checkin"] * 2

        # Reading: Mosquitto grants any subscription but delivers only what the ACL
        # allows, so the proof is what arrives. `a` listens to its own topics and,
        # trying, to b's and to every check-in; the bridge then writes to both kiosks.
        for topic in (
            "kiosk/kiosk-a/ack",
            "kiosk/kiosk-a/cmd",
            "fleet/#",
            "kiosk/kiosk-b/ack",
            "kiosk/kiosk-b/cmd",
            "kiosk/+/checkin",
        ):
            a.subscribe(topic)
        b = kiosk(deployed, "kiosk-b")
        try:
            assert b.publish("kiosk/kiosk-b/checkin") == 0
        finally:
            b.stop()
        for topic in (
            "kiosk/kiosk-b/ack",
            "kiosk/kiosk-b/cmd",
            "kiosk/kiosk-a/ack",
            "kiosk/kiosk-a/cmd",
            "fleet/policy",
        ):
            assert bridge.publish(topic) == 0  # the bridge may answer kiosks and sign
        # In order on one connection: once fleet/policy is in, the rest had its chance.
        wait_for(lambda: "fleet/policy" in a.messages, what="a got the fleet document")
        assert a.messages == ["kiosk/kiosk-a/ack", "kiosk/kiosk-a/cmd", "fleet/policy"]
    finally:
        a.stop()
        bridge.stop()


def test_certificates_decide_who_connects_and_what_they_may_do(deployed: DeployedBroker) -> None:
    # No client certificate: the TLS session is torn down, no CONNACK ever comes.
    context = ssl.create_default_context(cafile=str(deployed.certs / "ca.crt"))
    with socket.create_connection(("127.0.0.1", deployed.tls_port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(connect_packet("nobody", "kiosk-a", "x"))
                answer = tls.recv(4)
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert not answer.startswith(b"\x20")  # no CONNACK
    # A kiosk certificate named like the bridge gets kiosk rights only: the bridge's
    # ACL entry exists on the loopback listener alone.
    impostor = kiosk(deployed, "kiosk-bridge")
    a = kiosk(deployed, "kiosk-a")
    try:
        assert impostor.publish("kiosk/kiosk-a/ack") == 135
        impostor.subscribe("kiosk/+/checkin")
        impostor.subscribe("kiosk/kiosk-bridge/ack")  # its own (kiosk) topic, as a marker
        assert a.publish("kiosk/kiosk-a/checkin") in (0, 16)
        bridge = Client("kiosk-bridge-1")
        bridge.c.username_pw_set("kiosk-bridge", BRIDGE_PASSWORD)
        bridge.start(deployed.local_port)
        try:
            assert bridge.publish("kiosk/kiosk-bridge/ack") == 0
        finally:
            bridge.stop()
        wait_for(lambda: impostor.messages, what="the marker")
        assert impostor.messages == ["kiosk/kiosk-bridge/ack"]  # no check-in of a's
    finally:
        a.stop()
        impostor.stop()
    # The bridge's listener is password-only: a wrong password is refused.
    wrong = Client("kiosk-bridge-x")
    wrong.c.username_pw_set("kiosk-bridge", "wrong")
    refused = threading.Event()
    wrong.c.on_connect = lambda cl, ud, flags, rc, props: rc.is_failure and refused.set()
    wrong.c.connect("127.0.0.1", deployed.local_port)
    wrong.c.loop_start()
    try:
        wait_for(refused.is_set, what="login refused")
    finally:
        wrong.c.loop_stop()
