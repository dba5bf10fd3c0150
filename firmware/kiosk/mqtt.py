# A small non-blocking MQTT 3.1.1 client for the kiosk's main loop.
#
# Why not umqtt.simple: it blocks in connect() and in every read, and the
# scan path must never wait on the network (design invariant 4). Why not
# mqtt_as: it needs the whole app to be asyncio and costs ~12 KB more heap.
# This client never blocks after start(): the socket is non-blocking, the
# connect completes in service(), incoming bytes are parsed as they come,
# and outgoing packets wait in a bounded buffer until the socket takes them.
#
# QoS 1 redelivery is not kept here: the kiosk's journal is the store, and
# the app republishes every check-in the bridge has not acknowledged.
# Heap: IN_MAX + OUT_MAX worst case, ~1 KB typical.

import errno
import select
import socket
import struct
import time

try:
    from typing import Callable  # for type checkers; MicroPython ignores annotations
except ImportError:
    pass

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

IN_MAX = const(16896)  # largest packet we accept: a signed fleet document (16 KiB) + headers
OUT_MAX = const(8192)  # outgoing bytes buffered before publish() says "later"
CONNECT_TIMEOUT_MS = const(5000)

DOWN = const(0)
CONNECTING = const(1)  # TCP handshake under way
WAIT_CONNACK = const(2)
UP = const(3)

_CONN_ERRORS = (errno.EINPROGRESS, errno.EAGAIN, getattr(errno, "EALREADY", 114))


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _remaining(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out


def packet(first, body):
    """One MQTT packet: fixed header byte, remaining length, body."""
    return bytes([first]) + _remaining(len(body)) + body


class MQTTClient:
    def __init__(self, client_id, host, port, user=None, password=None, keepalive=30,
                 will_topic=None, will_msg=None, clean=False):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will_topic = will_topic
        self.will_msg = will_msg
        self.clean = clean
        self.state = DOWN
        self.sock = None
        self._addr = None
        self._poll = select.poll()
        self._in = bytearray()
        self._out = bytearray()
        self._pid = 0
        self._t_start = 0
        self._t_sent = 0
        self._t_recv = 0
        self.session_present = False
        # Callbacks, set by the app.
        self.on_connect: Callable[[], None] | None = None
        self.on_message: Callable[[str, bytes], None] | None = None
        self.on_puback: Callable[[int], None] | None = None
        self.on_down: Callable[[str], None] | None = None

    # -- connection ----------------------------------------------------------

    def start(self, now):
        """Begin connecting (returns at once). False if it failed straight away."""
        self.close()
        try:
            if self._addr is None:
                # Blocks only for a name lookup; an IP address resolves at once.
                self._addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            sock = socket.socket()
            sock.setblocking(False)
        except OSError as e:
            self._down("connect: %s" % e)
            return False
        try:
            sock.connect(self._addr)
        except OSError as e:
            if e.args[0] not in _CONN_ERRORS:
                sock.close()
                self._down("connect: %s" % e)
                return False
        self.sock = sock
        self._poll.register(sock, select.POLLOUT)
        self.state = CONNECTING
        self._t_start = now
        self._in = bytearray()
        self._out = bytearray()
        return True

    def _send_connect(self):
        flags = 0 if not self.clean else 0x02
        payload = _str(self.client_id)
        if self.will_topic is not None:
            flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
            payload += _str(self.will_topic) + _str(self.will_msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
        if self.password is not None:
            flags |= 0x40
            payload += _str(self.password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive) + payload
        self._out += packet(0x10, body)

    def close(self):
        """Drop the connection without telling the broker (the will is sent)."""
        if self.sock is not None:
            try:
                self._poll.unregister(self.sock)
            except (OSError, KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        self.state = DOWN

    def disconnect(self):
        """Clean DISCONNECT (the broker discards the will), then close."""
        if self.state == UP:
            self._out += b"\xe0\x00"
            self._flush()
        self.close()

    def _down(self, reason):
        self.close()
        if self.on_down:
            self.on_down(reason)

    # -- sending -------------------------------------------------------------

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def can_send(self, n=256):
        return self.state == UP and len(self._out) + n <= OUT_MAX

    def publish(self, topic, payload, qos=1, retain=False):
        """Queue a PUBLISH. Returns its packet id (1 for QoS 0), 0 if not now."""
        if not self.can_send(len(payload) + len(topic) + 8):
            return 0
        pid = self._next_pid() if qos else 1
        body = _str(topic)
        if qos:
            body += struct.pack("!H", pid)
        self._out += packet(0x30 | (qos << 1) | (1 if retain else 0), body + payload)
        return pid

    def subscribe(self, topic, qos=1):
        if self.state != UP:
            return 0
        pid = self._next_pid()
        self._out += packet(0x82, struct.pack("!H", pid) + _str(topic) + bytes([qos]))
        return pid

    def _flush(self):
        if not self._out or self.sock is None:
            return
        try:
            n = self.sock.write(self._out)
        except OSError as e:
            self._down("write: %s" % e)
            return
        if n:
            self._out = self._out[n:]
            self._t_sent = time.ticks_ms()

    # -- receiving -----------------------------------------------------------

    def _read(self):
        buf = bytearray(512)
        try:
            n = self.sock.readinto(buf)
        except OSError as e:
            self._down("read: %s" % e)
            return False
        if n is None:  # nothing there (non-blocking)
            return True
        if n == 0:
            self._down("closed by broker")
            return False
        self._in += buf[:n]
        self._t_recv = time.ticks_ms()
        return True

    def _parse(self):
        data = self._in
        while len(data) >= 2:
            # Remaining length: up to 4 bytes of 7 bits.
            mult = 1
            length = 0
            i = 1
            while True:
                if i >= len(data):
                    return
                b = data[i]
                length += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
                if i > 4:
                    self._down("bad packet length")
                    return
            if length > IN_MAX:
                self._down("packet too large")
                return
            if len(data) < i + length:
                return
            first = data[0]
            body = bytes(data[i:i + length])
            data = data[i + length:]
            self._in = data
            self._handle(first, body)
            if self.state == DOWN:
                return
            data = self._in

    def _handle(self, first, body):
        kind = first >> 4
        if kind == 2:  # CONNACK
            if len(body) < 2 or body[1] != 0:
                self._down("refused by broker (code %d)" % (body[1] if len(body) > 1 else -1))
                return
            self.session_present = bool(body[0] & 1)
            self.state = UP
            if self.on_connect:
                self.on_connect()
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            if len(body) < 2:
                return
            tlen = (body[0] << 8) | body[1]
            pos = 2 + tlen
            if len(body) < pos + (2 if qos else 0):
                self._down("malformed PUBLISH")
                return
            try:
                topic = str(body[2:pos], "utf-8")
            except UnicodeError:
                self._down("malformed PUBLISH topic")
                return
            if qos:
                pid = (body[pos] << 8) | body[pos + 1]
                pos += 2
                self._out += packet(0x40, struct.pack("!H", pid))
            if self.on_message:
                self.on_message(topic, body[pos:])
        elif kind == 4:  # PUBACK
            if self.on_puback and len(body) >= 2:
                self.on_puback((body[0] << 8) | body[1])
        # SUBACK (9) and PINGRESP (13) need nothing beyond refreshing _t_recv.

    # -- the loop ------------------------------------------------------------

    def service(self, now):
        """Do whatever I/O is possible right now. Call often; never blocks."""
        if self.state == DOWN:
            return
        if self.state == CONNECTING:
            ev = self._poll.poll(0)
            if ev:
                flags = ev[0][1]
                if flags & (select.POLLERR | select.POLLHUP):
                    self._down("connect refused")
                    return
                if flags & select.POLLOUT:
                    self._poll.modify(self.sock, select.POLLIN)
                    self.state = WAIT_CONNACK
                    self._t_recv = now
                    self._send_connect()
            elif time.ticks_diff(now, self._t_start) > CONNECT_TIMEOUT_MS:
                self._down("connect timed out")
                return
            else:
                return
        self._flush()
        if self.state == DOWN:
            return
        ev = self._poll.poll(0)
        if ev and ev[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
            if not self._read():
                return
            self._parse()
            if self.state == DOWN:
                return
            self._flush()
        if self.state == WAIT_CONNACK:
            if time.ticks_diff(now, self._t_start) > CONNECT_TIMEOUT_MS:
                self._down("no CONNACK")
            return
        ka = self.keepalive * 1000
        if ka:
            if time.ticks_diff(now, self._t_recv) > ka * 3 // 2:
                self._down("keepalive: broker silent")
                return
            if time.ticks_diff(now, self._t_sent) > ka // 2 and not self._out:
                self._out += b"\xc0\x00"  # PINGREQ
                self._flush()
