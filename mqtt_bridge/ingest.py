"""MQTT ingest: receive check-ins, commit them to the spool, only then acknowledge them.

paho-mqtt's network thread validates each message (cheap) and queues it; a
writer thread commits whatever has queued up in one SQLite transaction (group
commit: one fsync for up to a few hundred messages instead of one each), then
sends the MQTT PUBACKs (manual_ack) and one `kiosk/<device>/ack` per device.
Until the PUBACK the broker keeps the message in the bridge's persistent
session, so a bridge killed at any point loses nothing: the broker redelivers
and the spool absorbs the duplicate.

Scale-out: with a group name the check-in and online-check subscriptions are
MQTT v5 shared subscriptions (`$share/<group>/kiosk/+/checkin`), so the broker
hands each message to one of the group's bridge instances; each instance has
its own fixed client id (its own persistent session) and its own spool. Status
and telemetry stay plain subscriptions: every instance keeps the whole fleet
view (shared subscriptions get no retained messages anyway).

Back-pressure: when the spool holds `high_water` check-ins or more (the
backend has been down a long time), the writer stops committing and acking
until the forwarder has brought it down to `low_water`. The broker then has
its in-flight window of unacked messages out to us and stops sending: the
backlog waits in the broker's persistent queue instead of growing our disk
without bound, and nothing is lost.

A PUBACK carries only a packet id, and the broker reuses packet ids once they
are acked. A message received on an earlier connection must therefore never
be acked on the current one (it could ack an unrelated, not yet stored
message); it is skipped instead, and the broker's redelivery acks it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_bridge.acker import AckPublisher, ack_body, tcp_nodelay
from mqtt_bridge.counters import Counters
from mqtt_bridge.fleet import FleetTracker
from mqtt_bridge.schema import CheckIn, Rejection, is_device_id, parse_checkin
from mqtt_bridge.spool import Spool, StoreResult

log = logging.getLogger("mqtt_bridge.ingest")

CHECKIN_SUBSCRIPTION = "kiosk/+/checkin"
VERIFY_SUBSCRIPTION = "kiosk/+/verify"
#: Plain (never shared) subscriptions of the fleet view, with their QoS.
FLEET_SUBSCRIPTIONS = (("kiosk/+/status", 1), ("kiosk/+/telemetry", 0), ("kiosk/+/cmd/result", 1))
#: Logged (INFO) each time the subscriptions are confirmed; simulator/stack.py waits for it.
READY_MESSAGE = "subscriptions confirmed: bridge ready"
DEFAULT_CLIENT_ID = "kiosk-bridge"
#: Spool depth at which ingest stops acking, and the depth at which it resumes.
DEFAULT_HIGH_WATER = 200_000
DEFAULT_LOW_WATER = 150_000
#: 30 days: the broker queues check-ins for a bridge that is down up to this long.
DEFAULT_SESSION_EXPIRY = 30 * 24 * 3600
#: Most messages committed in one transaction.
MAX_GROUP = 500
#: Most unacknowledged check-ins the broker may send us at a time (MQTT v5 Receive Maximum).
RECEIVE_MAXIMUM = 2 * MAX_GROUP


class _BufferedClient(mqtt.Client):
    """paho's client reading the socket in large chunks.

    paho reads every packet with three or four recv() calls (the type byte,
    the remaining length byte by byte, the body): at thousands of check-ins a
    second those system calls are a good part of the ingest process's time.
    This takes whatever the socket holds (up to 64 KiB) at once and serves
    paho's small reads from it; loop_read() then goes on while whole packets
    are buffered, since select() cannot see them. Written here because paho
    has no buffered-read option; it overrides paho 2.x's private _sock_recv
    (pinned <3 in pyproject.toml; tests/test_bridge.py checks it still exists).
    """

    _CHUNK = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing buffered is its
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(self._CHUNK)  # BlockingIOError when empty, as before
            if not data:
                return data  # connection closed
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start:self._rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf):
            rc = super().loop_read(1)
        return rc


@dataclass(frozen=True)
class _Item:
    generation: int  # connection it arrived on
    mid: int
    qos: int
    device: str
    result: CheckIn | Rejection


class _RateLimitedLog:
    """Log at most `burst` lines per `window` seconds, then say how many were held back.

    A misbehaving kiosk sending garbage in a loop must not flood the bridge's log.
    """

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self._start, self._count, self._dropped = 0.0, 0, 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            if self._dropped:
                log.warning("%d more rejections not logged", self._dropped)
            self._start, self._count, self._dropped = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._dropped += 1


class Ingest:
    """The MQTT side of the bridge: one persistent-session paho client plus a writer thread."""

    def __init__(
        self,
        spool: Spool,
        counters: Counters,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str = DEFAULT_CLIENT_ID,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        keepalive: int = 30,
        on_stored: Callable[[], None] | None = None,
        group: str | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        on_verify: Callable[[str, bytes], None] | None = None,
        fleet: FleetTracker | None = None,
        acker: AckPublisher | None = None,
    ) -> None:
        """`on_stored` is called after each commit that added records (wakes the forwarder).

        `group`: shared-subscription group for check-ins and online checks (None: plain
        subscriptions, one bridge). `on_verify(device, payload)` answers online checks
        (None: not subscribed). `fleet` records status, telemetry and last seen.
        `acker` publishes kiosk acks from a second process (None: from this client).
        """
        if not 0 < low_water <= high_water:
            raise ValueError("spool limits: need 0 < low_water <= high_water")
        self.spool = spool
        self.group = group
        self.high_water, self.low_water = high_water, low_water
        self._on_verify = on_verify
        self.fleet = fleet
        self.acker = acker
        self.holding = False  # back-pressure in force
        self.counters = counters
        self.host, self.port = host, port
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self._on_stored = on_stored or (lambda: None)
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._stopping = threading.Event()
        self._drain_deadline = float("inf")
        # Guards (generation, connected) against the ack that relies on them; see module doc.
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._connect_failures = 0
        self._rejection_log = _RateLimitedLog()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)

        client = _BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(username, password)
        # Outgoing acks/replies in flight at once; paho's default of 20 throttles a busy fleet.
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # A bug in a callback must cost one message, not the network thread.
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_socket_open = tcp_nodelay
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and the MQTT network thread; connecting (and retrying) is async."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry
        # MQTT v5 lets the client bound what the broker sends unacked (Mosquitto's
        # max_inflight_messages only binds v3 clients): two commit groups' worth, so
        # the writer always has a full group waiting and back-pressure bites.
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._writer.start()
        log.info("connecting to broker %s:%d", self.host, self.port)
        self.client.connect_async(
            self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Commit and ack what has been received, then disconnect (the session stays)."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        if self._writer.is_alive():
            self._writer.join(drain_timeout + 1.0)
        # Never unsubscribe: the persistent session must keep queueing while we are away.
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected

    # -- paho callbacks (network thread) ------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error(
                "broker %s:%d refused the login: %s (check the bridge's MQTT account); retrying",
                self.host,
                self.port,
                reason_code,
            )
            return
        with self._ack_lock:
            self._generation += 1
            self._connected = True
        self._connect_failures = 0
        log.info(
            "connected to broker %s:%d (session present: %s)",
            self.host,
            self.port,
            flags.session_present,
        )
        # Harmless if the session already holds them; needed on the very first start.
        client.subscribe(
            [(topic, SubscribeOptions(qos=qos)) for topic, qos in self.subscriptions()]
        )

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) of everything this bridge subscribes to."""
        share = f"$share/{self.group}/" if self.group else ""
        subs = [(share + CHECKIN_SUBSCRIPTION, 1)]
        if self._on_verify is not None:
            subs.append((share + VERIFY_SUBSCRIPTION, 0))
        if self.fleet is not None:
            subs.extend(FLEET_SUBSCRIPTIONS)
        return subs

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._connect_failures += 1
        log.warning(
            "broker %s:%d not reachable (attempt %d); waiting for it, retrying with backoff",
            self.host,
            self.port,
            self._connect_failures,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._ack_lock:
            was_connected, self._connected = self._connected, False
        # After a refused login there was no connection to lose: on_connect said why.
        if was_connected and not self._stopping.is_set():
            log.warning("lost the broker connection (%s); reconnecting", reason_code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            topic
            for (topic, _), rc in zip(self.subscriptions(), reason_codes, strict=False)
            if rc.is_failure
        ]
        if refused:
            # Check-ins first: without them the bridge is useless; the rest degrades.
            log.error("broker refused the subscriptions %s (check the ACL)", refused)
            if any(t.endswith(CHECKIN_SUBSCRIPTION) for t in refused):
                return
        log.info(READY_MESSAGE)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""
        parts = topic.split("/")
        if len(parts) >= 3 and parts[0] == "kiosk" and parts[2] != "checkin":
            self._on_other(client, msg, parts)
            return
        self.counters.add("received")
        device = ""
        try:
            device = parts[1] if len(parts) == 3 else ""
            result: CheckIn | Rejection = parse_checkin(bytes(msg.payload), device)
        except Exception:
            # parse_checkin does not raise; this guards against the unforeseen (e.g. a
            # topic that is not UTF-8). No traceback: it could quote the payload.
            log.error("unprocessable message (mid %d); refusing it", msg.mid)
            result = Rejection("invalid", "payload: unprocessable", None)
        # on_connect runs on this same thread, so reading the generation needs no lock.
        self._queue.put(_Item(self._generation, msg.mid, msg.qos, device, result))

    def _on_other(self, client: mqtt.Client, msg: mqtt.MQTTMessage, parts: list[str]) -> None:
        """Online checks, status, telemetry, command results: handled here, acked at once.

        None of these is a promise to store: losing one in a crash costs nothing a
        kiosk relies on (an online check times out into its offline rule; status is
        retained; telemetry comes again).
        """
        device = parts[1]
        kind = "/".join(parts[2:])
        try:
            if not is_device_id(device):
                self.counters.add("telemetry_invalid")
            elif kind == "verify" and self._on_verify is not None:
                self.counters.add("verify_requests")
                self._on_verify(device, bytes(msg.payload))
            elif self.fleet is not None and kind == "status":
                if not self.fleet.status(device, bytes(msg.payload)):
                    self.counters.add("telemetry_invalid")
            elif self.fleet is not None and kind == "telemetry":
                self.counters.add("telemetry")
                if not self.fleet.telemetry(device, bytes(msg.payload)):
                    self.counters.add("telemetry_invalid")
            elif kind == "cmd/result":
                log.info("command result from %s (%d bytes)", device, len(msg.payload))
        except Exception as exc:
            log.error("could not handle a message on kiosk/…/%s (%s)", kind, type(exc).__name__)
        if msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    # -- writer thread --------------------------------------------------------------

    def _next_group(self) -> list[_Item]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < MAX_GROUP:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _hold_while_full(self) -> None:
        """Back-pressure: wait (not acking) while the spool is over its high-water mark."""
        if self.spool.depth() < self.high_water:
            return
        self.holding = True
        log.warning(
            "spool holds %d check-ins (limit %d): pausing acks; the broker queues new ones"
            " until the backlog is below %d",
            self.spool.depth(),
            self.high_water,
            self.low_water,
        )
        while self.spool.depth() > self.low_water and not self._stopping.wait(0.2):
            pass
        self.holding = False
        if not self._stopping.is_set():
            log.info("spool down to %d: accepting check-ins again", self.spool.depth())

    def _write_loop(self) -> None:
        while True:
            if self._stopping.is_set() and time.monotonic() > self._drain_deadline:
                return  # still busy at the deadline: the rest stays unacked and is redelivered
            self._hold_while_full()
            items = self._next_group()
            if not items:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._handle(items)
            except Exception as exc:
                # Type only: an exception's text could quote a payload (personal data).
                log.error(
                    "failed to handle %d messages (%s); they stay unacked",
                    len(items),
                    type(exc).__name__,
                )

    def _store(self, records: list[CheckIn]) -> StoreResult | None:
        """Commit, retrying while the disk refuses; None if stopping first (nothing acked)."""
        attempt = 0
        while True:
            try:
                return self.spool.store_detailed(records)
            except Exception as exc:
                attempt += 1
                log.error("spool commit failed (%s); retry %d", type(exc).__name__, attempt)
                if self._stopping.wait(min(5.0, 0.1 * 2**attempt)):
                    return None

    def _handle(self, items: list[_Item]) -> None:
        records = [i.result for i in items if isinstance(i.result, CheckIn)]
        if records:
            stored = self._store(records)
            if stored is None:
                return
            if self.fleet is not None:
                self.fleet.seen_many({r.device for r in records})
            self.counters.add("stored", stored.new)
            self.counters.add("duplicates", stored.duplicates)
            if stored.new:
                self._on_stored()
        for item in items:
            if isinstance(item.result, Rejection):
                rej = item.result
                self.counters.add("rejected")
                self._rejection_log.warning(
                    "rejected a message on kiosk/%s/checkin: %s (%s), seq %s",
                    item.device,
                    rej.error,
                    rej.detail,
                    rej.seq,
                )

        # Everything in `items` is now durable (or refused). Tell the kiosks first, then
        # release the messages at the broker: a crash in between only means a redelivery.
        current = self._generation
        acks: dict[str, set[int]] = {}
        for item in items:
            if item.generation != current:
                continue  # from an earlier connection: the broker redelivers it
            if isinstance(item.result, CheckIn):
                acks.setdefault(item.device, set()).add(item.result.seq)
            else:
                self.client.publish(f"kiosk/{item.device}/reply", item.result.to_payload(), qos=1)
        if acks and not (self.acker is not None and self.acker.send(acks)):
            for device, seqs in acks.items():
                self.client.publish(f"kiosk/{device}/ack", ack_body(sorted(seqs)), qos=1)
        with self._ack_lock:
            # Checked again under the lock: a reconnect may have happened meanwhile.
            for item in items:
                if self._connected and item.generation == self._generation:
                    self.client.ack(item.mid, item.qos)
