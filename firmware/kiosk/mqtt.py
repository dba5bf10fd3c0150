# A small non-blocking MQTT 3.1.1 client for the kiosk's main loop.
#
# Why not umqtt.simple: it blocks in connect() and in every read, and the
# scan path must never wait on the network (design invariant 4). Why not
# mqtt_as: it needs the whole app to be asyncio and costs ~12 KB more heap.
# This client never blocks after start(): the socket is non-blocking, the TCP
# connect and the TLS handshake complete in service(), incoming bytes are
# parsed as they come, and outgoing packets wait in a bounded buffer until
# the socket takes them.
#
# Session: clean_session is off, so the broker keeps our subscriptions and
# queues what is sent to us (acks) while we are away. QoS 1 PUBLISHes stay in
# a bounded in-flight table (MAX_INFLIGHT) until their PUBACK and are sent
# again, with DUP set, after a reconnect (MQTT 3.1.1 4.4); publish() says
# "later" (0) while the table is full. The kiosk's journal remains the store
# of record: the app republishes what the bridge has not acknowledged.
# Keepalive: a PINGREQ when we have been quiet for half the keepalive; no
# PINGRESP within PING_WAIT_MS, or a broker silent for 1.5x the keepalive,
# drops the connection (a dead path is found in seconds, not at TCP timeout).
# DNS: see connect_needs_dns(): getaddrinfo() blocks on ESP32 (lwIP has no
# asynchronous resolver in MicroPython), so the app resolves only in its
# connect phase, after the display is updated; the address is cached, and an
# IP literal needs no lookup at all.
# TLS: ssl.SSLContext(PROTOCOL_TLS_CLIENT) with the pinned CA
# (load_verify_locations, CERT_REQUIRED) and the device's certificate and key
# (load_cert_chain), given as DER (PEM files are converted: der_file()); the
# handshake runs non-blocking (do_handshake_on_connect False) inside the
# first reads and writes. mbedTLS needs ~20-25 KB outside
# the GC heap on ESP32 while connected.
# Heap: the in-flight table (MAX_INFLIGHT check-ins, ~300 bytes each), the
# buffers (IN_MAX, OUT_MAX worst case, ~1 KB typical).

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
CONNECT_TIMEOUT_MS = const(10000)  # TCP connect + TLS handshake + CONNACK
PING_WAIT_MS = const(5000)  # a PINGREQ unanswered this long: the path is dead
MAX_INFLIGHT = const(16)  # QoS 1 PUBLISHes awaiting PUBACK
# setsockopt(IPPROTO_TCP, TCP_NODELAY): the same numbers on Linux and lwIP; the
# unix port does not name them. Without it a small packet written while the
# previous one is unacknowledged waits for the broker's delayed ACK (~40 ms):
# a PUBACK then the next check-in, or an online check's request.
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)

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


def is_ip(host):
    """An IPv4 literal (needs no DNS)."""
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or int(p) > 255:
            return False
    return True


def der_file(path):
    """A certificate or key file's DER bytes; PEM is converted here (its first
    block), since some MicroPython builds leave mbedTLS's PEM parser out."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----BEGIN"):
        return data
    import binascii

    lines = data.split(b"\n")
    body = []
    for line in lines[1:]:
        if line.startswith(b"-----END"):
            break
        body.append(line.strip())
    return binascii.a2b_base64(b"".join(body))


def packet(first, body):
    """One MQTT packet: fixed header byte, remaining length, body."""
    return bytes([first]) + _remaining(len(body)) + body


class MQTTClient:
    def __init__(self, client_id, host, port, user=None, password=None, keepalive=30,
                 will_topic=None, will_msg=None, clean=False, tls=None):
        """tls: None, or {"ca": path, "cert": path, "key": path} (cert/key optional)."""
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will_topic = will_topic
        self.will_msg = will_msg
        self.clean = clean
        self.tls = tls
        self._ctx = None
        self.state = DOWN
        self.sock = None  # what we read and write: the TLS socket when TLS is on
        self.raw = None  # the TCP socket under it: what the board's wait() polls
        self._addr = None
        self._poll = select.poll()
        self._in = bytearray()
        self._out = bytearray()
        self._rbuf = bytearray(512)
        self._pid = 0
        self._inflight = {}  # pid -> PUBLISH packet (QoS 1, awaiting PUBACK)
        self._t_start = 0
        self._t_sent = 0
        self._t_recv = 0
        self._t_ping = None  # when the PINGREQ still unanswered went out
        self.session_present = False
        # Callbacks, set by the app.
        self.on_connect: Callable[[], None] | None = None
        self.on_message: Callable[[str, bytes], None] | None = None
        self.on_puback: Callable[[int], None] | None = None
        self.on_down: Callable[[str], None] | None = None

    # -- connection ----------------------------------------------------------

    def needs_dns(self):
        """True if start() would do a (blocking on ESP32) name lookup."""
        return self._addr is None and not is_ip(self.host)

    def forget_address(self):
        """Look the broker's name up again at the next start (it may have moved)."""
        self._addr = None

    def _context(self):
        if self._ctx is None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=der_file(self.tls["ca"]))
            if self.tls.get("cert"):
                ctx.load_cert_chain(der_file(self.tls["cert"]), der_file(self.tls["key"]))
            self._ctx = ctx
        return self._ctx

    def start(self, now):
        """Begin connecting (returns at once, but for a first name lookup).
        False if it failed straight away (on_down has been called)."""
        self.close()
        try:
            if self._addr is None:
                # Blocks only for a name lookup; an IP literal resolves at once.
                self._addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            sock = socket.socket()
            sock.setblocking(False)
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
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
        self.sock = self.raw = sock
        self._poll.register(sock, select.POLLOUT)
        self.state = CONNECTING
        self._t_start = now
        self._t_ping = None
        self._in = bytearray()
        self._out = bytearray()
        return True

    def _tcp_up(self, now):
        """TCP connected: wrap in TLS if configured, queue CONNECT and the retries."""
        self._poll.modify(self.raw, select.POLLIN)
        if self.tls:
            try:
                self.sock = self._context().wrap_socket(
                    self.raw, server_hostname=self.host, do_handshake_on_connect=False)
            except (OSError, ValueError) as e:
                self._down("tls: %s" % e)
                return
        self.state = WAIT_CONNACK
        self._t_recv = now
        self._send_connect()

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
        if self.raw is not None:
            try:
                self._poll.unregister(self.raw)
            except (OSError, KeyError, ValueError):
                pass
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        if self.raw is not None and self.raw is not self.sock:
            try:
                self.raw.close()
            except OSError:
                pass
        self.sock = self.raw = None
        self.state = DOWN

    def disconnect(self):
        """Clean DISCONNECT (the broker discards the will), then close."""
        if self.state == UP:
            self._out += b"\xe0\x00"
            self.flush()
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
        return self.state == UP and len(self._out) + n <= OUT_MAX \
            and len(self._inflight) < MAX_INFLIGHT

    @property
    def inflight(self):
        return len(self._inflight)

    def publish(self, topic, payload, qos=1, retain=False):
        """Queue a PUBLISH. Returns its packet id (1 for QoS 0), 0 if not now."""
        if not self.can_send(len(payload) + len(topic) + 8):
            return 0
        pid = self._next_pid() if qos else 1
        body = _str(topic)
        if qos:
            while pid in self._inflight:
                pid = self._next_pid()
            body += struct.pack("!H", pid)
        pkt = packet(0x30 | (qos << 1) | (1 if retain else 0), body + payload)
        self._out += pkt
        if qos:
            self._inflight[pid] = pkt
        return pid

    def subscribe(self, topic, qos=1):
        if self.state != UP:
            return 0
        pid = self._next_pid()
        self._out += packet(0x82, struct.pack("!H", pid) + _str(topic) + bytes([qos]))
        return pid

    def flush(self):
        """Write what is queued, as far as the socket takes it now (never blocks)."""
        if not self._out or self.sock is None:
            return
        try:
            n = self.sock.write(self._out)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return  # TLS: handshake or socket buffer busy
            self._down("write: %s" % e)
            return
        except ValueError as e:  # MicroPython's TLS: the broker's certificate failed
            self._down("tls: %s" % str(e).strip())
            return
        if n:
            self._out = self._out[n:]
            self._t_sent = time.ticks_ms()

    # -- receiving -----------------------------------------------------------

    def _read(self):
        buf = self._rbuf
        try:
            n = self.sock.readinto(buf)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return True
            self._down("read: %s" % e)
            return False
        except ValueError as e:  # MicroPython's TLS: the broker's certificate failed
            self._down("tls: %s" % str(e).strip())
            return False
        if n is None:  # nothing there (non-blocking)
            return True
        if n == 0:
            self._down("closed by broker")
            return False
        self._in += memoryview(buf)[:n]  # no intermediate copy
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
            # A view, not a copy: a fleet document is up to 16 KiB, and
            # _handle copies out only the payload it hands on.
            body = memoryview(data)[i:i + length]
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
            # Unacknowledged QoS 1 PUBLISHes go again, DUP set, oldest first.
            pids = sorted(self._inflight)
            for pid in pids:
                pkt = self._inflight[pid]
                self._out += bytes((pkt[0] | 0x08,)) + pkt[1:]
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
                self.on_message(topic, bytes(body[pos:]))
        elif kind == 4:  # PUBACK
            if len(body) >= 2:
                pid = (body[0] << 8) | body[1]
                self._inflight.pop(pid, None)
                if self.on_puback:
                    self.on_puback(pid)
        elif kind == 13:  # PINGRESP
            self._t_ping = None
        # SUBACK (9) needs nothing beyond refreshing _t_recv.

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
                    self._tcp_up(now)
                    if self.state == DOWN:
                        return
            elif time.ticks_diff(now, self._t_start) > CONNECT_TIMEOUT_MS:
                self._down("connect timed out")
                return
            else:
                return
        self.flush()
        if self.state == DOWN:
            return
        # TLS may hold decrypted bytes poll() cannot see: just try to read.
        ev = self.tls or self._poll.poll(0)
        if ev and (self.tls or ev[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR)):
            if not self._read():
                return
            self._parse()
            if self.state == DOWN:
                return
            self.flush()
        if self.state == WAIT_CONNACK:
            if time.ticks_diff(now, self._t_start) > CONNECT_TIMEOUT_MS:
                self._down("no CONNACK")
            return
        ka = self.keepalive * 1000
        if ka:
            if self._t_ping is not None and time.ticks_diff(now, self._t_ping) > PING_WAIT_MS:
                self._down("keepalive: no PINGRESP")
                return
            if time.ticks_diff(now, self._t_recv) > ka * 3 // 2:
                self._down("keepalive: broker silent")
                return
            if self._t_ping is None and not self._out and (
                    time.ticks_diff(now, self._t_sent) > ka // 2
                    or time.ticks_diff(now, self._t_recv) > ka // 2):
                self._out += b"\xc0\x00"  # PINGREQ
                self._t_ping = now
                self.flush()
