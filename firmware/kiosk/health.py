# Watchdog policy and crash-loop detection.
#
# The hardware watchdog (machine.WDT, behind board.wdt_start / wdt_feed; the
# simulated board emulates it) resets the kiosk when the main loop stops
# being healthy: feed() is called only after a loop pass that completed
# without an exception, so a hang or a bug that keeps raising resets it.
#
# Crash loops: boot.dat (one line "<boot id> <streak>") counts boots that
# ended in a crash or a watchdog reset (board.reset_cause()) before running
# `window_s` seconds. `crashes` of those in a row put the kiosk in safe mode:
# it still scans, decides offline, journals and sends check-ins, but skips the
# extras a bad input or a bad update could be crashing in (fleet documents,
# online checks, telemetry), and says "safe mode" on screen and in telemetry.
# Once a boot runs `window_s` seconds, the streak resets; the next boot is
# normal. The file is replaced atomically (write .tmp, rename).
#
# Maintenance window: when a technician's tool (kioskctl, mpremote) interrupts
# the app with ctrl-C to use the REPL, nothing runs the loop any more, and a
# started watchdog cannot be stopped. maintenance() has the board feed it by
# itself (a timer) for MAINT_MS, then stop: a kiosk left at the REPL resets
# into the app. A soft reset (ctrl-D, kioskctl's restart) ends the window
# early; the app then feeds the watchdog again. The next boot's reset cause is
# "maintenance", which is not a crash.
# Heap: a few small ints.

import os

from kiosk.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

WDT_MS = const(8000)
MAINT_MS = const(600000)  # the watchdog is fed this long after ctrl-C (10 minutes)
CRASH_CAUSES = ("watchdog", "crash")


def _read(path):
    try:
        with open(path) as f:
            parts = f.read().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return 0, 0


def _write(path, boot, streak):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (boot, streak))
    os.rename(tmp, path)


class Health:
    def __init__(self, board, crashes=3, window_s=600):
        self.board = board
        self.path = board.path("boot.dat")
        self.window_ms = window_s * 1000
        last_boot, streak = _read(self.path)
        self.reset_cause = board.reset_cause()
        if self.reset_cause in CRASH_CAUSES:
            streak += 1
        else:
            streak = 0
        self.boot = last_boot + 1
        self.streak = streak
        self.safe_mode = streak >= crashes
        self.stable = False
        try:
            _write(self.path, self.boot, streak)
        except OSError:
            pass  # flash trouble: the journal will say so; keep going
        self._started = board.ticks_ms()

    def start_watchdog(self):
        self.board.wdt_start(WDT_MS)

    def maintenance(self):
        """The app was interrupted for a technician's REPL session. Returns how
        long the board feeds the watchdog (ms), 0 if none was started."""
        return self.board.wdt_maintenance(MAINT_MS)

    def feed(self, now):
        """The loop completed a pass: keep the watchdog from resetting."""
        self.board.wdt_feed()
        if not self.stable and ticks_diff(now, self._started) > self.window_ms:
            self.stable = True
            self.streak = 0
            try:
                _write(self.path, self.boot, 0)
            except OSError:
                pass


def safe_screen(gate):
    """The idle screen in safe mode: scanning goes on, staff see the state."""
    from kiosk import ui

    return ui.Screen("MOI QUET MA QR", "SAFE MODE - " + gate, "amber")
