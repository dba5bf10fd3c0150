# The ESP32 board (firmware/boards/esp32.py) driven through stand-ins for
# machine, network, select and the clock: what it asks of the peripherals
# (UART settings, LCD address, PWM duties, buzzer timing, Wi-Fi calls), not
# whether the peripherals work. Runs under CPython and MicroPython.

import json
import sys
import time as _real_time

import fwtest

from kiosk import ui


class _Obj:
    pass


# -- stand-ins -----------------------------------------------------------------

class Pin:
    OUT = 1
    IN = 0

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.v = value

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        return None


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin
        self.freq = freq
        self.d = duty_u16

    def duty_u16(self, v=None):
        if v is None:
            return self.d
        self.d = v
        return None


class UART:
    def __init__(self, id, baudrate=9600, tx=None, rx=None, rxbuf=None, timeout=None):
        self.args = {"id": id, "baudrate": baudrate, "tx": tx, "rx": rx, "rxbuf": rxbuf,
                     "timeout": timeout}
        self.rx = b""
        self.reads = []
        self.sent = []

    def any(self):
        return len(self.rx)

    def read(self, n):
        self.reads.append(n)
        data, self.rx = self.rx[:n], self.rx[n:]
        return data or None

    def write(self, data):
        self.sent.append(bytes(data))
        return len(data)


class I2C:
    devices = [0x27]  # what scan() finds; set per test before Board()
    last = None

    def __init__(self, id, sda=None, scl=None, freq=400000):
        self.args = (id, sda.id, scl.id, freq)
        self.writes = []
        self.fail = 0
        I2C.last = self

    def scan(self):
        return list(I2C.devices)

    def writeto(self, addr, buf):
        if self.fail:
            self.fail -= 1
            raise OSError(5)  # EIO
        self.writes.append((addr, bytes(buf)))
        return len(buf)


class WLAN:
    PM_NONE = 0
    the = None

    def __init__(self, iface):
        self.iface = iface
        self.calls = []
        self.up = False
        self.stat = network.STAT_CONNECTING
        WLAN.the = self

    def active(self, on=None):
        self.calls.append(("active", on))

    def config(self, **kw):
        self.calls.append(("config", kw))

    def connect(self, ssid, password):
        self.calls.append(("connect", ssid, password))

    def isconnected(self):
        return self.up

    def status(self):
        return self.stat


class Poll:
    def __init__(self):
        self.registered = []
        self.timeouts = []

    def register(self, obj, mask):
        self.registered.append(obj)

    def unregister(self, obj):
        self.registered.remove(obj)

    def ipoll(self, timeout):
        self.timeouts.append(timeout)
        return iter(())


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1
    last = None

    def __init__(self, id):
        self.id = id
        self.callback = None
        Timer.last = self

    def init(self, mode=PERIODIC, period=-1, callback=None):
        self.mode = mode
        self.period = period
        self.callback = callback

    def deinit(self):
        self.callback = None


machine = _Obj()
machine.Pin = Pin
machine.WDT = WDT
machine.Timer = Timer
machine.PWM = PWM
machine.UART = UART
machine.I2C = I2C

network = _Obj()
network.STA_IF = 0
network.STAT_CONNECTING = 1001
network.STAT_WRONG_PASSWORD = 202
network.STAT_NO_AP_FOUND = 201
network.STAT_GOT_IP = 1010
network.WLAN = WLAN
network.names = []
network.hostname = network.names.append

select = _Obj()
select.POLLIN = 1
select.poll = Poll

clock = [0]
fake_time = _Obj()
fake_time.ticks_ms = lambda: clock[0]
fake_time.ticks_add = lambda a, b: a + b
fake_time.ticks_diff = lambda a, b: a - b
fake_time.time = lambda: 1000
fake_time.gmtime = _real_time.gmtime

sys.modules["machine"] = machine
sys.modules["network"] = network
from boards import esp32  # noqa: E402  (needs the stand-ins first)

del sys.modules["machine"]
del sys.modules["network"]
esp32.select = select
esp32.time = fake_time


def _pins_file(data):
    path = fwtest.tmpdir() + "/pinmap.json"
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


def _board(devices=(0x27,), pins=None):
    I2C.devices = list(devices)
    clock[0] = 0
    return esp32.Board(_pins_file(pins) if pins is not None else "/nonexistent/pinmap.json")


def _lcd_texts(writes):
    # Each line transfer: 4 bytes of DDRAM address, then 4 bytes per character
    # (high nibble with E, without, low nibble with E, without).
    out = []
    for _addr, data in writes:
        if len(data) != 4 + 16 * 4:
            continue
        chars = []
        for i in range(4, len(data), 4):
            chars.append(chr((data[i + 1] & 0xF0) | (data[i + 3] >> 4)))
        out.append("".join(chars))
    return out


# -- pin map -------------------------------------------------------------------

def test_missing_pinmap_gives_the_built_in_one():
    assert esp32.load_pins("/nonexistent/pinmap.json") is esp32.DEFAULT_PINS


def test_pinmap_sections_override_the_defaults_key_by_key():
    pins = esp32.load_pins(_pins_file({"version": 1, "buzzer": {"pin": 4, "note": "moved"},
                                       "status_led": None, "lcd": None}))
    assert pins["buzzer"] == {"pin": 4, "freq": 2700}  # notes are not kept
    assert pins["status_led"] is None and pins["lcd"] is None
    assert pins["scanner"] == esp32.DEFAULT_PINS["scanner"]
    assert esp32.DEFAULT_PINS["buzzer"]["pin"] == 32  # defaults untouched


def test_required_sections_cannot_be_removed():
    pins = esp32.load_pins(_pins_file({"version": 1, "scanner": None, "buzzer": 5,
                                       "board": 7}))
    assert pins["scanner"] == esp32.DEFAULT_PINS["scanner"]
    assert pins["buzzer"] == esp32.DEFAULT_PINS["buzzer"]
    assert pins["board"] == esp32.DEFAULT_PINS["board"]


def test_no_lcd_section_means_no_display_and_no_bus_probe():
    I2C.last = None
    b = _board(pins={"version": 1, "lcd": None, "status_led": None})
    assert b.lcd is None and I2C.last is None and b._status is None
    b.show(ui.idle("A"))


def test_bad_pinmap_falls_back_to_the_built_in_one():
    assert esp32.load_pins(_pins_file("{not json")) is esp32.DEFAULT_PINS
    assert esp32.load_pins(_pins_file({"version": 2})) is esp32.DEFAULT_PINS
    assert esp32.load_pins(_pins_file([1, 2])) is esp32.DEFAULT_PINS


# -- scanner -------------------------------------------------------------------

def test_scanner_uart_is_non_blocking_with_a_big_ring():
    b = _board()
    assert b._uart.args == {"id": 2, "baudrate": 9600, "tx": 17, "rx": 16, "rxbuf": 2048,
                            "timeout": 0}
    assert b._poll.registered == [b._uart]


def test_small_rxbuf_in_the_pinmap_is_raised_to_2048():
    b = _board(pins={"version": 1, "scanner": {"rxbuf": 256}})
    assert b._uart.args["rxbuf"] == 2048


def test_scanner_read_returns_none_without_reading_when_idle():
    b = _board()
    assert b.scanner_read() is None
    assert b._uart.reads == []
    b._uart.rx = b"HC1:" + b"A" * 600
    first = b.scanner_read()
    assert first is not None and len(first) == 512
    rest = b.scanner_read()
    assert rest is not None and len(rest) == 604 - 512
    b.scanner_write(b"\x7e\x00")
    assert b._uart.sent == [b"\x7e\x00"]


def test_wait_registers_the_socket_once_and_swaps_it():
    b = _board()
    s1, s2 = _Obj(), _Obj()
    b.wait(50, s1)
    b.wait(50, s1)
    assert b._poll.registered == [b._uart, s1]
    b.wait(50, s2)
    assert b._poll.registered == [b._uart, s2]
    b.wait(50, None)
    assert b._poll.registered == [b._uart]
    assert b._poll.timeouts == [50, 50, 50, 50]


# -- display, LED, buzzer ------------------------------------------------------

def test_lcd_found_at_the_alternative_address():
    b = _board(devices=(0x3F,))
    assert b.lcd is not None and b.lcd.addr == 0x3F
    bus = I2C.last
    bus.writes = []
    b.show(ui.idle("A"))
    assert _lcd_texts(bus.writes) == ["MOI QUET MA QR  ", "Cong A          "]
    for addr, _data in bus.writes:
        assert addr == 0x3F


def test_no_lcd_the_kiosk_still_shows_led_and_buzzer():
    b = _board(devices=())
    assert b.lcd is None
    b.show(ui.passed("Nguyen Van An"))
    assert [p.d for p in b._rgb] == [0, 65535, 0]
    assert b.buzzer.on


def test_lcd_bus_error_is_survived_and_recovered():
    b = _board()
    bus = I2C.last
    bus.fail = 1
    b.show(ui.unreadable())  # must not raise
    assert [p.d for p in b._rgb] == [65535, 120 * 257, 0]
    bus.writes = []
    b.show(ui.unreadable())  # re-initialises, then writes both lines
    assert len(bus.writes) > 2
    assert _lcd_texts(bus.writes) == ["KHONG DOC DUOC  ", "Xin quet lai    "]


def test_common_anode_led_is_driven_inverted():
    b = _board(pins={"version": 1, "rgb_led": {"common_cathode": False}})
    assert [p.d for p in b._rgb] == [65535, 65535, 65535]  # off at power-up
    b.show(ui.idle("A"))  # blue (0, 0, 80)
    assert [p.d for p in b._rgb] == [65535, 65535, 65535 - 80 * 257]


def test_buzzer_plays_the_fail_pattern_without_blocking():
    b = _board()
    bz = b.buzzer
    assert bz.pwm.freq == 2700 and bz.pwm.d == 0
    b.show(ui.refused("name"))  # fail: (400, 120), (400, 0)
    timeline = []
    for t in range(0, 1000, 10):
        clock[0] = t
        b.tick(t)
        timeline.append(bz.pwm.d > 0)
    on_times = [i * 10 for i, on in enumerate(timeline) if on]
    assert on_times[0] == 0 and on_times[-1] == 910
    assert 400 not in on_times and 510 not in on_times  # the 120 ms gap
    assert 390 in on_times and 520 in on_times
    assert bz.pattern is None and not bz.on


def test_wait_wakes_for_the_next_buzzer_edge():
    b = _board()
    b.show(ui.unreadable())  # retry: (70, 70), (70, 0)
    clock[0] = 30
    b.wait(50, None)
    assert b._poll.timeouts[-1] == 40
    clock[0] = 200
    b.tick(200)
    b.tick(200)
    b.wait(50, None)
    assert b._poll.timeouts[-1] == 50


def test_a_new_pattern_replaces_the_one_playing():
    b = _board()
    b.show(ui.refused("name"))
    clock[0] = 100
    b.show(ui.passed("A B"))  # pass: (90, 0)
    b.tick(150)
    assert b.buzzer.on
    b.tick(190)
    assert not b.buzzer.on and b.buzzer.pattern is None


# -- network and time ----------------------------------------------------------

def test_start_network_starts_and_returns_status_led_follows():
    b = _board()
    assert not b.network_up()
    b.start_network({"device": "kiosk-q1-0001", "wifi": {"ssid": "venue", "password": "pw"}})
    w = WLAN.the
    assert network.names[-1] == "kiosk-q1-0001"
    assert ("active", True) in w.calls and ("connect", "venue", "pw") in w.calls
    assert not b.network_up()
    assert b._status.v == 0
    w.up = True
    assert b.network_up()
    b.tick(0)
    assert b._status.v == 1


def test_wifi_status_says_why_the_station_is_not_connected():
    b = _board()
    assert b.wifi_status() == "Wi-Fi not started"
    b.start_network({"device": "kiosk-q1-0001", "wifi": {"ssid": "venue", "password": "bad"}})
    w = WLAN.the
    assert b.wifi_status() == "still connecting"
    w.stat = network.STAT_WRONG_PASSWORD
    assert b.wifi_status() == "wrong password"
    w.stat = network.STAT_NO_AP_FOUND
    assert b.wifi_status().startswith("network not found")
    w.stat = 200  # beacon timeout: no word for it, the number helps support
    assert b.wifi_status() == "status 200"


def test_unix_time_and_paths():
    b = _board()
    assert esp32._EPOCH_OFFSET in (0, 946684800)
    assert 946684800 == 10957 * 86400  # 1970-01-01 .. 2000-01-01
    assert b.unix_time() == 1000 + esp32._EPOCH_OFFSET
    assert b.path("journal.log") == "/journal.log"
    assert b.HAS_WIFI is True
    clock[0] = 1234
    assert b.ticks_ms() == 1234


def test_pinmap_selects_the_ssd1306_oled():
    from boards.ssd1306 import SSD1306

    b = _board(devices=(0x3D,), pins={"version": 1, "display": "ssd1306"})
    assert isinstance(b.lcd, SSD1306) and b.lcd.addr == 0x3D
    bus = I2C.last
    bus.writes = []
    b.show(ui.idle("A"))
    assert bus.writes and all(addr == 0x3D for addr, _ in bus.writes)
    assert len([d for _, d in bus.writes if d[0] == 0x40]) == 4  # two pages per line
    assert _board(devices=(0x27,), pins={"version": 1, "display": "ssd1306"}).lcd is None
    odd = _board(devices=(0x27,), pins={"version": 1, "display": "vfd"})
    assert odd.lcd is not None and odd.lcd.addr == 0x27  # unknown kind: the LCD is tried


def test_ctrl_c_has_a_timer_feed_the_watchdog_for_the_window_then_stop():
    b = _board()
    esp32._RESET_NOTE = fwtest.tmpdir() + "/reset.cause"  # not the host's "/"
    Timer.last = None
    assert b.wdt_maintenance(600000) == 0  # no watchdog started: nothing to feed
    assert Timer.last is None
    b.wdt_start(8000)
    wdt = b._wdt
    assert wdt.timeout == 8000
    assert b.wdt_maintenance(600000) == 600000
    t = Timer.last
    assert t.mode == Timer.PERIODIC and 0 < t.period <= 4000  # fed well within 8 s
    fed = wdt.feeds
    clock[0] = 599000  # the technician is still at the REPL: fed
    t.callback(t)
    assert wdt.feeds == fed + 1
    clock[0] = 600000  # the window is over: no more feeding, the watchdog will reset
    t.callback(t)
    assert wdt.feeds == fed + 1 and t.callback is None
    assert b.reset_cause() == "maintenance"  # the next boot: not counted as a crash
