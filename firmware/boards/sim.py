# The simulated board: the firmware on the MicroPython unix port.
#
# The scanner UART is a pseudo-terminal: the kiosk holds the master side
# (inherited file descriptor KIOSK_SCANNER_FD, set non-blocking by the
# simulator) and the virtual scanner drives the device node (/dev/pts/N) with
# pyserial, exactly as a GM65 module on a serial line would. The
# display is a JSON-lines log (display.jsonl in the state folder) that people
# and tests watch. The kiosk's files live in KIOSK_STATE (default: current
# folder). The network is the host's; a file "net.down" in the state folder
# emulates a lost Wi-Fi link, and simulator/netfault.py breaks the path to
# the broker. Resets end
# the process (EXIT_RESET; the watchdog: SIGUSR1) for the simulator to restart;
# on a virtual device (simulator/device.py) the device plays the watchdog.
# Heap: the 256-byte read buffer.

import _thread
import json
import os
import select
import sys
import time

from boards import watch_socket
from kiosk import log

EXIT_RESET = 75  # the process asks to be started again (reboot command, crash)
RESET_NOTE = "reset.cause"  # why the last run ended, read once at the next boot
NET_DOWN = "net.down"  # present: the (emulated) Wi-Fi link is down


class Board:
    HAS_WIFI = False

    def __init__(self):
        self.state_dir = os.getenv("KIOSK_STATE") or "."
        self._poll = select.poll()
        self._sock = None
        self._scanner = None
        fd = os.getenv("KIOSK_SCANNER_FD")
        if fd:
            # Non-blocking: read() returns what is there, or None.
            self._scanner = open(int(fd), "r+b")
            self._poll.register(self._scanner, select.POLLIN)
        else:
            log.warn("board", "KIOSK_SCANNER_FD not set: no scanner attached")
        self._display = open(self.path("display.jsonl"), "a")
        self._stall_at = None
        self._fed = self._told = 0
        self._wdt = None  # True: the thread; a file: the virtual device's pipe
        self._maint_end = None  # ticks_ms when the maintenance window ends
        self._net_up = True
        self._net_checked = time.ticks_add(time.ticks_ms(), -1000)

    def path(self, name):
        return self.state_dir + "/" + name

    # -- time ----------------------------------------------------------------

    def ticks_ms(self):
        return time.ticks_ms()

    def unix_time(self):
        return int(time.time())

    # -- scanner -------------------------------------------------------------

    def scanner_read(self):
        if self._scanner is None:
            return None
        data = self._scanner.read(256)
        return data if data else None

    def scanner_write(self, data):
        if self._scanner is not None:
            self._scanner.write(data)

    def wait(self, timeout_ms, sock):
        self._sock = watch_socket(self._poll, self._sock, sock)
        self._poll.poll(timeout_ms)

    # -- outputs -------------------------------------------------------------

    def show(self, screen):
        self._display.write(json.dumps({
            "t": time.ticks_ms(),
            "lines": list(screen.lines),
            "led": screen.led,
            "buzz": screen.buzz,
        }) + "\n")
        self._display.flush()

    def tick(self, now):
        pass

    # -- network -------------------------------------------------------------

    def start_network(self, cfg):
        pass

    def network_up(self):
        # Fault injection: a file "net.down" in the state folder is a lost
        # Wi-Fi link (looked at no more than every 200 ms).
        now = time.ticks_ms()
        if time.ticks_diff(now, self._net_checked) >= 200:
            self._net_checked = now
            try:
                os.stat(self.path(NET_DOWN))
                self._net_up = False
            except OSError:
                self._net_up = True
        return self._net_up

    def rssi(self):
        return None  # no radio

    # -- clock, resets, watchdog (kiosk/clock.py, kiosk/health.py) -------------

    def rtc_unix(self):
        # The host's clock, unless a test wants a kiosk that boots without one.
        return None if os.getenv("KIOSK_RTC") == "unset" else int(time.time())

    def set_rtc(self, unix):
        pass  # the host keeps its own time

    def reset_cause(self):
        """Why this boot happened: the note left by reset() or the emulated
        watchdog, else "power" (a first start, or SIGKILL: a power cut)."""
        path = self.path(RESET_NOTE)
        try:
            with open(path) as f:
                cause = f.read().strip()
            os.remove(path)
        except OSError:
            cause = ""
        return cause or "power"

    def reset(self, cause):
        """Restart the kiosk: the process exits with EXIT_RESET and whoever
        runs it (simulator/kiosk.py) starts it again, as the chip would."""
        _note(self.path(RESET_NOTE), cause)
        sys.exit(EXIT_RESET)

    def wdt_start(self, timeout_ms):
        # The hardware watchdog, emulated. On a virtual device (simulator/device.py,
        # KIOSK_WDT_FD set) it is the device's, as on a chip: it outlives the app
        # (ctrl-C, the REPL) and a soft reset; starts, feeds and maintenance windows
        # are lines on that pipe. Otherwise a thread stands in for it: if the loop
        # stops feeding it, it notes "watchdog" and kills the process with SIGUSR1
        # (exit status -10), like a reset the loop could not prevent.
        timeout_ms = int(os.getenv("KIOSK_SIM_WDT_MS") or timeout_ms)  # tests: shorter
        stall = os.getenv("KIOSK_SIM_STALL_AFTER_MS")
        self._stall_at = time.ticks_add(time.ticks_ms(), int(stall)) if stall else None
        self._fed = self._told = time.ticks_ms()
        fd = os.getenv("KIOSK_WDT_FD")
        if fd:
            self._wdt = open(int(fd), "wb")
            self._tell("start %d" % timeout_ms)
        else:
            self._wdt = True
            _thread.start_new_thread(self._watchdog, (timeout_ms,))

    def wdt_feed(self):
        if self._stall_at is not None and time.ticks_diff(time.ticks_ms(), self._stall_at) > 0:
            while True:  # fault injection: a hung main loop
                time.sleep_ms(1000)
        now = self._fed = time.ticks_ms()
        if self._wdt not in (None, True) and time.ticks_diff(now, self._told) >= 100:
            self._told = now  # the device hears at most ten feeds a second
            self._tell("feed")

    def wdt_maintenance(self, window_ms):
        # As boards/esp32.py: the running watchdog is fed by itself for the window
        # (tests shorten it), then resets the board; the next boot says why.
        window_ms = int(os.getenv("KIOSK_SIM_MAINT_MS") or window_ms)
        if self._wdt is True:
            self._maint_end = time.ticks_add(time.ticks_ms(), window_ms)
        elif self._wdt is not None:
            self._tell("maint %d" % window_ms)
        _note(self.path(RESET_NOTE), "maintenance")
        return window_ms if self._wdt is not None else 0

    def _tell(self, line):
        self._wdt.write((line + "\n").encode())  # unbuffered (flush would fsync a pipe)

    def _watchdog(self, timeout_ms):
        while True:
            now = time.ticks_ms()
            end = self._maint_end
            if end is not None and time.ticks_diff(end, now) > 0:
                self._fed = now  # the maintenance window's timer feeds it
            if time.ticks_diff(now, self._fed) >= timeout_ms:
                break
            time.sleep_ms(100)
        if end is None:
            _note(self.path(RESET_NOTE), "watchdog")
        os.system("kill -USR1 $PPID")


def _note(path, cause):
    with open(path, "w") as f:
        f.write(cause)
