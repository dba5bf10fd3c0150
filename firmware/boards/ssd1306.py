# SSD1306 128x64 OLED on I2C (the common 0.96" modules at 0x3C / 0x3D), as
# an alternative to the HD44780 LCD: the same two 16-character lines, drawn
# in an 8x8 font stretched to 8x16 (readable at a gate), line one on pages
# 1-2, line two on pages 5-6 of the display's RAM.
#
# Our own small driver rather than micropython-lib's ssd1306 (which draws
# through framebuf into a 1 KB frame buffer): a text line is exactly 128
# column bytes per page, so each glyph's column bytes go straight to the
# display and no frame buffer is needed. The 8x8 glyphs are MicroPython's own
# framebuf font (font_petme128_8x8, MIT licence), dumped once with
# FrameBuffer.text() so this module needs no framebuf.
#
# Hardware-free: `i2c` is anything with writeto(addr, buf) (machine.I2C has
# it), so host tests drive it with a recording fake. I2C errors (OSError) are
# the caller's to handle; a line whose transfer failed is not remembered, so
# the next show() sends it again (call init() first if the display was reset).
# Heap: two 129-byte page buffers and the last text of each line; the 760-byte
# font is a bytes constant (in flash when the module is frozen).

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

ADDRS = (0x3C, 0x3D)
WIDTH = const(128)
HEIGHT = const(64)
COLS = const(16)  # characters per line: 16 x 8 px = 128 px
_CMD = const(0x00)  # control byte: a command stream follows
_DATA = const(0x40)  # control byte: display RAM data follows
LINE_PAGES = ((1, 2), (5, 6))  # (upper, lower) page of each text line

# Power-up sequence for a 128x64 module with the internal charge pump.
INIT = bytes((
    _CMD,
    0xAE,  # display off while we configure it
    0xD5, 0x80,  # clock divide ratio / oscillator
    0xA8, HEIGHT - 1,  # multiplex ratio: 64 rows
    0xD3, 0x00,  # no display offset
    0x40,  # start line 0
    0x8D, 0x14,  # charge pump on (modules without an external VCC)
    0x20, 0x00,  # horizontal addressing mode
    0xA1,  # column 127 is SEG0 (the module's usual mounting)
    0xC8,  # scan COM63..COM0
    0xDA, 0x12,  # COM pins: alternative configuration (128x64)
    0x81, 0xCF,  # contrast
    0xD9, 0xF1,  # pre-charge period
    0xDB, 0x40,  # VCOMH deselect level
    0xA4,  # show the RAM contents
    0xA6,  # not inverted
    0xAF,  # display on
))

# Glyphs for ASCII 32..126, 8 column bytes each, bit 0 at the top.
FONT = (
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x4f\x4f\x00\x00\x00"
    b"\x00\x07\x07\x00\x00\x07\x07\x00\x14\x7f\x7f\x14\x14\x7f\x7f\x14"
    b"\x00\x24\x2e\x6b\x6b\x3a\x12\x00\x00\x63\x33\x18\x0c\x66\x63\x00"
    b"\x00\x32\x7f\x4d\x4d\x77\x72\x50\x00\x00\x00\x04\x06\x03\x01\x00"
    b"\x00\x00\x1c\x3e\x63\x41\x00\x00\x00\x00\x41\x63\x3e\x1c\x00\x00"
    b"\x08\x2a\x3e\x1c\x1c\x3e\x2a\x08\x00\x08\x08\x3e\x3e\x08\x08\x00"
    b"\x00\x00\x80\xe0\x60\x00\x00\x00\x00\x08\x08\x08\x08\x08\x08\x00"
    b"\x00\x00\x00\x60\x60\x00\x00\x00\x00\x40\x60\x30\x18\x0c\x06\x02"
    b"\x00\x3e\x7f\x49\x45\x7f\x3e\x00\x00\x40\x44\x7f\x7f\x40\x40\x00"
    b"\x00\x62\x73\x51\x49\x4f\x46\x00\x00\x22\x63\x49\x49\x7f\x36\x00"
    b"\x00\x18\x18\x14\x16\x7f\x7f\x10\x00\x27\x67\x45\x45\x7d\x39\x00"
    b"\x00\x3e\x7f\x49\x49\x7b\x32\x00\x00\x03\x03\x79\x7d\x07\x03\x00"
    b"\x00\x36\x7f\x49\x49\x7f\x36\x00\x00\x26\x6f\x49\x49\x7f\x3e\x00"
    b"\x00\x00\x00\x24\x24\x00\x00\x00\x00\x00\x80\xe4\x64\x00\x00\x00"
    b"\x00\x08\x1c\x36\x63\x41\x41\x00\x00\x14\x14\x14\x14\x14\x14\x00"
    b"\x00\x41\x41\x63\x36\x1c\x08\x00\x00\x02\x03\x51\x59\x0f\x06\x00"
    b"\x00\x3e\x7f\x41\x4d\x4f\x2e\x00\x00\x7c\x7e\x0b\x0b\x7e\x7c\x00"
    b"\x00\x7f\x7f\x49\x49\x7f\x36\x00\x00\x3e\x7f\x41\x41\x63\x22\x00"
    b"\x00\x7f\x7f\x41\x63\x3e\x1c\x00\x00\x7f\x7f\x49\x49\x41\x41\x00"
    b"\x00\x7f\x7f\x09\x09\x01\x01\x00\x00\x3e\x7f\x41\x49\x7b\x3a\x00"
    b"\x00\x7f\x7f\x08\x08\x7f\x7f\x00\x00\x00\x41\x7f\x7f\x41\x00\x00"
    b"\x00\x20\x60\x41\x7f\x3f\x01\x00\x00\x7f\x7f\x1c\x36\x63\x41\x00"
    b"\x00\x7f\x7f\x40\x40\x40\x40\x00\x00\x7f\x7f\x06\x0c\x06\x7f\x7f"
    b"\x00\x7f\x7f\x0e\x1c\x7f\x7f\x00\x00\x3e\x7f\x41\x41\x7f\x3e\x00"
    b"\x00\x7f\x7f\x09\x09\x0f\x06\x00\x00\x1e\x3f\x21\x61\x7f\x5e\x00"
    b"\x00\x7f\x7f\x19\x39\x6f\x46\x00\x00\x26\x6f\x49\x49\x7b\x32\x00"
    b"\x00\x01\x01\x7f\x7f\x01\x01\x00\x00\x3f\x7f\x40\x40\x7f\x3f\x00"
    b"\x00\x1f\x3f\x60\x60\x3f\x1f\x00\x00\x7f\x7f\x30\x18\x30\x7f\x7f"
    b"\x00\x63\x77\x1c\x1c\x77\x63\x00\x00\x07\x0f\x78\x78\x0f\x07\x00"
    b"\x00\x61\x71\x59\x4d\x47\x43\x00\x00\x00\x7f\x7f\x41\x41\x00\x00"
    b"\x00\x02\x06\x0c\x18\x30\x60\x40\x00\x00\x41\x41\x7f\x7f\x00\x00"
    b"\x00\x08\x0c\x06\x06\x0c\x08\x00\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0"
    b"\x00\x00\x01\x03\x06\x04\x00\x00\x00\x20\x74\x54\x54\x7c\x78\x00"
    b"\x00\x7f\x7f\x44\x44\x7c\x38\x00\x00\x38\x7c\x44\x44\x6c\x28\x00"
    b"\x00\x38\x7c\x44\x44\x7f\x7f\x00\x00\x38\x7c\x54\x54\x5c\x58\x00"
    b"\x00\x08\x7e\x7f\x09\x03\x02\x00\x00\x98\xbc\xa4\xa4\xfc\x7c\x00"
    b"\x00\x7f\x7f\x04\x04\x7c\x78\x00\x00\x00\x00\x7d\x7d\x00\x00\x00"
    b"\x00\x40\xc0\x80\x80\xfd\x7d\x00\x00\x7f\x7f\x30\x38\x6c\x44\x00"
    b"\x00\x00\x41\x7f\x7f\x40\x00\x00\x00\x7c\x7c\x18\x30\x18\x7c\x7c"
    b"\x00\x7c\x7c\x04\x04\x7c\x78\x00\x00\x38\x7c\x44\x44\x7c\x38\x00"
    b"\x00\xfc\xfc\x24\x24\x3c\x18\x00\x00\x18\x3c\x24\x24\xfc\xfc\x00"
    b"\x00\x7c\x7c\x04\x04\x0c\x08\x00\x00\x48\x5c\x54\x54\x74\x20\x00"
    b"\x04\x04\x3f\x7f\x44\x64\x20\x00\x00\x3c\x7c\x40\x40\x7c\x3c\x00"
    b"\x00\x1c\x3c\x60\x60\x3c\x1c\x00\x00\x1c\x7c\x30\x18\x30\x7c\x1c"
    b"\x00\x44\x6c\x38\x38\x6c\x44\x00\x00\x9c\xbc\xa0\xa0\xfc\x7c\x00"
    b"\x00\x44\x64\x74\x5c\x4c\x44\x00\x00\x08\x08\x3e\x77\x41\x41\x00"
    b"\x00\x00\x00\xff\xff\x00\x00\x00\x00\x41\x41\x77\x3e\x08\x08\x00"
    b"\x00\x02\x03\x01\x03\x02\x03\x01"
)

# A nibble's 4 pixels doubled into 8 (each bit twice): for 8x16 glyphs.
_STRETCH = bytes(
    sum(3 << (2 * i) for i in range(4) if n >> i & 1) for n in range(16)
)


def glyph(c):
    """The 8 column bytes of character `c` ('?' for anything outside ASCII 32..126)."""
    o = ord(c)
    if o < 32 or o > 126:
        o = 63
    i = (o - 32) * 8
    return FONT[i:i + 8]


class SSD1306:
    def __init__(self, i2c, addr=ADDRS[0], cols=COLS, rows=2):
        self.i2c = i2c
        self.addr = addr
        self.cols = min(cols, COLS)
        self.rows = min(rows, len(LINE_PAGES))
        self._upper = bytearray(1 + WIDTH)
        self._lower = bytearray(1 + WIDTH)
        self._upper[0] = self._lower[0] = _DATA
        self._shown = [None] * self.rows
        self.init()

    def _command(self, *cmds):
        self.i2c.writeto(self.addr, bytes((_CMD,) + cmds))

    def init(self):
        """Configure the controller and clear its RAM (also after a bus error)."""
        self.i2c.writeto(self.addr, INIT)
        blank = bytearray(1 + WIDTH)
        blank[0] = _DATA
        self._command(0x21, 0, WIDTH - 1, 0x22, 0, HEIGHT // 8 - 1)
        for _ in range(HEIGHT // 8):
            self.i2c.writeto(self.addr, blank)
        self._shown = [None] * self.rows

    def write_line(self, row, text):
        """Draw one text line (padded or cut to the width) if it changed."""
        if row >= self.rows or self._shown[row] == text:
            return
        upper, lower, stretch = self._upper, self._lower, _STRETCH
        x = 1
        for i in range(COLS):
            g = glyph(text[i]) if i < len(text) and i < self.cols else b"\x00" * 8
            for b in g:
                upper[x] = stretch[b & 0x0F]
                lower[x] = stretch[b >> 4]
                x += 1
        top, bottom = LINE_PAGES[row]
        self._command(0x21, 0, WIDTH - 1, 0x22, top, bottom)
        self.i2c.writeto(self.addr, upper)
        self.i2c.writeto(self.addr, lower)
        self._shown[row] = text

    def show(self, lines):
        for row in range(min(len(lines), self.rows)):
            self.write_line(row, lines[row])

    def power(self, on):
        """Display on or off (RAM kept): OLEDs age; a kiosk may dim at night."""
        self._command(0xAF if on else 0xAE)
