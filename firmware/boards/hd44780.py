# HD44780 character LCD (16x2, also 20x4) on a PCF8574 I2C backpack, 4-bit mode.
#
# Backpack wiring (the common "LCM1602 IIC" board): P0=RS P1=RW P2=E
# P3=backlight P4..P7=D4..D7. RW stays low: we only write. Each 4-bit nibble is
# two bytes on the bus, first with E high, then with E low (the LCD latches on
# the falling edge), so a byte is 4 bus bytes. A whole line goes out as one I2C
# transfer from a preallocated buffer, and only when its text changed.
#
# Hardware-free: `i2c` is anything with writeto(addr, buf) (machine.I2C has
# it), so host tests drive it with a recording fake. I2C errors (OSError) are
# the caller's to handle; a line whose transfer failed is not remembered, so
# the next write_line sends it again (call init() first if the LCD lost sync).
# Heap: one (4 + 4 * cols)-byte line buffer, 4- and 2-byte command buffers and
# the last text of each row (the caller's strings, not copies).

import time

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

try:
    from time import sleep_ms
except ImportError:  # CPython (host tests)
    def sleep_ms(ms):
        time.sleep(ms / 1000)

ADDR = const(0x27)  # PCF8574T backpack; PCF8574AT ones answer at ADDR_ALT
ADDR_ALT = const(0x3F)

_RS = const(0x01)  # P0: 0 = command, 1 = character data
_EN = const(0x04)  # P2: enable strobe
_BL = const(0x08)  # P3: backlight transistor

_CLEAR = const(0x01)
_ENTRY_INC = const(0x06)  # cursor moves right, display does not shift
_DISPLAY_OFF = const(0x08)
_DISPLAY_ON = const(0x0C)  # display on, cursor and blink off
_FUNC_4BIT_2LINE = const(0x28)  # 4-bit bus, 2 lines, 5x8 dots
_SET_DDRAM = const(0x80)


def _put(buf, i, byte, flags):
    # One byte as two nibbles, each strobed with E: 4 bus bytes at buf[i:i+4].
    hi = (byte & 0xF0) | flags
    lo = ((byte << 4) & 0xF0) | flags
    buf[i] = hi | _EN
    buf[i + 1] = hi
    buf[i + 2] = lo | _EN
    buf[i + 3] = lo


class HD44780:
    def __init__(self, i2c, addr=ADDR, cols=16, rows=2):
        self.i2c = i2c
        self.addr = addr
        self.cols = cols
        self.rows = rows
        self._bl = _BL
        self._line = bytearray(4 + 4 * cols)
        self._cmd = bytearray(4)
        self._nib = bytearray(2)
        # DDRAM address of each row's first column (0x14/0x54 for 20x4).
        self._row_addr = (0x00, 0x40, cols, 0x40 + cols)
        self._shown = [None] * rows
        self.init()

    def init(self):
        """Reset the controller into 4-bit mode from any state (power-on, or a
        nibble lost on the bus) and clear it. Blocks ~75 ms: boot or recovery only."""
        sleep_ms(50)  # > 40 ms after power reaches 2.7 V
        # Reset by instruction (datasheet figure 24): 8-bit function set three
        # times, then switch to 4-bit; each is a single nibble.
        for nibble, wait in ((3, 5), (3, 1), (3, 1), (2, 1)):
            self._nib[0] = (nibble << 4) | self._bl | _EN
            self._nib[1] = (nibble << 4) | self._bl
            self.i2c.writeto(self.addr, self._nib)
            sleep_ms(wait)
        self.command(_FUNC_4BIT_2LINE)
        self.command(_DISPLAY_OFF)
        self.command(_CLEAR)
        sleep_ms(2)  # clear takes 1.52 ms
        self.command(_ENTRY_INC)
        self.command(_DISPLAY_ON)
        for row in range(self.rows):
            self._shown[row] = None

    def command(self, byte):
        _put(self._cmd, 0, byte, self._bl)
        self.i2c.writeto(self.addr, self._cmd)

    def write_line(self, row, text):
        """Show `text` on `row`, padded or cut to the width; characters outside
        printable ASCII show as '?'. Sends nothing if the row already shows it.
        Returns True if the line was sent."""
        if text == self._shown[row]:
            return False
        buf = self._line
        _put(buf, 0, _SET_DDRAM | self._row_addr[row], self._bl)
        flags = self._bl | _RS
        n = len(text)
        pos = 4
        for i in range(self.cols):
            c = ord(text[i]) if i < n else 32
            if c < 32 or c > 126:
                c = 63  # '?'
            _put(buf, pos, c, flags)
            pos += 4
        self.i2c.writeto(self.addr, buf)
        self._shown[row] = text  # only once it is on the glass
        return True

    def show(self, lines):
        """Write each row of `lines` that changed. Returns how many were sent."""
        sent = 0
        for row in range(min(len(lines), self.rows)):
            if self.write_line(row, lines[row]):
                sent += 1
        return sent

    def backlight(self, on):
        self._bl = _BL if on else 0
        self._nib[0] = self._bl
        self.i2c.writeto(self.addr, memoryview(self._nib)[:1])
