# GM65 / GM805 scanner modules: their serial command protocol, and the setup
# the kiosk does at boot (continuous mode, CR after each code, 9600 baud),
# verified by reading the settings back.
#
#   command  7E 00 | type | len | addr (2, big endian) | data | CRC (2, big endian)
#            type 07 read (data = how many bytes), 08 write, 09 save to flash;
#            CRC-16/XMODEM over type..data
#   reply    02 00 | status (00 = done) | len | data | CRC over status..data
#
# Zones (GM65 manual): 0x0000 bits 1..0 the mode (00 manual, 01 command,
# 10 continuous, 11 sensor), bits 7/6 LED and sound, left as they are;
# 0x0060 bits 6..5 the tail after each code (00 CR); 0x002A-0x002B the baud
# rate divisor, little endian (0x0139 = 9600).
#
# Hardware-free: setup() talks through the board (scanner_write,
# scanner_read, wait, ticks_ms), so it runs against the simulator's virtual
# scanner as against a module on the ESP32's UART.
# Heap: a 64-byte reply buffer and a few small bytes objects, during boot only.

from kiosk.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

READ = const(0x07)
WRITE = const(0x08)
SAVE = const(0x09)

ZONE_MODE = const(0x0000)
ZONE_TAIL = const(0x0060)
ZONE_BAUD = const(0x002A)

MODE_MASK = const(0x03)
MODE_CONTINUOUS = const(0x02)
TAIL_MASK = const(0x60)
TAIL_CR = const(0x00)
BAUD_9600 = b"\x39\x01"  # 0x0139, little endian

REPLY_MS = const(300)  # a module answers within a few ms; allow for a busy one
_MAX_REPLY = const(64)

# Errors setup() reports (the display shows "scanner"; the log says which).
E_SILENT = "no answer"
E_REPLY = "bad reply"
E_REFUSED = "command refused"
E_VERIFY = "setting did not stick"


def crc16(data, crc=0):
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def frame(kind, addr, data):
    """A command frame: kind READ/WRITE/SAVE, zone address, data bytes."""
    body = bytes((kind, len(data), addr >> 8, addr & 0xFF)) + bytes(data)
    c = crc16(body)
    return b"\x7e\x00" + body + bytes((c >> 8, c & 0xFF))


def read_cmd(addr, count):
    return frame(READ, addr, bytes((count,)))


def write_cmd(addr, data):
    return frame(WRITE, addr, data)


SAVE_CMD = frame(SAVE, 0, b"\x00")  # == 7E 00 09 01 00 00 00 DE C8


def parse_command(buf):
    """The module's side (for the simulator and tests): find one command in
    `buf`. Returns (kind, addr, data, consumed), (None, .., consumed) for
    bytes to drop (noise or a bad CRC), or None when more bytes are needed."""
    i = buf.find(b"\x7e\x00")
    if i < 0:
        keep = 1 if buf[-1:] == b"\x7e" else 0
        return (None, 0, b"", len(buf) - keep) if len(buf) > keep else None
    if i > 0:
        return None, 0, b"", i
    if len(buf) < 6:
        return None
    n = buf[3]
    end = 6 + n + 2
    if len(buf) < end:
        return None
    body = bytes(buf[2:6 + n])
    if crc16(body) != (buf[end - 2] << 8 | buf[end - 1]):
        return None, 0, b"", end
    return buf[2], buf[4] << 8 | buf[5], bytes(buf[6:6 + n]), end


def reply(data, status=0):
    """A reply frame (what the module sends back)."""
    body = bytes((status, len(data))) + bytes(data)
    c = crc16(body)
    return b"\x02\x00" + body + bytes((c >> 8, c & 0xFF))


def parse_reply(buf):
    """Find one reply in `buf`. Returns (status, data, consumed),
    (None, None, consumed) for bytes to drop (anything before a reply: a
    code scanned meanwhile, noise), (-1, None, consumed) for a reply with a
    bad CRC, or None when more bytes are needed."""
    i = buf.find(b"\x02\x00")
    if i < 0:
        keep = 1 if buf[-1:] == b"\x02" else 0
        return (None, None, len(buf) - keep) if len(buf) > keep else None
    if i > 0:
        return None, None, i
    if len(buf) < 4:
        return None
    n = buf[3]
    end = 4 + n + 2
    if len(buf) < end:
        return None
    if crc16(buf[2:4 + n]) != (buf[end - 2] << 8 | buf[end - 1]):
        return -1, None, end
    return buf[2], bytes(buf[4:4 + n]), end


class Module:
    """Talks to the scanner module through a board, one command at a time."""

    def __init__(self, board, reply_ms=REPLY_MS):
        self.board = board
        self.reply_ms = reply_ms
        self._buf = b""

    def transact(self, cmd):
        """Send a command, wait for its reply. Returns (data, None) or
        (None, error)."""
        board = self.board
        self._buf = b""
        board.scanner_write(cmd)
        start = board.ticks_ms()
        while True:
            got = board.scanner_read()
            if got:
                self._buf = (self._buf + got)[-_MAX_REPLY:]
                while self._buf:
                    r = parse_reply(self._buf)
                    if r is None:
                        break
                    status, data, used = r
                    self._buf = self._buf[used:]
                    if status is None:
                        continue
                    if status != 0:
                        return None, E_REFUSED if status > 0 else E_REPLY
                    return data, None
                continue  # more may be waiting: read before sleeping
            left = self.reply_ms - ticks_diff(board.ticks_ms(), start)
            if left <= 0:
                return None, E_SILENT
            board.wait(left, None)

    def read(self, addr, count):
        data, err = self.transact(read_cmd(addr, count))
        if err is None and len(data) != count:
            return None, E_REPLY
        return data, err

    def write(self, addr, data):
        return self.transact(write_cmd(addr, data))[1]

    def ensure(self, addr, count, want):
        """Make zone `addr` hold `want(current) -> bytes`; read back to verify.
        Returns (changed, error)."""
        cur, err = self.read(addr, count)
        if err:
            return False, err
        new = want(cur)
        if new == cur:
            return False, None
        err = self.write(addr, new)
        if err:
            return False, err
        back, err = self.read(addr, count)
        if err:
            return False, err
        if back != new:
            return False, E_VERIFY
        return True, None


def setup(board, reply_ms=REPLY_MS):
    """Configure the module at boot: continuous mode, CR tail, 9600 baud,
    saved to its flash when anything changed. Returns None when the module
    answered and holds these settings, else "zone: error" for the log."""
    m = Module(board, reply_ms)
    steps = (
        (ZONE_MODE, 1, lambda cur: bytes(((cur[0] & ~MODE_MASK) | MODE_CONTINUOUS,))),
        (ZONE_TAIL, 1, lambda cur: bytes(((cur[0] & ~TAIL_MASK) | TAIL_CR,))),
        (ZONE_BAUD, 2, lambda cur: BAUD_9600),
    )
    changed = False
    for addr, count, want in steps:
        did, err = m.ensure(addr, count, want)
        if err:
            return "0x%04x: %s" % (addr, err)
        changed = changed or did
    if changed:
        _, err = m.transact(SAVE_CMD)
        if err:
            return "save: " + err
    return None


def probe(board, timeout_ms=REPLY_MS):
    """For the self-test: does a module answer? A short description of its
    settings, or None when it is silent."""
    m = Module(board, timeout_ms)
    mode, err = m.read(ZONE_MODE, 1)
    if err:
        return None
    names = ("manual", "command", "continuous", "sensor")
    return "answers, %s mode" % names[mode[0] & MODE_MASK]
