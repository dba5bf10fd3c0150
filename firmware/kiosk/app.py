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

import gc
import time

from kiosk import codes, log, ui, unload
from kiosk import mqtt as mqttc
from kiosk.clock import Clock
from kiosk.gate import Gate
from kiosk.health import Health, safe_screen
from kiosk.journal import Journal
from kiosk.link import Link, storage_screen
from kiosk.scanner import TOO_LONG, FrameReader
from kiosk.version import VERSION

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

SHOW_MS = const(2500)  # how long a verdict stays on screen
LOOP_MS = const(50)  # longest sleep when idle (keeps timers and buzzer smooth)


class Kiosk:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.device = cfg["device"]
        self.reader = FrameReader()
        self.frames = []
        self.shown_at = None
        # Field survival (issue 4): crash-loop state, clock, journal, MQTT link.
        sm = cfg["safe_mode"]
        self.health = Health(board, sm["crashes"], sm["window_s"])
        self.safe_mode = self.health.safe_mode  # skip fleet documents, online checks
        self.clock = Clock(board, cfg["ntp"], board.ticks_ms())
        self.clock.on_sync = self._clock_set
        self.journal = Journal(board.path("journal"), (self.device, cfg["venue"], cfg["gate"],
                               VERSION), cfg["journal"]["max_bytes"], self.health.boot)
        self.counts = {"scans": 0, "pass": 0, "fail": 0, "unreadable": 0, "errors": 0,
                       "unrecorded": 0, "sent": 0, "acked": 0, "reconnects": 0}
        self.link = Link(board, cfg, self.journal, self.clock, self.health, self.counts)
        self.link.on_message = self._on_message
        self.link.on_up = self._on_up
        self.mqtt = self.link.mqtt
        # Verdicts: policy, trust list, online check, repeats (kiosk/gate.py).
        self.gate = Gate(board, cfg, self.mqtt, self._show, self._record, self.clock.now)
        self.scanner_fault = None  # "scanner" when the module did not take its setup
        self.maint_ms = 0  # after ctrl-C: how long the board feeds the watchdog

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
            self.counts["fail"] += 1
            log.info("scan", "refused %s: %s" % (code.type, code.reason))
            self._show(ui.refused(code.reason))
            return
        self.gate.scan(frame, code, self.board.ticks_ms())  # calls _record when settled

    def _record(self, decision):
        """Journal, show and send a settled verdict (kiosk/gate.py Decision).
        Returns the screen shown, or None if it could not be recorded."""
        code, res = decision.code, decision.result
        # Durable before anything is shown; the link sends it (kiosk/link.py).
        seq = self.link.store(code.type, code.ident, res.verdict, res.how, res.reason)
        if seq < 0:
            # Flash full or failing: a check-in that cannot be kept is not admitted.
            self.counts["fail"] += 1
            self._show(storage_screen(self.journal.full))
            return None
        self.counts["pass" if res.verdict == "pass" else "fail"] += 1
        screen = ui.verdict(res)
        self._show(screen)
        log.info("scan", "check-in %d %s %s %s %s" % (seq, code.type, res.verdict, res.how,
                                                     res.reason))
        return screen

    def _unreadable(self, why):
        self.counts["unreadable"] += 1
        log.info("scan", "unreadable: " + why)
        self._show(ui.unreadable())

    def _show(self, screen):
        self.board.show(screen)
        self.shown_at = self.board.ticks_ms()

    # -- messages (the session, acks and commands live in kiosk/link.py) -----

    def _on_up(self):
        if self.safe_mode:
            return  # no fleet documents or online checks in safe mode
        for topic, qos in self.gate.topics():
            self.mqtt.subscribe(topic, qos)

    def _on_message(self, topic, payload):
        if not self.safe_mode:
            self.gate.message(topic, payload, self.board.ticks_ms())

    # -- the loop ------------------------------------------------------------

    def step(self, timeout_ms):
        """One pass of the main loop; waits at most timeout_ms for input."""
        board = self.board
        mq = self.mqtt
        board.wait(timeout_ms, mq.raw if mq.state != mqttc.DOWN else None)
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
        if (self.shown_at is not None and time.ticks_diff(now, self.shown_at) > SHOW_MS
                and not self.gate.busy()):  # "checking" stays up until the verdict
            self.shown_at = None
            board.show(self._idle_screen())
        idle = self.shown_at is None  # a blocking DNS lookup only with nothing on screen
        self.clock.service(now, idle)
        self.link.service(now, idle)
        board.tick(now)

    def _idle_screen(self):
        if self.safe_mode and not self.scanner_fault:
            return safe_screen(self.cfg["gate"])
        return ui.idle(self.cfg["gate"], self.scanner_fault)

    def _clock_set(self):
        try:
            self.journal.note_boot_start(self.clock.boot_unix)
        except OSError as e:
            log.error("journal", "cannot note the boot time: %s" % e)

    def run(self):
        log.info("app", "kiosk %s fw %s, %d check-ins waiting in the journal"
                 % (self.device, VERSION, self.journal.pending))
        if self.health.reset_cause != "power":
            log.info("app", "started after a %s reset" % self.health.reset_cause)
        err = _setup_scanner(self.board)
        if err:
            self.scanner_fault = "scanner"  # the kiosk runs on; staff see the fault
            log.error("scanner", "GM65 setup failed: " + err)
        self.gate.start(not self.safe_mode)  # the stored policy and trust list, verified again
        self.board.show(ui.scanner_fault() if err else self._idle_screen())
        self.shown_at = self.board.ticks_ms() if err else None
        if self.safe_mode:
            log.warn("app", "safe mode: %d crashes in a row" % self.health.streak)
        self.health.start_watchdog()
        gc.collect()  # the boot's garbage, before the loop's first allocations
        try:
            while True:
                try:
                    self.step(LOOP_MS)
                    self.health.feed(self.board.ticks_ms())  # only after a completed pass
                except Exception as e:  # last resort: a bug must not close the entrance
                    self.counts["errors"] += 1
                    log.error("app", "loop error: %r" % (e,))
                    if self.mqtt.state != mqttc.DOWN:
                        self.mqtt.close()
                        self.link._on_down("loop error")  # start afresh, after a backoff
        except KeyboardInterrupt:  # ctrl-C: a technician's tool wants the REPL
            self.maintenance()

    def maintenance(self):
        """Stop for a technician's REPL session: the watchdog fed by the board
        for a while (kiosk/health.py), the screen says so, the broker is left
        cleanly, the journal closed. Returns; main.py ends and the REPL runs."""
        steps = (self._maintenance_window, self._maintenance_screen, self.link.stop,
                 self.journal.close)
        for step in steps:
            for _ in range(3):
                try:
                    step()
                    break
                except KeyboardInterrupt:
                    pass  # tools send ctrl-C twice; every step is safe to do again

    def _maintenance_window(self):
        self.maint_ms = self.health.maintenance()

    def _maintenance_screen(self):
        log.warn("app", "stopped (ctrl-C) for maintenance: %s; ctrl-D restarts the app"
                 % ("watchdog fed for %d s" % (self.maint_ms // 1000) if self.maint_ms
                    else "no watchdog running"))
        self.board.show(ui.maintenance())


def _setup_scanner(board):
    """Continuous mode, CR tail, 9600 baud, read back (kiosk/gm65.py); None or
    what failed. Boot only: the module is unloaded afterwards (kiosk/__init__.py)."""
    from kiosk import gm65

    err = gm65.setup(board)
    unload("gm65")
    return err


def _load_config(board):
    """(cfg, None) or (None, error). Boot only: the validator is unloaded afterwards."""
    from kiosk import config

    got = config.load(board.path("config.json"), need_wifi=board.HAS_WIFI)
    unload("config")
    return got


def main(board):
    """Boot: show the version, load and check the config, then run until
    ctrl-C stops it for maintenance."""
    board.show(ui.boot(VERSION))
    cfg, err = _load_config(board)
    if err:
        log.error("config", err)
        board.show(ui.config_error(err.split(":")[0]))
        while True:  # nothing safe to do without a config; keep the message up
            board.wait(1000, None)
            board.tick(board.ticks_ms())
    board.start_network(cfg)
    try:
        Kiosk(board, cfg).run()
    except Exception as e:  # a crash outside the loop's guard: note it, reset
        log.error("app", "crash: %r" % (e,))
        import sys

        if hasattr(sys, "print_exception"):
            sys.print_exception(e)  # files and lines only, never data values
        board.reset("crash")
