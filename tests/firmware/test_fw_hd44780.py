# HD44780-over-PCF8574 LCD driver (firmware/boards/hd44780.py): the bytes it
# puts on the I2C bus, recorded by a fake bus and decoded back into LCD
# commands and characters the way the backpack and the controller read them.

import fwtest

from boards.hd44780 import HD44780

RS = 0x01
RW = 0x02
EN = 0x04
BL = 0x08


class FakeI2C:
    """Records every transfer; can be told to fail the next ones like a
    missing device (OSError, as machine.I2C raises)."""

    def __init__(self):
        self.writes = []
        self.fail = 0

    def writeto(self, addr, buf):
        if self.fail:
            self.fail -= 1
            raise OSError(19)  # ENODEV
        self.writes.append((addr, bytes(buf)))
        return len(buf)


def _nibbles(writes):
    """Nibbles latched by the LCD (E high then low with the same data):
    [(nibble, rs, backlight)], per transfer."""
    out = []
    for _addr, data in writes:
        got = []
        i = 0
        while i < len(data):
            b = data[i]
            assert not b & RW, "RW must stay low"
            if b & EN:
                assert i + 1 < len(data) and data[i + 1] == b & ~EN, "E pulse without matching fall"
                got.append((b >> 4, b & RS, bool(b & BL)))
                i += 2
            else:
                i += 1
        out.append(got)
    return out


def _bytes(nibbles):
    """Pairs of nibbles (4-bit mode, high first) -> [(rs, byte)]."""
    assert len(nibbles) % 2 == 0, nibbles
    out = []
    for i in range(0, len(nibbles), 2):
        hi, rs, _ = nibbles[i]
        lo, rs2, _ = nibbles[i + 1]
        assert rs == rs2
        out.append((rs, (hi << 4) | lo))
    return out


def _lcd(cols=16, rows=2):
    bus = FakeI2C()
    lcd = HD44780(bus, 0x27, cols, rows)
    return bus, lcd


def _line(writes):
    """One transfer -> (DDRAM address, text)."""
    assert len(writes) == 1, writes
    seq = _bytes(_nibbles(writes)[0])
    rs, cmd = seq[0]
    assert rs == 0 and cmd & 0x80
    for rs, _b in seq[1:]:
        assert rs == 1
    return cmd & 0x7F, "".join(chr(b) for _rs, b in seq[1:])


def test_init_switches_to_4bit_then_configures():
    bus, _lcd_ = _lcd()
    for addr, _data in bus.writes:
        assert addr == 0x27
    per = _nibbles(bus.writes)
    # Reset by instruction: three 8-bit function sets and the 4-bit switch,
    # each a lone nibble in its own transfer.
    assert [p[0][0] for p in per[:4]] == [3, 3, 3, 2]
    for p in per[:4]:
        assert len(p) == 1 and p[0][1] == 0
    cmds = []
    for p in per[4:]:
        cmds.extend(_bytes(p))
    assert cmds == [(0, 0x28), (0, 0x08), (0, 0x01), (0, 0x06), (0, 0x0C)]
    for p in per:
        for _n, _rs, bl in p:
            assert bl, "backlight on from the start"


def test_two_lines_each_in_one_transfer():
    bus, lcd = _lcd()
    bus.writes = []
    assert lcd.show(("HELLO", "Cong A")) == 2
    assert len(bus.writes) == 2
    assert len(bus.writes[0][1]) == 4 + 16 * 4
    assert _line(bus.writes[:1]) == (0x00, "HELLO" + " " * 11)
    assert _line(bus.writes[1:]) == (0x40, "Cong A" + " " * 10)


def test_unchanged_line_is_not_rewritten():
    bus, lcd = _lcd()
    lcd.show(("MOI QUET MA QR  ", "Cong A          "))
    bus.writes = []
    assert lcd.show(("MOI QUET MA QR  ", "Cong A          ")) == 0
    assert bus.writes == []
    assert lcd.show(("MOI QUET MA QR  ", "Cong B          ")) == 1
    assert _line(bus.writes) == (0x40, "Cong B          ")


def test_long_text_cut_and_unprintable_shown_as_question_mark():
    bus, lcd = _lcd()
    bus.writes = []
    lcd.write_line(0, "0123456789abcdefXYZ")
    assert _line(bus.writes) == (0x00, "0123456789abcdef")
    bus.writes = []
    lcd.write_line(1, "a\tb\u00e9")
    assert _line(bus.writes) == (0x40, "a?b?" + " " * 12)


def test_failed_transfer_is_sent_again():
    bus, lcd = _lcd()
    bus.writes = []
    bus.fail = 1
    fwtest.raises(OSError, lcd.write_line, 0, "KHONG HOP LE")
    assert bus.writes == []
    assert lcd.write_line(0, "KHONG HOP LE") is True
    assert _line(bus.writes) == (0x00, "KHONG HOP LE    ")


def test_init_again_forgets_what_was_shown():
    bus, lcd = _lcd()
    lcd.show(("A", "B"))
    lcd.init()
    bus.writes = []
    assert lcd.show(("A", "B")) == 2


def test_20x4_row_addresses():
    bus, lcd = _lcd(20, 4)
    bus.writes = []
    assert lcd.show(("r0", "r1", "r2", "r3")) == 4
    addrs = [_line([w])[0] for w in bus.writes]
    assert addrs == [0x00, 0x40, 0x14, 0x54]
    assert len(bus.writes[0][1]) == 4 + 20 * 4


def test_backlight_off_clears_the_bit_on_later_writes():
    bus, lcd = _lcd()
    lcd.backlight(False)
    assert bus.writes[-1][1] == b"\x00"
    bus.writes = []
    lcd.write_line(0, "x")
    for _n, _rs, bl in _nibbles(bus.writes)[0]:
        assert not bl
