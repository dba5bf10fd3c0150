# The online check for identity-only codes (PC-COVID, CCCD): the kiosk asks
# the bridge on kiosk/<device>/verify (QoS 0) and shows "checking" while the
# scan loop keeps running; the answer on kiosk/<device>/verify/result decides,
# or, once the policy's deadline has passed (or the connection is gone), the
# venue's offline rule does. A late answer no longer matches the pending
# request id (rid) and is ignored. Wire format: docs/protocol.md "Online check".
#
# After a check times out, the next ones are not asked for RETRY_MS (the
# service, or the path to it, is evidently down: nobody should wait out the
# deadline in turn while the MQTT session has not noticed yet); any answer
# that arrives, even a late one, ends that pause at once.
# Heap: one pending request (its Result and the caller's context) and the
# request's JSON (~100 bytes).

import json
import random

from kiosk import verdict
from kiosk.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

_RID_MAX = const(0x7FFFFFFF)
RETRY_MS = const(15000)
_REASON_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _reason_ok(r):
    if not isinstance(r, str) or not 1 <= len(r) <= 32:
        return False
    for c in r:
        if _REASON_CHARS.find(c) < 0:
            return False
    return True


class Online:
    """At most one check in flight (the gate serves one person at a time)."""

    def __init__(self, device, first_rid=None):
        self.topic = "kiosk/" + device + "/verify"
        self.result_topic = self.topic + "/result"
        self._rid = first_rid if first_rid else random.getrandbits(30) + 1
        self.rid = 0
        self.pending = None  # the pending verdict.Result
        self.context = None  # whatever the caller needs to finish the scan
        self._since = 0
        self.answered = 0
        self.timeouts = 0
        self._paused_at = None  # ticks of the last timeout, while checks are paused

    def available(self, now_ms):
        """False for RETRY_MS after a check timed out (until an answer arrives)."""
        if self._paused_at is None:
            return True
        if ticks_diff(now_ms, self._paused_at) >= RETRY_MS:
            self._paused_at = None
            return True
        return False

    def busy(self):
        return self.pending is not None

    def request(self, code, result, now_ms, context=None):
        """Start a check for `code` (a pending Result from verdict.decide).
        Returns the request payload (bytes) to publish on self.topic."""
        rid = self._rid
        self._rid = rid % _RID_MAX + 1
        self.rid = rid
        self.pending = result
        self.context = context
        self._since = now_ms
        return json.dumps({"v": 1, "rid": rid, "type": code.type, "id": code.ident}).encode()

    def _finish(self, result):
        context = self.context
        self.pending = None
        self.context = None
        return context, result

    def answer(self, payload):
        """An answer arrived. Returns (context, final Result) when it is the
        answer to the pending request, None otherwise (late, foreign or
        malformed: ignored, the deadline still applies)."""
        try:
            msg = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(msg, dict) or msg.get("v") != 1:
            return None
        self._paused_at = None  # the service answers again, even if too late for one
        pending = self.pending
        if pending is None or msg.get("rid") != self.rid:
            return None
        outcome = msg.get("result")
        reason = msg.get("reason")
        if outcome == "pass":
            res = verdict.Result(verdict.PASS, verdict.ONLINE, None, pending.name)
        elif outcome == "fail":
            why = reason if _reason_ok(reason) else "online_refused"
            res = verdict.Result(verdict.FAIL, verdict.ONLINE, why, pending.name)
        elif outcome == "unknown":
            res = verdict.offline_rule(pending, "online_unknown")
        else:
            return None
        self.answered += 1
        return self._finish(res)

    def expired(self, now_ms):
        """(context, Result by the offline rule) once the deadline has passed;
        None while there is still time or nothing is pending."""
        pending = self.pending
        if pending is None or ticks_diff(now_ms, self._since) < pending.deadline_ms:
            return None
        self.timeouts += 1
        self._paused_at = now_ms
        return self._finish(verdict.offline_rule(pending, "online_timeout"))

    def abandon(self, reason):
        """The connection is gone: decide now by the offline rule."""
        if self.pending is None:
            return None
        return self._finish(verdict.offline_rule(self.pending, reason))
