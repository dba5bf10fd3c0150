# SSD1306 OLED driver (firmware/boards/ssd1306.py): the bytes it puts on the
# I2C bus, replayed into a model of the controller's RAM (horizontal
# addressing, column and page windows) and read back as pixels.

from boards import ssd1306

ARGS = {0x20: 1, 0x21: 2, 0x22: 2, 0x81: 1, 0x8D: 1, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1,
        0xDA: 1, 0xDB: 1}


class FakeOLED:
    """A recording I2C bus with an SSD1306 behind it."""

    def __init__(self):
        self.ram = [bytearray(128) for _ in range(8)]
        self.writes = []
        self.commands = []
        self.on = False
        self.fail = 0
        self.col0, self.col1, self.page0, self.page1 = 0, 127, 0, 7
        self.col, self.page = 0, 0

    def writeto(self, addr, buf):
        if self.fail:
            self.fail -= 1
            raise OSError(19)
        buf = bytes(buf)
        self.writes.append((addr, buf))
        if buf[0] == 0x40:
            for b in buf[1:]:
                self.ram[self.page][self.col] = b
                self.col += 1
                if self.col > self.col1:
                    self.col = self.col0
                    self.page = self.page + 1 if self.page < self.page1 else self.page0
            return
        assert buf[0] == 0x00, "control byte must be 0x00 (commands) or 0x40 (data)"
        i = 1
        while i < len(buf):
            op = buf[i]
            n = ARGS.get(op, 0)
            args = buf[i + 1:i + 1 + n]
            assert len(args) == n, "command 0x%02x cut short" % op
            self.commands.append(op)
            if op == 0x21:
                self.col0, self.col1 = args
                self.col = self.col0
            elif op == 0x22:
                self.page0, self.page1 = args
                self.page = self.page0
            elif op == 0xAF:
                self.on = True
            elif op == 0xAE:
                self.on = False
            i += 1 + n

    def pixel(self, x, y):
        return self.ram[y // 8][x] >> (y % 8) & 1

    def text_at(self, top):
        """Read 16 characters back from the 8x16 cells whose top row is `top`."""
        out = ""
        for cell in range(16):
            cols = []
            for cx in range(8):
                b = 0
                for gy in range(8):
                    hi = self.pixel(cell * 8 + cx, top + 2 * gy)
                    lo = self.pixel(cell * 8 + cx, top + 2 * gy + 1)
                    assert hi == lo, "each font row is drawn twice (double height)"
                    b |= hi << gy
                cols.append(b)
            found = "?"
            for o in range(32, 127):
                if ssd1306.glyph(chr(o)) == bytes(cols):
                    found = chr(o)
                    break
            out += found
        return out


def test_init_turns_the_display_on_and_clears_it():
    bus = FakeOLED()
    bus.ram[3][7] = 0xFF  # garbage left in RAM from before a reset
    ssd1306.SSD1306(bus, 0x3C)
    assert bus.on and 0x8D in bus.commands  # charge pump configured
    assert all(addr == 0x3C for addr, _ in bus.writes)
    assert all(not any(page) for page in bus.ram)


def test_two_lines_are_drawn_double_height_and_read_back():
    bus = FakeOLED()
    oled = ssd1306.SSD1306(bus)
    oled.show(("HOP LE - MOI VAO", "NGUYEN V** A*   "))
    assert bus.text_at(8) == "HOP LE - MOI VAO"
    assert bus.text_at(40) == "NGUYEN V** A*   "
    for page in (0, 3, 4, 7):
        assert not any(bus.ram[page])  # blank around the lines


def test_only_changed_lines_are_sent_and_short_text_is_padded():
    bus = FakeOLED()
    oled = ssd1306.SSD1306(bus)
    oled.show(("MOI QUET MA QR", "Cong A"))
    before = len(bus.writes)
    oled.show(("MOI QUET MA QR", "Cong B"))
    assert len(bus.writes) - before == 3  # window command + 2 pages for line two only
    assert bus.text_at(40) == "Cong B          "
    oled.show(("x" * 40, "\u00e9"))  # too long: cut; not ASCII: '?'
    assert bus.text_at(8) == "x" * 16 and bus.text_at(40)[0] == "?"


def test_a_failed_transfer_is_retried_on_the_next_show():
    bus = FakeOLED()
    oled = ssd1306.SSD1306(bus)
    bus.fail = 1
    try:
        oled.show(("KHONG HOP LE", "Sai chu ky"))
        raise AssertionError("OSError expected")
    except OSError:
        pass
    oled.init()  # what the board does after a bus error
    oled.show(("KHONG HOP LE", "Sai chu ky"))
    assert bus.text_at(8) == "KHONG HOP LE    " and bus.text_at(40) == "Sai chu ky      "
    oled.power(False)
    assert not bus.on


def test_font_covers_printable_ascii():
    assert len(ssd1306.FONT) == 95 * 8
    assert ssd1306.glyph(" ") == b"\x00" * 8
    assert ssd1306.glyph("A") != ssd1306.glyph("B")
    assert ssd1306.glyph("\x7f") == ssd1306.glyph("?")
