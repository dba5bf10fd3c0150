# The simulated board: the firmware on the MicroPython unix port.
#
# The scanner UART is a pseudo-terminal: the kiosk holds the master side
# (inherited file descriptor KIOSK_SCANNER_FD, set non-blocking by the
# simulator) and the virtual scanner drives the device node (/dev/pts/N) with
# pyserial, exactly as a GM65 module on a serial line would. The
# display is a JSON-lines log (display.jsonl in the state folder) that people
# and tests watch. The kiosk's files live in KIOSK_STATE (default: current
# folder). The network is the host's and is always "up".
# Heap: the 256-byte read buffer.

import json
import os
import select
import time

from boards import watch_socket
from kiosk import log


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
        return True
