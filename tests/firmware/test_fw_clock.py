# The kiosk's SNTP clock (firmware/kiosk/clock.py) against a tiny SNTP
# responder on 127.0.0.1, run step by step in this same process (no threads),
# so it works the same under CPython and MicroPython.

import random
import socket
import struct
import time

from kiosk.clock import NTP_DELTA, RETRY_MS, Clock

NOW = 1764090000


class Board:
    def __init__(self, rtc=None):
        self.rtc = rtc
        self.set_to = []

    def network_up(self):
        return True

    def rtc_unix(self):
        return self.rtc

    def set_rtc(self, unix):
        self.set_to.append(unix)


def _server():
    """A UDP socket on a free 127.0.0.1 port (MicroPython has no getsockname)."""
    while True:
        port = random.randint(20000, 60000)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            continue
        s.settimeout(3)
        return s, port


def _answer(srv, unix, nonce_ok=True, mode=4, stratum=2):
    data, addr = srv.recvfrom(64)
    assert len(data) == 48 and data[0] & 7 == 3  # a client request
    reply = bytearray(48)
    reply[0] = 0x20 | mode
    reply[1] = stratum
    reply[24:32] = data[40:48] if nonce_ok else b"12345678"
    reply[40:44] = struct.pack("!I", (unix + NTP_DELTA) & 0xFFFFFFFF)
    srv.sendto(reply, addr)


def _service_until(clock, now, cond):
    for _ in range(300):
        clock.service(now)
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_time_is_unknown_until_sntp_answers_then_exact_for_the_whole_boot():
    srv, port = _server()
    board = Board()
    clock = Clock(board, ["127.0.0.1:%d" % port], 1000)
    synced = []
    clock.on_sync = lambda: synced.append(1)
    assert clock.stamp() == (None, 0) and clock.now() is None  # never a 1970/2000 date
    clock.service(4000)  # 3 s after boot: the first request goes out
    assert clock.stamp() == (None, 3)
    _answer(srv, NOW)
    assert _service_until(clock, 4000, lambda: clock.synced)
    assert clock.source == "ntp" and synced == [1] and board.set_to == [NOW]
    assert clock.boot_unix == NOW - 3  # uptime 3 s at the answer
    clock.service(10000)
    assert clock.stamp() == (NOW + 6, 9)
    srv.close()


def test_bogus_answers_are_ignored():
    srv, port = _server()
    clock = Clock(Board(), ["127.0.0.1:%d" % port], 0)
    now = 100
    for kwargs in ({"nonce_ok": False}, {"mode": 3}, {"stratum": 0}):
        clock.service(now)
        _answer(srv, NOW, **kwargs)
        for _ in range(50):
            clock.service(now)
            time.sleep(0.005)
        assert not clock.synced, kwargs
        now += RETRY_MS + 1  # the next try waits RETRY_MS
    clock.service(now)
    _answer(srv, 946684800)  # a server whose own clock says 2000-01-01
    for _ in range(50):
        clock.service(now)
        time.sleep(0.005)
    assert not clock.synced
    srv.close()


def test_a_silent_server_is_given_up_for_the_next_one_without_blocking():
    silent, port1 = _server()
    good, port2 = _server()
    clock = Clock(Board(), ["127.0.0.1:%d" % port1, "127.0.0.1:%d" % port2], 0)
    clock.service(0)
    silent.recvfrom(64)  # the request reached the first server, which never answers
    t0 = time.time()
    clock.service(RETRY_MS // 2)  # no answer yet: returns at once
    assert time.time() - t0 < 0.5 and not clock.synced
    clock.service(RETRY_MS + 1)  # deadline: give up on this server
    clock.service(RETRY_MS + 2)  # and ask the next one
    _answer(good, NOW)
    assert _service_until(clock, RETRY_MS + 2, lambda: clock.synced)
    silent.close()
    good.close()


def test_a_board_clock_already_set_is_used_at_once():
    clock = Clock(Board(rtc=NOW), [], 0)
    assert clock.synced and clock.source == "rtc" and clock.now() == NOW
    unset = Clock(Board(rtc=946684800), [], 0)  # an ESP32 RTC after a power cut
    assert not unset.synced and unset.now() is None
