# The kiosk's main loop: read a frame from the scanner, decide, journal,
# show, send. One loop, no threads; nothing in the scan path waits on the
# network (the MQTT client never blocks, see kiosk/mqtt.py).
#
#   scanner bytes -> FrameReader -> codes.read -> decide -> journal.append
#                 -> board.show -> mqtt.publish (now, or replayed later)
#
# The journal is written before the verdict is shown, so a check-in the
# display confirmed survives a power cut at any instruction.
# Heap: ~6 KB for the app state plus the modules' own (see each module).

import json
import random
import time

from kiosk import checkin, codes, gm65, log, ui
from kiosk import mqtt as mqttc
from kiosk.gate import Gate
from kiosk.journal import Journal
from kiosk.scanner import TOO_LONG, FrameReader
from kiosk.version import VERSION

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

SHOW_MS = const(2500)  # how long a verdict stays on screen
MAX_INFLIGHT = const(32)  # check-ins published but not yet acknowledged
RESEND_MS = const(15000)  # republish a check-in the bridge has not acked by then
BACKOFF_MIN_MS = const(500)
BACKOFF_MAX_MS = const(30000)
LOOP_MS = const(50)  # longest sleep when idle (keeps timers and buzzer smooth)


class Kiosk:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.device = cfg["device"]
        self.reader = FrameReader()
        self.journal = Journal(board.path("journal.log"))
        self.inflight = {}  # seq -> ticks when last published
        self.frames = []
        self.shown_at = None
        self.backoff = BACKOFF_MIN_MS
        self.next_connect = 0
        self.counts = {"scans": 0, "pass": 0, "refused": 0, "unreadable": 0, "sent": 0,
                       "acked": 0, "reconnects": 0}
        b = cfg["broker"]
        self.mqtt = mqttc.MQTTClient(
            self.device, b["host"], b["port"], user=b.get("user", self.device),
            password=b["password"], keepalive=b.get("keepalive", 30),
            will_topic=checkin.topic(self.device, "status"), will_msg=b"offline")
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_down = self._on_down
        # Verdicts: policy, trust list, online check, repeats (kiosk/gate.py).
        self.gate = Gate(board, cfg, self.mqtt, self._show, self._record)
        self.scanner_fault = None  # "scanner" when the module did not take its setup

    # -- scan path -----------------------------------------------------------

    def handle_frame(self, frame):
        """One frame from the scanner (bytes, or TOO_LONG / TIMED_OUT)."""
        self.counts["scans"] += 1
        if not isinstance(frame, bytes):
            self._unreadable("too long" if frame == TOO_LONG else "no terminator")
            return
        try:
            text = str(frame, "utf-8")
        except UnicodeError:
            self._unreadable("not UTF-8")
            return
        code = codes.read(text)
        if code.status == codes.UNSUPPORTED:
            self._unreadable("unsupported")
            return
        if code.status == codes.INVALID:
            self.counts["refused"] += 1
            log.info("scan", "refused %s: %s" % (code.type, code.reason))
            self._show(ui.refused(code.reason))
            return
        self.gate.scan(frame, code, self.board.ticks_ms())  # calls _record when settled

    def _record(self, decision):
        """Journal, show and send a settled verdict (kiosk/gate.py Decision).
        Returns the screen shown, or None if it could not be recorded."""
        code, res = decision.code, decision.result
        seq = self.journal.next_seq()
        payload = checkin.encode(self.cfg, seq, decision.ts, code, res.verdict, res.how,
                                 res.reason)
        try:
            self.journal.append(seq, payload)  # durable before anything is shown
        except OSError as e:
            # Flash full or failing: a check-in that cannot be kept is not admitted.
            self.counts["refused"] += 1
            log.error("journal", "cannot store check-in %d: %s" % (seq, e))
            self._show(ui.refused("storage"))
            return None
        self.counts["pass" if res.verdict == "pass" else "refused"] += 1
        screen = ui.verdict(res)
        self._show(screen)
        log.info("scan", "check-in %d %s %s %s %s" % (seq, code.type, res.verdict, res.how,
                                                     res.reason))
        self._publish(seq, payload)
        return screen

    def _unreadable(self, why):
        self.counts["unreadable"] += 1
        log.info("scan", "unreadable: " + why)
        self._show(ui.unreadable())

    def _show(self, screen):
        self.board.show(screen)
        self.shown_at = self.board.ticks_ms()

    # -- sending -------------------------------------------------------------

    def _publish(self, seq, payload):
        if len(self.inflight) >= MAX_INFLIGHT:
            return
        if self.mqtt.publish(checkin.topic(self.device, "checkin"), payload, 1):
            self.inflight[seq] = self.board.ticks_ms()
            self.counts["sent"] += 1

    def _replay(self, now):
        # Publish journaled check-ins not in flight, oldest first; republish
        # those the bridge has not acknowledged in time.
        if self.mqtt.state != mqttc.UP:
            return
        pending = self.journal.pending
        inflight = self.inflight
        # Cheap checks first: this runs every loop pass, and sorting a large
        # offline backlog each time would starve the scan path.
        resend_due = False
        for sent in inflight.values():
            if time.ticks_diff(now, sent) >= RESEND_MS:
                resend_due = True
                break
        if not resend_due and len(inflight) >= min(len(pending), MAX_INFLIGHT):
            return
        for seq in self.journal.pending_seqs():
            if len(self.inflight) >= MAX_INFLIGHT or not self.mqtt.can_send(512):
                return
            sent = self.inflight.get(seq)
            if sent is not None and time.ticks_diff(now, sent) < RESEND_MS:
                continue
            if sent is not None:
                del self.inflight[seq]
            if seq in pending:
                payload = self.journal.read(seq)
                if payload is not None:
                    self._publish(seq, payload)

    def _on_connect(self):
        log.info("mqtt", "connected (session present: %s)" % self.mqtt.session_present)
        self.backoff = BACKOFF_MIN_MS
        self.inflight = {}
        self.mqtt.subscribe(checkin.topic(self.device, "ack"), 1)
        self.mqtt.subscribe(checkin.topic(self.device, "reply"), 1)
        for topic, qos in self.gate.topics():
            self.mqtt.subscribe(topic, qos)
        self.mqtt.publish(checkin.topic(self.device, "status"), b"online", 1, True)

    def _on_down(self, reason):
        log.warn("mqtt", "down: " + reason)
        self.inflight = {}
        self.counts["reconnects"] += 1
        # Exponential backoff with full jitter, so a fleet does not reconnect in step.
        delay = random.getrandbits(16) % self.backoff + 1
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_MS)
        self.next_connect = time.ticks_add(self.board.ticks_ms(), delay)

    def _on_message(self, topic, payload):
        if self.gate.message(topic, payload, self.board.ticks_ms()):
            return  # online check answer or fleet document
        try:
            msg = json.loads(payload)
        except ValueError:
            log.warn("mqtt", "bad message on " + topic)
            return
        if not isinstance(msg, dict):
            return
        if topic.endswith("/ack"):
            seqs = msg.get("seq")
            if isinstance(seqs, list):
                freed = 0
                for seq in seqs:
                    if isinstance(seq, int) and self.journal.ack(seq):
                        self.inflight.pop(seq, None)
                        freed += 1
                self.counts["acked"] += freed
                log.info("journal", "bridge stored %d, %d waiting"
                         % (freed, len(self.journal.pending)))
        elif topic.endswith("/reply"):
            seq = msg.get("seq")
            log.warn("bridge", "rejected check-in %s: %s %s"
                     % (seq, msg.get("error"), msg.get("detail")))
            if isinstance(seq, int) and self.journal.ack(seq):
                self.inflight.pop(seq, None)

    # -- the loop ------------------------------------------------------------

    def step(self, timeout_ms):
        """One pass of the main loop; waits at most timeout_ms for input."""
        board = self.board
        mq = self.mqtt
        board.wait(timeout_ms, mq.sock if mq.state != mqttc.DOWN else None)
        now = board.ticks_ms()
        data = board.scanner_read()
        frames = self.frames
        if data:
            self.reader.feed(data, now, frames)
        else:
            self.reader.tick(now, frames, time.ticks_diff)
        while frames and not self.gate.busy():  # one person at a time at the gate
            self.handle_frame(frames.pop(0))
        self.gate.poll(now)
        if self.shown_at is not None and time.ticks_diff(now, self.shown_at) > SHOW_MS:
            self.shown_at = None
            board.show(ui.idle(self.cfg["gate"], self.scanner_fault))
        if mq.state == mqttc.DOWN:
            if board.network_up() and time.ticks_diff(now, self.next_connect) >= 0:
                if not mq.start(now):
                    pass  # on_down already scheduled the next attempt
        else:
            mq.service(now)
            self._replay(now)
        board.tick(now)

    def run(self):
        log.info("app", "kiosk %s fw %s, %d check-ins waiting in the journal"
                 % (self.device, VERSION, len(self.journal.pending)))
        err = gm65.setup(self.board)  # continuous mode, CR tail, 9600; read back
        if err:
            self.scanner_fault = "scanner"  # the kiosk runs on; staff see the fault
            log.error("scanner", "GM65 setup failed: " + err)
        self.gate.start()  # the stored policy and trust list, verified again
        self.board.show(ui.scanner_fault() if err else ui.idle(self.cfg["gate"]))
        self.shown_at = self.board.ticks_ms() if err else None
        while True:
            try:
                self.step(LOOP_MS)
            except Exception as e:  # last resort: a bug must not close the entrance
                log.error("app", "loop error: %r" % (e,))
                self.mqtt.close()
                self._on_down("loop error")  # start the session afresh, after a backoff


def main(board):
    """Boot: show the version, load and check the config, then run forever."""
    from kiosk import config

    board.show(ui.boot(VERSION))
    cfg, err = config.load(board.path("config.json"), need_wifi=board.HAS_WIFI)
    if err:
        log.error("config", err)
        board.show(ui.config_error(err.split(":")[0]))
        while True:  # nothing safe to do without a config; keep the message up
            board.wait(1000, None)
            board.tick(board.ticks_ms())
    board.start_network(cfg)
    Kiosk(board, cfg).run()
