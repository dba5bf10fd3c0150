# The kiosk's self-test: what a technician checks before leaving a venue.
#
#   report = run(board, cfg)          -> {"ok": bool, "checks": [[name, status, detail], ...]}
#
# status is "pass", "fail" or "n/a" (the check cannot be made on this board or
# build: never counted as a pass). Checks, in order: config, clock, journal
# (flash writable), display (LCD/LED/buzzer pattern: a person looks and
# listens), scanner (answers the GM65 command protocol), tls (the files the
# config names are there, paths relative to the device's root), operator_key,
# wifi, broker (TCP connect with a deadline). Details are short and say what
# to do; never personal data or secrets. `kioskctl selftest` runs main()
# through the REPL and reads the one line it prints; the kiosk's `selftest`
# command calls run() with pattern=False, scanner=False, wifi_wait_ms=0 (the
# app owns the display, the scanner line and the Wi-Fi meanwhile).
# Importing this module does nothing else.
# Heap: the report (< 1 KB) and one socket while the broker check runs.

import json
import socket
import time

from kiosk import ui
from kiosk.ticks import ticks_diff

MARK = "KIOSK-SELFTEST "  # the line main() prints starts with this
CLOCK_MIN = 1735689600  # 2025-01-01: a clock before this was never set
_PROBE = "selftest.tmp"


def _elapsed(board, start):
    return ticks_diff(board.ticks_ms(), start)


def _wait(board, ms):
    """Let the board play patterns for ms without sleeping blindly."""
    start = board.ticks_ms()
    while _elapsed(board, start) < ms:
        board.wait(min(20, max(1, ms - _elapsed(board, start))), None)
        board.tick(board.ticks_ms())


def check_clock(board):
    now = board.unix_time()
    if now < CLOCK_MIN:
        return "fail", "clock not set (%d): needs NTP (network) first" % now
    t = time.gmtime(now - 946684800 if time.gmtime(0)[0] == 2000 else now)
    return "pass", "%04d-%02d-%02d %02d:%02d UTC" % (t[0], t[1], t[2], t[3], t[4])


def check_journal(board):
    path = board.path(_PROBE)
    data = b"kiosk selftest " + bytes(range(64))
    try:
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            back = f.read()
    except OSError as e:
        return "fail", "flash not writable (%s): reformat or replace the board" % e
    finally:
        try:
            import os
            os.remove(path)
        except OSError:
            pass
    if back != data:
        return "fail", "flash returned other bytes than written: replace the board"
    free = ""
    try:
        import os
        st = os.statvfs(board.path(""))
        free = ", %d KB free" % (st[0] * st[3] // 1024)
    except (OSError, AttributeError):
        pass
    return "pass", "write/read ok" + free


def show_pattern(board):
    """Every LED colour, both LCD lines full, and the buzzer's patterns."""
    steps = (("TEST HIEN THI", "0123456789ABCDEF", "red", None),
             ("TEST HIEN THI", "################", "green", "pass"),
             ("TEST HIEN THI", "LED XANH DUONG", "blue", None),
             ("TEST HIEN THI", "LED VANG", "amber", "retry"))
    try:
        for line1, line2, led, buzz in steps:
            board.show(ui.Screen(line1, line2, led, buzz))
            _wait(board, 400)
        board.show(ui.Screen("TEST XONG", "", "off"))
    except OSError as e:
        return "fail", "display/LED/buzzer error: %s" % e
    if getattr(board, "lcd", True) is None:
        return "fail", "no LCD answered on I2C: check SDA/SCL and the backpack address"
    return "pass", "look and listen: LCD text, LED red>green>blue>amber, beeps"


def check_scanner(board, timeout_ms=1000):
    try:
        from kiosk import gm65
    except ImportError:
        return "n/a", "this firmware has no GM65 command support"
    probe = getattr(gm65, "probe", None)
    if probe is None:
        return "n/a", "this firmware's GM65 module cannot probe"
    try:
        while board.scanner_read():  # bytes the app left unread are not an answer
            pass
        answer = probe(board, timeout_ms)
    except OSError as e:
        return "fail", "scanner UART error: %s" % e
    if not answer:
        return "fail", "scanner did not answer its command protocol: check power, TX/RX wiring"
    return "pass", str(answer) if answer is not True else "answers"


def device_path(board, path):
    """A path from the config ("/certs/ca.pem") on this board's flash."""
    return board.path(path[1:] if path.startswith("/") else path)


def check_files(board, cfg):
    tls = (cfg.get("broker") or {}).get("tls")
    if not tls:
        return "n/a", "no TLS in config (plain MQTT)"
    missing = []
    for key in ("ca", "cert", "key"):
        path = tls.get(key)
        if not path:
            continue
        try:
            with open(device_path(board, path), "rb") as f:
                if not f.read(16):
                    missing.append(path + " empty")
        except OSError:
            missing.append(path + " missing")
    if missing:
        return "fail", ", ".join(missing) + ": run kioskctl provision"
    return "pass", "CA and client certificate present"


def check_operator_key(cfg):
    key = cfg.get("operator_key")
    if not key:
        return "fail", "no operator key: signed policy/trust lists will be refused"
    try:
        import binascii
        raw = binascii.a2b_base64(key)
    except ValueError:
        return "fail", "operator key is not base64: reprovision"
    if len(raw) != 65 or raw[0] != 4:
        return "fail", "operator key is not a P-256 point: reprovision"
    return "pass", "pinned"


def check_wifi(board, cfg, wait_ms):
    if not board.HAS_WIFI:
        return "n/a", "board uses the host's network"
    if not board.network_up() and wait_ms > 0:
        board.start_network(cfg)
        start = board.ticks_ms()
        while not board.network_up() and _elapsed(board, start) < wait_ms:
            _wait(board, 100)
    if board.network_up():
        return "pass", "connected to " + cfg["wifi"]["ssid"]
    if wait_ms <= 0:
        return "fail", "not connected to " + cfg["wifi"]["ssid"]
    status = getattr(board, "wifi_status", None)  # the ESP32 board says why
    why = status() if status else "wrong password? out of range?"
    return "fail", "not connected to %s after %d s: %s" % (
        cfg["wifi"]["ssid"], wait_ms // 1000, why)


def check_broker(cfg, timeout_s=3):
    b = cfg["broker"]
    host, port = b["host"], b["port"]
    where = "%s:%d" % (host, port)
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    except OSError:
        return "fail", "broker name %s not found (DNS): check broker.host" % host
    s = socket.socket()
    try:
        s.settimeout(timeout_s)
        s.connect(addr)
    except OSError as e:
        return "fail", "broker %s not reachable (%s): firewall, address or port?" % (where, e)
    finally:
        s.close()
    return "pass", "TCP connect to %s" % where


def run(board, cfg, config_error=None, pattern=True, scanner=True, wifi_wait_ms=15000,
        broker_timeout_s=3):
    """Run every check; a failing check never stops the others. While the app
    runs (the `selftest` command): pattern=False, scanner=False (the app owns
    the display and the scanner line), wifi_wait_ms=0 (Wi-Fi is reported as it
    is, not restarted); the broker check then blocks at most broker_timeout_s."""
    checks = []

    def add(name, result):
        checks.append([name, result[0], result[1]])

    if cfg is None:
        add("config", ("fail", (config_error or "config: missing") + ": run kioskctl provision"))
    else:
        add("config", ("pass", "%s at %s gate %s" % (cfg["device"], cfg["venue"], cfg["gate"])))
    add("clock", check_clock(board))
    add("journal", check_journal(board))
    if pattern:
        add("display", show_pattern(board))
    if scanner:
        add("scanner", check_scanner(board))
    if cfg is not None:
        add("tls", check_files(board, cfg))
        add("operator_key", check_operator_key(cfg))
        wifi = check_wifi(board, cfg, wifi_wait_ms)
        add("wifi", wifi)
        if wifi[0] == "fail":
            add("broker", ("fail", "no network (see wifi)"))
        else:
            add("broker", check_broker(cfg, broker_timeout_s))
    ok = True
    for c in checks:
        if c[1] == "fail":
            ok = False
    return {"ok": ok, "checks": checks}


def main():
    """From the REPL (kioskctl selftest): load the board and config, run, print one line."""
    from boards import load
    from kiosk import config

    board = load()
    cfg, err = config.load(board.path("config.json"), need_wifi=board.HAS_WIFI)
    report = run(board, cfg, err)
    print(MARK + json.dumps(report))
    return report
