# The gate: what happens between a well-formed code and its recorded verdict.
#
#   repeat of a code within the policy's dedup window -> the previous screen
#   again, nothing recorded; while that verdict is still on screen (HOLD_MS,
#   a phone held under a scanner in continuous mode is read again and again)
#   not even that, whatever dedup_s says: no second beep, no second check-in
#   otherwise verdict.decide() with the fleet's policy and trust list
#     final  -> record (the app journals, shows and sends it)
#     needs_online -> request on kiosk/<device>/verify, show "checking",
#        hold further scans; the answer, the deadline or a lost connection
#        settle it (kiosk/online.py), then record
#
# The app calls scan(), poll() every loop pass and message() for each MQTT
# message; nothing here blocks (design invariant 4).
# Heap: the dedup ring (~1.5 KB), one pending check, the fleet documents.

from kiosk import dedup, log, online, ui, verdict
from kiosk.fleet import Fleet
from kiosk.mqtt import UP
from kiosk.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

HOLD_MS = const(2500)  # as long as a verdict stays on screen (kiosk/app.py SHOW_MS)


class Decision:
    """A settled verdict, ready to record."""

    def __init__(self, code, result, key):
        self.code = code
        self.result = result
        self.key = key  # dedup key of the code


class Gate:
    def __init__(self, board, cfg, mqtt, show, record, now):
        """`show(screen)` puts a screen up; `record(decision)` journals, shows
        and sends a settled verdict and returns its screen (None if it could
        not be recorded); `now()` is Unix seconds, or None while the clock is
        unknown (kiosk/clock.py Clock.now: certificates' dates cannot be
        checked then, and documents' staleness is not judged)."""
        self.board = board
        self.now = now
        self.mqtt = mqtt
        self._show = show
        self._record = record
        self.fleet = Fleet(board, cfg)
        self.online = online.Online(cfg["device"])
        self.seen = dedup.Dedup()
        self.repeats = 0
        self._last_key = b""  # the code whose verdict was shown last, and when
        self._last_ms = 0
        # Safe mode (kiosk/health.py) turns this off: identity codes go straight
        # to the offline rule.
        self.online_enabled = True

    def start(self, load_documents=True):
        """At boot: the stored documents, unless in safe mode (a document that
        crashed the kiosk must not crash it again): then the built-in policy,
        no trust list and no online checks."""
        if load_documents:
            self.fleet.load(self.now())
        else:
            self.online_enabled = False
            log.warn("fleet", "safe mode: built-in policy, no trust list")

    def busy(self):
        """True while an online check is pending: further scans wait."""
        return self.online.busy()

    def topics(self):
        """What the app subscribes to (QoS): the online answers, the fleet documents."""
        out = [(self.online.result_topic, 0)]
        for t in self.fleet.topics:
            out.append((t, 1))
        return out

    def scan(self, frame, code, now_ms):
        """A well-formed code (codes.OK) was read from `frame` (bytes)."""
        key = dedup.key(frame)
        policy = self.fleet.policy
        if key == self._last_key and ticks_diff(now_ms, self._last_ms) < HOLD_MS:
            self._last_ms = now_ms  # still held under the scanner (even with dedup off)
            self.repeats += 1
            return
        screen = self.seen.seen(key, now_ms, policy.dedup_s)
        if screen is not None:
            self.repeats += 1
            self._last_key, self._last_ms = key, now_ms
            log.info("scan", "repeat of a %s code: previous verdict shown" % code.type)
            self._show(screen)
            return
        res = verdict.decide(code, policy, self.fleet.trust, self.now())
        if not res.needs_online:
            self._settle(Decision(code, res, key), now_ms)
            return
        if (self.mqtt.state != UP or not self.online_enabled
                or not self.online.available(now_ms)):  # no answer could come in time
            self._settle(Decision(code, verdict.offline_rule(res, "offline"), key), now_ms)
            return
        payload = self.online.request(code, res, now_ms, Decision(code, None, key))
        if not self.mqtt.publish(self.online.topic, payload, 0):
            done = self.online.abandon("offline")
            if done:
                self._finish(done, now_ms)
            return
        self._show(ui.checking(res.name))

    def _finish(self, done, now_ms):
        context, res = done
        context.result = res
        self._settle(context, now_ms)

    def _settle(self, decision, now_ms):
        screen = self._record(decision)
        if screen is not None:
            self.seen.remember(decision.key, now_ms, screen)
            self._last_key, self._last_ms = decision.key, now_ms

    def poll(self, now_ms):
        """Every loop pass: settle a pending check whose deadline has passed
        or whose connection is gone."""
        if not self.online.busy():
            return
        if self.mqtt.state != UP:
            done = self.online.abandon("offline")
        else:
            done = self.online.expired(now_ms)
        if done:
            self._finish(done, now_ms)

    def message(self, topic, payload, now_ms):
        """An MQTT message. Returns True if it was the gate's (handled)."""
        if topic == self.online.result_topic:
            done = self.online.answer(payload)
            if done:
                self._finish(done, now_ms)
            return True
        kind = self.fleet.kind_of(topic)
        if kind is None:
            return False
        if not payload:
            return True  # a cleared retained message: keep what we hold
        if self.fleet.apply(kind, payload, self.now()) is None:
            self.seen.forget()  # new rules or signers may decide a repeat differently
        return True
