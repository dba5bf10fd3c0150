"""Helpers shared by tests/test_backend.py and tests/test_bridge.py.

Kept out of conftest.py on purpose (it belongs to the whole suite); the
fixtures themselves live in the test modules and build on these helpers.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from conftest import wait_for
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

DEVICE_A = "kiosk-q1-0001"
DEVICE_B = "kiosk-q1-0002"
KIOSK_PASSWORDS = {DEVICE_A: "secret-a", DEVICE_B: "secret-b"}

#: One client for every test request: a fresh httpx.Client per call costs ~30 ms (TLS setup).
http = httpx.Client(timeout=10.0)


def person_id(seq: int) -> str:
    """A recognisable fake CCCD number per seq: tests grep logs for it (must never appear)."""
    return f"0792{seq:08d}"


def make_checkin(device: str = DEVICE_A, seq: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid v1 check-in (protocol.md's example shape); overrides replace or add keys."""
    record: dict[str, Any] = {
        "v": 1,
        "device": device,
        "venue": "HCM-Q1-000123",
        "gate": "A",
        "seq": seq,
        "ts": 1764090000 + seq,
        "type": "cccd",
        "id": person_id(seq),
        "verdict": "pass",
        "how": "provisional",
        "fw": "0.1.0",
    }
    record.update(overrides)
    return record


def post_batch(url: str, checkins: list[dict[str, Any]], key: str | None = None) -> httpx.Response:
    """POST a batch to the backend's /api/v1/checkins."""
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(f"{url}/api/v1/checkins", json={"checkins": checkins}, headers=headers)


def backend_checkins(url: str, venue: str = "HCM-Q1-000123", **params: Any) -> list[dict[str, Any]]:
    """Check-ins the backend holds for a venue, oldest first."""
    response = http.get(f"{url}/api/v1/checkins", params={"venue": venue, **params})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["checkins"]
    return result


def backend_stats(url: str) -> dict[str, Any]:
    """The backend's /api/v1/stats."""
    response = http.get(f"{url}/api/v1/stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


class Kiosk:
    """A test kiosk: a paho MQTT v5 client logged in as the device, listening to ack and reply."""

    def __init__(self, port: int, device: str, password: str | None = None) -> None:
        self.device = device
        self.acked: set[int] = set()
        self.acks: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.puback: dict[int, ReasonCode] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=device,
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(device, password or KIOSK_PASSWORDS[device])
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(100)  # the broker's limit, see mosquitto.conf
        self.client = client
        client.connect("127.0.0.1", port)
        client.loop_start()
        wait_for(self._subscribed.is_set, timeout=10, what=f"{device} subscribed")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(f"kiosk/{self.device}/ack", 1), (f"kiosk/{self.device}/reply", 1)])

    def _on_subscribe(self, client: mqtt.Client, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/ack"):
                self.acks.append(body)
                self.acked.update(body["seq"])
            else:
                self.replies.append(body)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._lock:
            self.puback[mid] = reason_code

    def publish(self, payload: bytes | dict[str, Any], topic: str | None = None) -> int:
        """Publish a check-in (dict → JSON) or raw bytes at QoS 1; returns the message id."""
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        info = self.client.publish(topic or f"kiosk/{self.device}/checkin", data, qos=1)
        return info.mid

    def publish_seqs(self, seqs: range | list[int], **overrides: Any) -> None:
        """Publish a valid check-in for every seq."""
        for seq in seqs:
            self.publish(make_checkin(self.device, seq, **overrides))

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
