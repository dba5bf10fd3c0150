# GM65 / GM805 command protocol and boot setup (firmware/kiosk/gm65.py),
# against a fake module that answers like the manual says.

from kiosk import gm65


def test_frames_match_the_manuals_examples():
    assert gm65.SAVE_CMD == bytes.fromhex("7e0009010000 00dec8".replace(" ", ""))
    assert gm65.write_cmd(0x002A, b"\x39\x01") == bytes.fromhex("7e000802002a3901a7ea")
    assert gm65.read_cmd(0x002A, 2) == bytes.fromhex("7e000701002a02d80f")
    assert gm65.reply(b"\x00") == bytes.fromhex("02000001003331")
    assert gm65.crc16(b"123456789") == 0x31C3  # CRC-16/XMODEM check value


def test_reply_parsing_skips_noise_and_checks_the_crc():
    ok = gm65.reply(b"\x39\x01")
    assert gm65.parse_reply(ok) == (0, b"\x39\x01", len(ok))
    assert gm65.parse_reply(ok[:-1]) is None  # more bytes needed
    assert gm65.parse_reply(b"ABC\r" + ok) == (None, None, 4)  # a code before the reply
    assert gm65.parse_reply(b"xyz") == (None, None, 3)
    assert gm65.parse_reply(b"xy\x02") == (None, None, 2)  # keep a possible start
    bad = ok[:-1] + bytes((ok[-1] ^ 1,))
    assert gm65.parse_reply(bad) == (-1, None, len(bad))
    refused = gm65.reply(b"", status=1)
    assert gm65.parse_reply(refused)[0] == 1


def test_command_parsing_for_the_module_side():
    cmd = gm65.write_cmd(0x0000, b"\x12")
    assert gm65.parse_command(cmd) == (gm65.WRITE, 0, b"\x12", len(cmd))
    assert gm65.parse_command(cmd[:5]) is None
    assert gm65.parse_command(b"zz" + cmd)[3] == 2
    broken = cmd[:-1] + b"\x00"
    assert gm65.parse_command(broken) == (None, 0, b"", len(broken))


class FakeModule:
    """A board whose scanner UART leads to a GM65 with a zone table."""

    def __init__(self, silent=False, stubborn=False, noise=b""):
        self.zones = bytearray(256)
        self.zones[0x00] = 0xC1  # LED and sound on, command mode
        self.zones[0x60] = 0x20  # CRLF tail
        self.zones[0x2A:0x2C] = b"\x39\x01"
        self.saved = 0
        self.silent = silent
        self.stubborn = stubborn  # accepts writes but keeps its old values
        self.rx = bytearray(noise)
        self.tx = bytearray()
        self.t = 0
        self.commands = []

    def scanner_write(self, data):
        self.tx += data
        while self.tx:
            got = gm65.parse_command(self.tx)
            if got is None:
                break
            kind, addr, data, used = got
            self.tx = self.tx[used:]
            if kind is None or self.silent:
                continue
            self.commands.append(kind)
            if kind == gm65.READ:
                self.rx += gm65.reply(bytes(self.zones[addr:addr + data[0]]))
            elif kind == gm65.WRITE:
                if not self.stubborn:
                    self.zones[addr:addr + len(data)] = data
                self.rx += gm65.reply(b"\x00")
            elif kind == gm65.SAVE:
                self.saved += 1
                self.rx += gm65.reply(b"\x00")

    def scanner_read(self):
        if not self.rx:
            return None
        out = bytes(self.rx[:5])  # a few bytes at a time, as a UART delivers them
        self.rx = self.rx[5:]
        return out

    def ticks_ms(self):
        return self.t

    def wait(self, timeout_ms, sock):
        if not self.rx:  # input wakes the board at once
            self.t += timeout_ms


def test_setup_sets_continuous_mode_cr_tail_and_saves():
    m = FakeModule(noise=b"HC1:partial code\r")
    assert gm65.setup(m) is None
    assert m.zones[0] == 0xC2  # LED/sound bits kept, mode continuous
    assert m.zones[0x60] & 0x60 == 0
    assert bytes(m.zones[0x2A:0x2C]) == b"\x39\x01"
    assert m.saved == 1
    # A second boot finds everything in place: reads only, nothing written or saved.
    m.commands = []
    assert gm65.setup(m) is None
    assert m.commands == [gm65.READ] * 3 and m.saved == 1


def test_setup_reports_a_silent_or_stubborn_module():
    silent = FakeModule(silent=True)
    err = gm65.setup(silent)
    assert err == "0x0000: no answer"
    assert silent.t <= gm65.REPLY_MS + 1  # gives up after one timeout, the kiosk carries on
    err = gm65.setup(FakeModule(stubborn=True))
    assert err == "0x0000: setting did not stick"


def test_probe_for_the_self_test():
    assert gm65.probe(FakeModule()) == "answers, command mode"
    assert gm65.probe(FakeModule(silent=True)) is None
