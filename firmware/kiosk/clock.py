# Wall-clock time for the kiosk: a small non-blocking SNTP client (RFC 4330).
#
# Why our own: MicroPython's ntptime.settime() blocks in a recv with a 1 s
# timeout (longer with DNS), and the scan path must never wait on the
# network. Here one UDP request goes out from service(), and the answer is
# picked up on a later pass only when poll() says it is there.
#
# Until the first answer (or a board clock that is plausibly set, such as the
# host's in the simulator or an ESP32 RTC kept over a soft reset), stamp()
# gives (None, seconds since boot): the journal stores check-ins with the boot
# id and that offset and fixes them once the time is known (kiosk/journal.py),
# so no check-in ever carries a 1970 or 2000 date.
# Uptime is counted here across ticks_ms() wrap-arounds (2^30 ms on ESP32).
#
# DNS: socket.getaddrinfo() blocks on ESP32 (lwIP's netconn_gethostbyname;
# MicroPython has no asynchronous resolver). We resolve a server name once,
# cache the address, and do it only when no verdict is on screen (the caller
# passes idle=True); an IP literal needs no DNS at all.
# Heap: the 48-byte packet, one UDP socket while a request is out; ~0.5 KB.

import random
import select
import socket
import struct
import time

from kiosk.ticks import ticks_diff

# ticks_add: MicroPython's wrapping ticks on the device, plain integers on CPython.
ticks_add = getattr(time, "ticks_add", None) or (lambda a, b: a + b)

try:
    from typing import Callable  # for type checkers; MicroPython ignores annotations
except ImportError:
    pass

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

NTP_DELTA = const(2208988800)  # 1900-01-01 to 1970-01-01, seconds
MIN_UNIX = const(1735689600)  # 2025-01-01: anything earlier is an unset clock
RETRY_MS = const(5000)  # until the first sync; also the reply deadline
RESYNC_MS = const(3600000)  # then hourly
DNS_TTL_MS = const(86400000)


def _split(host):
    if ":" in host:
        h, p = host.rsplit(":", 1)
        if p.isdigit():
            return h, int(p)
    return host, 123


def _is_ip(h):
    parts = h.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or int(p) > 255:
            return False
    return True


class Clock:
    def __init__(self, board, hosts, now):
        self.board = board
        self.hosts = hosts
        self.synced = False
        self.source = None  # "rtc" or "ntp"
        self.boot_unix = 0  # unix time at uptime 0
        self._last = now
        self._ms = 0  # uptime in ms
        self._host = 0
        self._addr = None
        self._addr_at = 0
        self._sock = None
        self._poll = None
        self._sent_at = 0
        self._next = now
        self._nonce = b""
        self.syncs = 0
        self.on_sync: Callable[[], None] | None = None  # once, when the time is first known
        rtc = board.rtc_unix()
        if rtc is not None and rtc >= MIN_UNIX:
            self._set(rtc, "rtc")

    def _set(self, unix, source):
        first = not self.synced
        self.boot_unix = unix - self._ms // 1000
        self.synced = True
        self.source = source
        if first and self.on_sync:
            self.on_sync()

    def uptime_s(self):
        return self._ms // 1000

    def stamp(self):
        """(unix seconds, seconds since boot): unix is None until the time is known."""
        up = self._ms // 1000
        return (self.boot_unix + up if self.synced else None), up

    def now(self):
        """Unix seconds, or None while unknown (never a bogus date)."""
        return self.boot_unix + self._ms // 1000 if self.synced else None

    def service(self, now, idle=True):
        """Advance uptime; send or collect an SNTP exchange. Never blocks (except a
        first DNS lookup of a server name, done only when idle)."""
        d = ticks_diff(now, self._last)
        if d > 0:
            self._ms += d
        self._last = now
        if not self.hosts:
            return
        if self._sock is not None:
            if self._poll.poll(0):
                self._receive(now)
            elif ticks_diff(now, self._sent_at) > RETRY_MS:
                self._close()
                self._host = (self._host + 1) % len(self.hosts)  # try the next server
                self._addr = None
            return
        if ticks_diff(now, self._next) >= 0 and self.board.network_up():
            self._request(now, idle)

    def _request(self, now, idle):
        host, port = _split(self.hosts[self._host])
        if self._addr is None or ticks_diff(now, self._addr_at) > DNS_TTL_MS:
            if not _is_ip(host) and not idle:
                return  # a name lookup may block: wait until no verdict is shown
            try:
                self._addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
                self._addr_at = now
            except OSError:
                self._next = ticks_add(now, RETRY_MS)
                self._host = (self._host + 1) % len(self.hosts)
                return
        pkt = bytearray(48)
        pkt[0] = 0x1B  # LI 0, version 3, mode 3 (client)
        # Random transmit timestamp: the answer must echo it (originate field).
        self._nonce = struct.pack("!II", random.getrandbits(32), random.getrandbits(32))
        pkt[40:48] = self._nonce
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.sendto(pkt, self._addr)
        except OSError:
            self._next = ticks_add(now, RETRY_MS)
            return
        self._sock = s
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self._sent_at = now

    def _close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._poll = None

    def _receive(self, now):
        try:
            data = self._sock.recv(64)
        except OSError:
            data = b""
        self._close()
        ok = len(data) >= 48 and (data[0] & 7) == 4 and 0 < data[1] < 16 \
            and bytes(data[24:32]) == self._nonce
        secs = struct.unpack_from("!I", data, 40)[0] if ok else 0
        unix = secs - NTP_DELTA
        if not ok or unix < MIN_UNIX:
            self._next = ticks_add(now, RETRY_MS)  # bogus or unset server: ignore
            return
        # Half the round trip has passed since the server stamped it.
        unix += (ticks_diff(now, self._sent_at) // 2 + 500) // 1000
        self.syncs += 1
        self._set(unix, "ntp")
        self.board.set_rtc(unix)
        self._next = ticks_add(now, RESYNC_MS)
