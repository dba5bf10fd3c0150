# The kiosk's link to the bridge: the MQTT session, the journal's replay,
# acknowledgements, telemetry and commands. The app calls store() in the
# scan path (journal only, no network) and service() once per loop pass.
#
#   store()    -> journal.add: durable before the verdict is shown; when the
#                 journal is full, the configured policy (refuse / admit)
#   service()  -> connect (backoff with full jitter, capped), mqtt.service,
#                 replay (in order, paced), resend timeout, telemetry, reboot
#
# Replay pacing: after a reconnect with a backlog the kiosk waits a random
# 0..replay_delay_s (at most the time its backlog takes), then publishes at
# most replay_per_s check-ins a second
# (token bucket, burst of one second's worth), so a fleet coming back at once
# reaches the bridge spread out. At most MAX_INFLIGHT check-ins are published
# and not yet acknowledged; when the oldest has waited RESEND_MS for the
# bridge's ack, the replay goes back to the oldest pending one (the bridge
# and the backend deduplicate on device + seq).
# Heap: the session (kiosk/mqtt.py), one check-in payload at a time (~300 B),
# the in-flight list (MAX_INFLIGHT pairs), the counters; ~3 KB.

import gc
import json
import random
import time

from kiosk import log, telemetry, unload
from kiosk import mqtt as mqttc
from kiosk.version import VERSION

try:
    from typing import Callable  # for type checkers; MicroPython ignores annotations
except ImportError:
    pass

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_INFLIGHT = const(32)  # check-ins published, bridge's ack not yet in
RESEND_MS = const(20000)
BACKOFF_MIN_MS = const(500)
HEAP_SAMPLE_MS = const(5000)
REBOOT_DELAY_MS = const(500)  # let the command's reply go out first


def topic(device, leaf):
    return "kiosk/" + device + "/" + leaf


class Link:
    def __init__(self, board, cfg, journal, clock, health, counts):
        self.board = board
        self.cfg = cfg
        self.journal = journal
        self.clock = clock
        self.health = health
        self.counts = counts
        self.device = cfg["device"]
        self.safe_mode = health.safe_mode
        b = cfg["broker"]
        j = cfg["journal"]
        self.when_full = j["when_full"]
        self.rate = j["replay_per_s"]
        self.replay_delay_ms = j["replay_delay_s"] * 1000
        self.backoff_max = b["backoff_max_s"] * 1000
        self.backoff = BACKOFF_MIN_MS
        self.next_connect = board.ticks_ms()
        self.failures = 0
        self.mqtt = mqttc.MQTTClient(
            self.device, b["host"], b["port"], user=b["user"], password=b.get("password"),
            keepalive=b["keepalive"], will_topic=topic(self.device, "status"),
            will_msg=b"offline", tls=b.get("tls"))
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_down = self._on_down
        # Hooks for the rest of the app (verdicts): extra subscriptions, messages.
        self.subscriptions = []  # (topic, qos), subscribed at every connect
        self.on_message: Callable[[str, bytes], None] | None = None  # topics not ours
        self.on_up: Callable[[], None] | None = None  # called after every connect
        self.inflight = []  # [seq, ticks published], oldest first
        self.tokens = 0
        self.t_tokens = board.ticks_ms()
        self.replay_at = None
        self._held = None  # a record waiting for the clock
        self.telemetry_ms = cfg["telemetry_s"] * 1000
        self.next_telemetry = time.ticks_add(board.ticks_ms(), 5000)
        gc.collect()  # the low-water mark counts live data, not the boot's garbage
        self.heap_min = gc.mem_free()
        self.t_heap = board.ticks_ms()
        self.reboot_at = None
        self.full_reported = False

    # -- scan path: journal only -------------------------------------------------

    def store(self, type_, ident, verdict, how, reason=None):
        """Journal a check-in before it is shown. Returns its seq (> 0); 0 when
        the journal is full and the policy admits without recording (counted as
        unrecorded); -1 when it must be refused (full and "refuse", or a flash
        error). Never touches the network."""
        ts, up = self.clock.stamp()
        try:
            seq = self.journal.add(type_, ident, verdict, how, reason, ts, up)
        except OSError as e:
            self.counts["errors"] += 1
            log.error("journal", "cannot store check-in: %s" % e)
            return -1
        if seq:
            self.full_reported = False
            return seq
        if not self.full_reported:
            self.full_reported = True
            log.error("journal", "full (%d waiting): policy %s" % (self.journal.pending,
                                                                self.when_full))
        if self.when_full == "admit":
            self.counts["unrecorded"] += 1
            return 0
        return -1

    # -- session -----------------------------------------------------------------

    def _on_connect(self):
        mq = self.mqtt
        log.info("mqtt", "connected (session present: %s)" % mq.session_present)
        self.backoff = BACKOFF_MIN_MS
        self.failures = 0
        now = self.board.ticks_ms()
        for item in self.inflight:
            item[1] = now  # the resend clock restarts with the session
        mq.subscribe(topic(self.device, "ack"), 1)
        mq.subscribe(topic(self.device, "reply"), 1)
        mq.subscribe(topic(self.device, "cmd"), 1)
        for t, qos in self.subscriptions:
            mq.subscribe(t, qos)
        mq.publish(topic(self.device, "status"), b"online", 1, True)
        # Spread a fleet's replays over up to replay_delay_s, but never longer
        # than this kiosk's backlog takes to send: a few records go at once.
        window = min(self.replay_delay_ms, self.journal.pending * 1000 // self.rate)
        delay = random.getrandbits(20) % (window + 1) if window > 0 else 0
        self.replay_at = time.ticks_add(now, delay)
        self.tokens = 0
        self.t_tokens = now
        if self.on_up:
            self.on_up()

    def _on_down(self, reason):
        log.warn("mqtt", "down: " + reason)
        self.counts["reconnects"] += 1
        self.replay_at = None
        self.failures += 1
        if self.failures % 5 == 0:
            self.mqtt.forget_address()  # the broker's name may point elsewhere now
        # Exponential backoff with full jitter, so a fleet does not reconnect in step.
        delay = random.getrandbits(20) % self.backoff + 1
        self.backoff = min(self.backoff * 2, self.backoff_max)
        self.next_connect = time.ticks_add(self.board.ticks_ms(), delay)

    def _on_message(self, t, payload):
        dev = "kiosk/" + self.device + "/"
        if not t.startswith(dev):
            if self.on_message:
                self.on_message(t, payload)
            return
        leaf = t[len(dev):]
        if leaf == "cmd":
            self._command(payload)
            return
        if leaf not in ("ack", "reply"):
            if self.on_message:
                self.on_message(t, payload)
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            log.warn("mqtt", "bad message on " + t)
            return
        if not isinstance(msg, dict):
            return
        if leaf == "ack":
            seqs = msg.get("seq")
            if isinstance(seqs, list):
                freed = self._acked(seqs)
                log.info("journal", "bridge stored %d, %d waiting"
                         % (freed, self.journal.pending))
        else:
            seq = msg.get("seq")
            log.warn("bridge", "rejected check-in %s: %s %s"
                     % (seq, msg.get("error"), msg.get("detail")))
            if isinstance(seq, int):
                self._acked([seq])

    def _acked(self, seqs):
        """Forget acknowledged check-ins; returns how many were still pending."""
        freed = self.journal.ack(seqs)
        self.counts["acked"] += freed
        fl = self.inflight
        i = 0
        while i < len(fl):
            if fl[i][0] in seqs:
                fl.pop(i)
            else:
                i += 1
        return freed

    def _command(self, payload):
        # Commands are rare: their code (and the self-test's) is loaded for
        # the one and unloaded after it (kiosk/__init__.py).
        from kiosk import commands

        try:
            reply, action = commands.handle(payload, self)
        finally:
            del commands
            unload("commands", "selftest", "gm65", "config")
        if reply is not None:
            self.mqtt.publish(topic(self.device, "cmd/result"), reply, 1)
        if action == "reboot":
            self.reboot_at = time.ticks_add(self.board.ticks_ms(), REBOOT_DELAY_MS)

    # -- replay ------------------------------------------------------------------

    def _payload(self, rec):
        when = self.journal.ts_of(rec, self.clock)
        if when is None:
            return None
        meta = rec.meta or self.journal.meta
        d = {"v": 1, "device": self.device, "venue": meta[1], "gate": meta[2],
             "seq": rec.seq, "ts": when[0], "type": rec.type, "id": rec.ident,
             "verdict": rec.verdict, "how": rec.how, "fw": meta[3]}
        if rec.reason:
            d["reason"] = rec.reason
        if when[1]:
            d["clock"] = "estimated"
        return json.dumps(d).encode()

    def _replay(self, now):
        if self.replay_at is None or time.ticks_diff(now, self.replay_at) < 0:
            return
        fl = self.inflight
        if fl and time.ticks_diff(now, fl[0][1]) > RESEND_MS:
            log.warn("journal", "no ack for check-in %d: resending from the oldest" % fl[0][0])
            self.journal.rewind()
            self.inflight = fl = []
            self._held = None
        # Token bucket: `rate` a second, at most one second's worth saved up.
        dt = time.ticks_diff(now, self.t_tokens)
        if dt > 0:
            self.tokens = min(self.rate * 1000, self.tokens + dt * self.rate)
            self.t_tokens = now
        mq = self.mqtt
        t = topic(self.device, "checkin")
        while len(fl) < MAX_INFLIGHT and self.tokens >= 1000 and mq.can_send(600):
            rec = self._held or self.journal.next_record()
            if rec is None:
                return
            payload = self._payload(rec)
            if payload is None:
                self._held = rec  # taken before the clock was set: wait for it
                return
            self._held = None
            if not mq.publish(t, payload, 1):
                self._held = rec
                return
            self.tokens -= 1000
            fl.append([rec.seq, now])
            self.counts["sent"] += 1

    # -- the loop ------------------------------------------------------------------

    def service(self, now, idle):
        """Once per loop pass. idle: no verdict on screen (a name lookup may block)."""
        mq = self.mqtt
        if idle and time.ticks_diff(now, self.t_heap) >= HEAP_SAMPLE_MS:
            # Collect while nobody waits (a few ms), then note the live low-water mark.
            self.t_heap = now
            gc.collect()
            free = gc.mem_free()
            if free < self.heap_min:
                self.heap_min = free
        if mq.state == mqttc.DOWN:
            if self.reboot_at is not None:
                self.board.reset("soft")
            if time.ticks_diff(now, self.next_connect) >= 0:
                if not self.board.network_up():
                    self.next_connect = time.ticks_add(now, 1000)
                elif idle or not mq.needs_dns():
                    mq.start(now)  # on failure, on_down has scheduled the next try
            return
        mq.service(now)
        if mq.state != mqttc.UP:
            return
        if not self.board.network_up():
            mq.close()  # Wi-Fi gone: do not wait for the keepalive to notice
            self._on_down("wifi lost")
            return
        self._replay(now)
        if time.ticks_diff(now, self.next_telemetry) >= 0:
            self.next_telemetry = time.ticks_add(now, self.telemetry_ms)
            self.send_telemetry()
        mq.flush()  # what this pass queued leaves now, not after the next wait
        if self.reboot_at is not None and time.ticks_diff(now, self.reboot_at) >= 0:
            log.info("app", "rebooting (command)")
            self.stop()
            self.board.reset("soft")

    def stop(self):
        """Leave the broker for good (maintenance): status offline, DISCONNECT."""
        mq = self.mqtt
        if mq.state == mqttc.UP:
            mq.publish(topic(self.device, "status"), b"offline", 1, True)
        mq.disconnect()

    def send_telemetry(self):
        self.mqtt.publish(topic(self.device, "telemetry"), telemetry.payload(self), 0)

    def status(self):
        """The telemetry figures as a dict (also the status command's result)."""
        return telemetry.figures(self)

    def version(self):
        return VERSION


def storage_screen(full):
    """What the kiosk shows when a check-in cannot be recorded."""
    from kiosk import ui

    if full:
        return ui.Screen("KHONG GHI DUOC", "Bo nho day", "red", "fail")
    return ui.refused("storage")
