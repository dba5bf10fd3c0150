# The ESP32 board: the reference build of hardware/ (ESP32-WROOM-32 DevKitC).
#
#   scanner  machine.UART, 9600 8N1, 2 KB receive ring, timeout 0: never blocks
#   display  HD44780 16x2 on a PCF8574 I2C backpack (boards/hd44780.py) at
#            0x27 or 0x3F, or with pinmap "display": "ssd1306" an SSD1306
#            128x64 OLED (boards/ssd1306.py) at 0x3C or 0x3D; if none answers:
#            a warning, and the kiosk runs without a display (LED and buzzer
#            still give the verdict)
#   LED      RGB on three PWM pins, common cathode (or anode: duty inverted)
#   buzzer   passive, PWM at its resonant frequency; kiosk/ui.py BUZZ patterns
#            are played by tick(now), never by sleeping
#   network  WLAN station: start_network() starts connecting and returns; the
#            IDF driver reconnects by itself after a drop
#
# Pins come from /pinmap.json (hardware/pinmap.json, deployed next to main.py);
# without it, DEFAULT_PINS (the same values; a test keeps them equal). The only
# module that imports machine and network.
# Heap (measured on the 64-bit unix port; less on the 32-bit ESP32): ~1 KB for
# the pin map (notes dropped), ~0.1 KB of LCD buffers, the peripheral objects,
# and ~7 KB of bytecode for this module plus ~2.7 KB for hd44780 unless they
# are frozen into the firmware image. The UART ring buffer and the Wi-Fi stack
# live in the IDF heap, outside the GC heap.

import json
import select
import time

import machine
import network

from boards import watch_socket
from boards.hd44780 import HD44780
from kiosk import log
from kiosk.ui import BUZZ, LED_RGB

try:
    from micropython import const
except ImportError:  # CPython (host tests with a stand-in machine module)
    def const(x):
        return x

_READ_MAX = const(512)  # bytes taken from the UART per scanner_read()
_RXBUF_MIN = const(2048)  # a 1 KB-plus HC1 code must fit while the loop is busy
_BUZZ_DUTY = const(32768)  # 50 %: loudest square wave for a passive buzzer
# time.time() counts from 2000-01-01 on ports built that way: gmtime(0) says.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

_MIN_UNIX = const(1735689600)  # 2025-01-01: an RTC before that was never set
_RESET_NOTE = "/reset.cause"  # why the last run ended (written by reset())

_MAINT_TIMER = const(0)  # hardware timer 0 feeds the watchdog in a maintenance window
_MAINT_FEED_MS = const(1000)  # well inside the shortest watchdog timeout (WDT_MS)

_OPTIONAL = ("lcd", "oled", "status_led")  # sections that may be null: not fitted
DISPLAYS = ("hd44780", "ssd1306")  # pinmap "display": which of lcd / oled is fitted

# == hardware/pinmap.json without its "note" fields (tests/test_firmware_build.py).
DEFAULT_PINS = {
    "version": 1,
    "board": "ESP32-WROOM-32 DevKitC (4 MB flash, no PSRAM)",
    "scanner": {"uart": 2, "tx": 17, "rx": 16, "baud": 9600, "rxbuf": 2048},
    "i2c": {"id": 0, "sda": 21, "scl": 22, "freq": 100000},
    "lcd": {"addrs": [39, 63], "cols": 16, "rows": 2},
    "display": "hd44780",
    "oled": {"addrs": [60, 61]},
    "rgb_led": {"r": 25, "g": 26, "b": 27, "common_cathode": True, "pwm_freq": 1000},
    "buzzer": {"pin": 32, "freq": 2700},
    "status_led": {"pin": 33, "active_high": True},
}


def load_pins(path):
    """DEFAULT_PINS, each section updated key by key with the file's. A section
    set to null means "not fitted" (lcd, status_led only). A missing or bad
    file, or a bad section: the defaults for it, with a warning."""
    try:
        with open(path) as f:
            given = json.load(f)
    except OSError:
        log.info("board", path + " not found: built-in pin map")
        return DEFAULT_PINS
    except ValueError:
        log.warn("board", path + ": not valid JSON, using the built-in pin map")
        return DEFAULT_PINS
    if not isinstance(given, dict) or given.get("version") != 1:
        log.warn("board", path + ": needs \"version\": 1, using the built-in pin map")
        return DEFAULT_PINS
    pins = {}
    for key in DEFAULT_PINS:
        base = DEFAULT_PINS[key]
        over = given.get(key, base)
        if isinstance(base, dict):
            if isinstance(over, dict):
                merged = dict(base)
                merged.update(over)
                merged.pop("note", None)  # for people; ~1 KB of heap otherwise
                over = merged
            elif not (over is None and key in _OPTIONAL):
                log.warn("board", path + ": " + key + " must be an object; built-in used")
                over = base
        elif type(over) is not type(base):
            over = base
        pins[key] = over
    return pins


class Buzzer:
    """Plays a BUZZ pattern ((on_ms, off_ms), ...) on a PWM output, advanced by
    tick(now); a new pattern replaces the one playing."""

    def __init__(self, pwm):
        self.pwm = pwm
        self.pattern = None
        self.step = 0
        self.on = False
        self.edge = 0  # ticks_ms of the next change

    def _set(self, on):
        self.pwm.duty_u16(_BUZZ_DUTY if on else 0)
        self.on = on

    def play(self, pattern, now):
        self.pattern = pattern
        self.step = 0
        self._set(True)
        self.edge = time.ticks_add(now, pattern[0][0])

    def tick(self, now):
        pat = self.pattern
        if pat is None or time.ticks_diff(now, self.edge) < 0:
            return
        if self.on:
            self._set(False)
            off = pat[self.step][1]
            if off > 0:
                self.edge = time.ticks_add(now, off)
                return
        self.step += 1
        if self.step >= len(pat):
            self.pattern = None
            return
        self._set(True)
        self.edge = time.ticks_add(now, pat[self.step][0])

    def due(self, now):
        """Milliseconds until the next change (0 if late), or -1 if idle."""
        if self.pattern is None:
            return -1
        return max(0, time.ticks_diff(self.edge, now))


class Board:
    HAS_WIFI = True

    def __init__(self, pins_path="/pinmap.json"):
        self.ticks_ms = time.ticks_ms  # no Python frame per call: the loop calls it often
        pins = self.pins = load_pins(pins_path)
        Pin = machine.Pin
        s = pins["scanner"]
        self._uart = machine.UART(s["uart"], baudrate=s["baud"], tx=s["tx"], rx=s["rx"],
                                  rxbuf=max(s["rxbuf"], _RXBUF_MIN), timeout=0)
        self._poll = select.poll()
        self._poll.register(self._uart, select.POLLIN)
        self._sock = None
        self.lcd = _open_display(pins)  # the HD44780 LCD or the SSD1306 OLED, or None
        self._lcd_ok = True
        led = pins["rgb_led"]
        self._cathode = led["common_cathode"]
        self._rgb = [machine.PWM(Pin(led[c]), freq=led["pwm_freq"], duty_u16=self._duty(0))
                     for c in ("r", "g", "b")]
        bz = pins["buzzer"]
        self.buzzer = Buzzer(machine.PWM(Pin(bz["pin"]), freq=bz["freq"], duty_u16=0))
        st = pins.get("status_led")
        self._status = None
        if st and st.get("pin") is not None:
            self._status_on = 1 if st.get("active_high", True) else 0
            self._status = Pin(st["pin"], Pin.OUT, value=1 - self._status_on)
        self._status_up = False
        self._wlan = None
        self._wdt = None
        self._maint = None  # the machine.Timer feeding the watchdog after ctrl-C

    def path(self, name):
        return "/" + name

    # -- time (ticks_ms is time.ticks_ms itself, set in __init__) ---------------

    def unix_time(self):
        return time.time() + _EPOCH_OFFSET

    # -- scanner -------------------------------------------------------------

    def scanner_read(self):
        n = self._uart.any()
        if n <= 0:
            return None  # no 512-byte read buffer allocated on an idle pass
        return self._uart.read(min(n, _READ_MAX))

    def scanner_write(self, data):
        self._uart.write(data)

    def wait(self, timeout_ms, sock):
        self._sock = watch_socket(self._poll, self._sock, sock)
        due = self.buzzer.due(time.ticks_ms())
        if 0 <= due < timeout_ms:
            timeout_ms = due  # wake for the buzzer's next edge, keep its rhythm
        self._poll.ipoll(timeout_ms)  # waits like poll() without allocating a result list

    # -- outputs -------------------------------------------------------------

    def _duty(self, level):
        v = level * 257  # 0..255 -> 0..65535
        return v if self._cathode else 65535 - v

    def show(self, screen):
        lcd = self.lcd
        if lcd is not None:
            try:
                if not self._lcd_ok:
                    lcd.init()  # resync after a bus error (~75 ms, only then)
                lcd.show(screen.lines)
                self._lcd_ok = True
            except OSError as e:
                if self._lcd_ok:
                    log.warn("board", "LCD write failed: %s" % e)
                self._lcd_ok = False
        rgb = LED_RGB.get(screen.led) or LED_RGB["off"]
        for i in range(3):
            self._rgb[i].duty_u16(self._duty(rgb[i]))
        if screen.buzz is not None:
            pattern = BUZZ.get(screen.buzz)
            if pattern:
                self.buzzer.play(pattern, time.ticks_ms())

    def tick(self, now):
        self.buzzer.tick(now)
        if self._status is not None:
            up = self._wlan is not None and self._wlan.isconnected()
            if up != self._status_up:
                self._status_up = up
                self._status.value(self._status_on if up else 1 - self._status_on)

    # -- network -------------------------------------------------------------

    def start_network(self, cfg):
        wifi = cfg["wifi"]
        network.hostname(cfg["device"])  # the DHCP name operators see
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        try:
            wlan.config(pm=wlan.PM_NONE)  # mains powered: no sleep between beacons
        except (ValueError, OSError) as e:
            log.warn("board", "wlan pm: %s" % e)
        wlan.connect(wifi["ssid"], wifi["password"])  # returns at once
        self._wlan = wlan
        log.info("board", "Wi-Fi connecting to " + wifi["ssid"])

    def network_up(self):
        return self._wlan is not None and self._wlan.isconnected()

    def wifi_status(self):
        """Why the station is not connected, in words a technician acts on
        (kiosk/selftest.py); the ESP-IDF reason codes network.STAT_* name."""
        if self._wlan is None:
            return "Wi-Fi not started"
        st = self._wlan.status()
        if st == network.STAT_WRONG_PASSWORD:
            return "wrong password"
        if st == network.STAT_NO_AP_FOUND:
            return "network not found (check wifi.ssid and the distance to the access point)"
        if st == network.STAT_CONNECTING:
            return "still connecting"
        if st == network.STAT_GOT_IP:
            return "connected"
        return "status %d" % st  # beacon/handshake timeouts, association refused

    def rssi(self):
        """Signal strength in dBm, or None without a Wi-Fi connection."""
        if not self.network_up():
            return None
        try:
            return self._wlan.status("rssi")
        except (ValueError, OSError):
            return None

    # -- clock, resets, watchdog (kiosk/clock.py, kiosk/health.py) -------------

    def rtc_unix(self):
        """The RTC's time if it has been set (it survives a soft reset, not a
        power cut: then it counts from 2000-01-01 and is ignored)."""
        t = time.time() + _EPOCH_OFFSET
        return t if t >= _MIN_UNIX else None

    def set_rtc(self, unix):
        tm = time.gmtime(unix - _EPOCH_OFFSET)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    def reset_cause(self):
        """Why this boot happened: "crash", "soft" (noted by reset()),
        "maintenance" (noted by wdt_maintenance()),
        "watchdog", or "power" (power-on, brown-out, reset button)."""
        try:
            with open(_RESET_NOTE) as f:
                cause = f.read().strip()
            import os

            os.remove(_RESET_NOTE)
            if cause:
                return cause
        except OSError:
            pass
        rc = machine.reset_cause()
        if rc == machine.WDT_RESET:
            return "watchdog"
        if rc == machine.SOFT_RESET:
            return "soft"
        return "power"

    def reset(self, cause):
        with open(_RESET_NOTE, "w") as f:
            f.write(cause)
        machine.reset()

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)  # cannot be stopped once started

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def wdt_maintenance(self, window_ms):
        """ctrl-C stopped the app for a technician's REPL session: a timer feeds
        the running watchdog for window_ms, then lets it reset the board into the
        app; returns window_ms, or 0 without a watchdog running. Timer callbacks
        are soft on the ESP32: scheduled, and run between bytecodes and while the
        REPL waits for input. A soft reset (ctrl-D) deinits every machine.Timer,
        so kioskctl's restart ends the window; the watchdog keeps running and the
        new app feeds it."""
        wdt = self._wdt
        if wdt is not None:
            wdt.feed()
            end = time.ticks_add(time.ticks_ms(), window_ms)

            def feed(timer):
                if time.ticks_diff(end, time.ticks_ms()) > 0:
                    wdt.feed()
                else:
                    timer.deinit()  # the watchdog resets the board in WDT_MS

            tim = machine.Timer(_MAINT_TIMER)
            tim.init(mode=machine.Timer.PERIODIC, period=_MAINT_FEED_MS, callback=feed)
            self._maint = tim
        with open(_RESET_NOTE, "w") as f:  # the next boot's cause: not a crash
            f.write("maintenance")
        return window_ms if wdt is not None else 0


def _open_display(pins):
    """The display pinmap "display" names; both drivers take show(lines) and init()."""
    kind = pins["display"]
    if kind not in DISPLAYS:
        log.warn("board", "display: %s unknown, hd44780 or ssd1306; trying hd44780" % kind)
        kind = "hd44780"
    if kind == "ssd1306":
        return _open_oled(pins["i2c"], pins["oled"]) if pins["oled"] else None
    return _open_lcd(pins["i2c"], pins["lcd"]) if pins["lcd"] else None


def _open_oled(bus, oled):
    from boards.ssd1306 import SSD1306  # imported only where one is fitted (~3 KB)

    i2c = machine.I2C(bus["id"], sda=machine.Pin(bus["sda"]), scl=machine.Pin(bus["scl"]),
                      freq=bus["freq"])
    try:
        found = i2c.scan()
        for addr in oled["addrs"]:
            if addr in found:
                log.info("board", "OLED at 0x%02x" % addr)
                return SSD1306(i2c, addr)
    except OSError as e:
        log.warn("board", "I2C: %s" % e)
    log.warn("board", "no OLED at %s on I2C %d: running without a display"
             % ("/".join("0x%02x" % a for a in oled["addrs"]), bus["id"]))
    return None


def _open_lcd(bus, lcd):
    i2c = machine.I2C(bus["id"], sda=machine.Pin(bus["sda"]), scl=machine.Pin(bus["scl"]),
                      freq=bus["freq"])
    try:
        found = i2c.scan()
        for addr in lcd["addrs"]:
            if addr in found:
                log.info("board", "LCD at 0x%02x" % addr)
                return HD44780(i2c, addr, lcd["cols"], lcd["rows"])
    except OSError as e:
        log.warn("board", "I2C: %s" % e)
    log.warn("board", "no LCD at %s on I2C %d: running without a display"
             % ("/".join("0x%02x" % a for a in lcd["addrs"]), bus["id"]))
    return None
