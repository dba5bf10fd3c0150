# The kiosk's self-test (firmware/kiosk/selftest.py) on a stand-in board:
# every check reports pass / fail / n/a with a reason, a failing check never
# stops the others, and nothing is counted as passed that was not checked.

import binascii
import json
import socket

from fwtest import tmpdir

from kiosk import selftest


class FakeBoard:
    HAS_WIFI = False

    def __init__(self, folder, now=1764090000, wifi=None):
        self.folder = folder
        self.now = now
        self.ms = 0
        self.shown = []
        self.wifi = wifi  # None: host network; True/False: a Wi-Fi board that (dis)connects
        self.started = 0
        if wifi is not None:
            self.HAS_WIFI = True

    def path(self, name):
        return self.folder + "/" + name

    def ticks_ms(self):
        return self.ms

    def unix_time(self):
        return self.now

    def wait(self, timeout_ms, sock):
        self.ms += timeout_ms

    def tick(self, now):
        pass

    def show(self, screen):
        self.shown.append(screen.led)

    def scanner_read(self):
        return None

    def scanner_write(self, data):
        pass

    def start_network(self, cfg):
        self.started += 1

    def network_up(self):
        return bool(self.wifi) if self.wifi is not None else True


def _cfg(port, **extra):
    cfg = {"device": "kiosk-st-0001", "venue": "V1", "gate": "A",
           "broker": {"host": "127.0.0.1", "port": port, "password": "x"}}
    cfg.update(extra)
    return cfg


def _status(report, name):
    for check in report["checks"]:
        if check[0] == name:
            return check[1], check[2]
    return None, None


def test_a_healthy_kiosk_passes_and_shows_its_pattern():
    folder = tmpdir()
    board = FakeBoard(folder)
    key = binascii.b2a_base64(b"\x04" + bytes(64)).decode().strip()  # a P-256 point's shape
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = 47000 + (board.now % 1000)
    server.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    server.listen(1)
    try:
        report = selftest.run(board, _cfg(port, operator_key=key), scanner=False)
    finally:
        server.close()
    assert _status(report, "config")[0] == "pass"
    assert _status(report, "clock")[0] == "pass"
    assert _status(report, "journal")[0] == "pass"
    assert _status(report, "display")[0] == "pass"
    assert _status(report, "operator_key")[0] == "pass"
    assert _status(report, "broker") == ("pass", "TCP connect to 127.0.0.1:%d" % port)
    assert _status(report, "wifi")[0] == "n/a"
    assert _status(report, "tls")[0] == "n/a"
    assert report["ok"] is True
    for led in ("red", "green", "blue", "amber"):
        assert led in board.shown
    json.dumps(report)  # the report travels as JSON (REPL line, MQTT command result)


def test_every_failure_is_named_with_what_to_do():
    folder = tmpdir()
    board = FakeBoard(folder, now=1000, wifi=False)
    cfg = _cfg(1, wifi={"ssid": "venue-wifi", "password": "x"},
               broker={"host": "127.0.0.1", "port": 1, "password": "x",
                       "tls": {"ca": "/certs/ca.pem", "cert": "/certs/kiosk.pem",
                               "key": "/certs/kiosk.key"}})
    report = selftest.run(board, cfg, pattern=False, scanner=False, wifi_wait_ms=300)
    assert report["ok"] is False
    status, detail = _status(report, "clock")
    assert status == "fail" and "NTP" in detail
    status, detail = _status(report, "wifi")
    assert status == "fail" and "venue-wifi" in detail and "password" in detail
    assert board.started == 1  # it tried to connect
    assert _status(report, "broker") == ("fail", "no network (see wifi)")
    status, detail = _status(report, "tls")
    assert status == "fail" and "/certs/ca.pem missing" in detail
    assert _status(report, "operator_key")[0] == "fail"
    assert _status(report, "display") == (None, None)  # not run: never counted as passed
    # A board that knows why (the ESP32's driver status) says it instead of guessing.
    board.wifi_status = lambda: "wrong password"
    report = selftest.run(board, cfg, pattern=False, scanner=False, wifi_wait_ms=300)
    status, detail = _status(report, "wifi")
    assert status == "fail" and detail.endswith("venue-wifi after 0 s: wrong password")


def test_tls_files_are_looked_up_on_the_device_and_a_running_app_is_not_disturbed():
    folder = tmpdir()
    import os
    os.mkdir(folder + "/certs")
    for name in ("ca.pem", "kiosk.pem", "kiosk.key"):
        with open(folder + "/certs/" + name, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
    board = FakeBoard(folder, wifi=False)
    cfg = _cfg(1, wifi={"ssid": "w", "password": "x"},
               broker={"host": "127.0.0.1", "port": 1, "password": "x",
                       "tls": {"ca": "/certs/ca.pem", "cert": "/certs/kiosk.pem",
                               "key": "/certs/kiosk.key"}})
    report = selftest.run(board, cfg, pattern=False, scanner=False, wifi_wait_ms=0)
    assert _status(report, "tls")[0] == "pass"
    assert board.started == 0  # the app's Wi-Fi is reported as it is, not restarted
    assert _status(report, "wifi")[0] == "fail"


def test_without_a_config_the_report_says_to_provision():
    board = FakeBoard(tmpdir())
    report = selftest.run(board, None, "config: /config.json not found", pattern=False,
                          scanner=False)
    status, detail = _status(report, "config")
    assert status == "fail" and "kioskctl provision" in detail
    assert report["ok"] is False
    assert _status(report, "broker") == (None, None)


def test_a_scanner_that_does_not_answer_fails_and_missing_support_is_not_a_pass():
    board = FakeBoard(tmpdir())
    status, detail = selftest.check_scanner(board, 50)
    assert status in ("fail", "n/a")
    assert status != "pass"
