# Telemetry figures and the command handler (firmware/kiosk/telemetry.py,
# firmware/kiosk/commands.py), against a stand-in for the kiosk's link.

import json

from kiosk import commands, telemetry

PROTOCOL_KEYS = {"v", "fw", "uptime", "heap_free", "heap_min", "rssi", "reconnects", "journal",
                 "journal_free", "journal_full", "scans", "pass", "fail", "unreadable", "errors",
                 "clock", "safe_mode", "boot", "reset", "unrecorded"}


class _Obj:
    pass


def _link():
    link = _Obj()
    link.counts = {"scans": 12, "pass": 9, "fail": 2, "unreadable": 1, "errors": 0,
                   "unrecorded": 0, "reconnects": 3, "sent": 9, "acked": 9}
    link.journal = _Obj()
    link.journal.pending = 4
    link.journal.full = False
    link.journal.free_estimate = lambda: 20000
    link.clock = _Obj()
    link.clock.uptime_s = lambda: 3600
    link.clock.source = "ntp"
    link.health = _Obj()
    link.health.boot = 7
    link.health.reset_cause = "power"
    link.board = _Obj()
    link.board.rssi = lambda: -61
    link.heap_min = 40000
    link.safe_mode = False
    link.cfg = {"device": "kiosk-q1-0001"}
    link.sent = []
    link.send_telemetry = lambda: link.sent.append(telemetry.payload(link))
    link.status = lambda: telemetry.figures(link)
    return link


def test_telemetry_has_the_protocol_fields_and_nothing_personal():
    link = _link()
    t = json.loads(telemetry.payload(link))
    assert set(t) == PROTOCOL_KEYS
    assert t["journal"] == 4 and t["reconnects"] == 3 and t["rssi"] == -61
    assert t["clock"] == "ntp" and t["safe_mode"] is False and t["heap_free"] >= 0
    link.clock.source = None
    assert telemetry.figures(link)["clock"] == "unset"


def test_status_reboot_and_bad_commands_get_answers():
    link = _link()
    reply, action = commands.handle(b'{"v":1,"id":"c-1","cmd":"status"}', link)
    r = json.loads(reply)
    assert r["id"] == "c-1" and r["ok"] is True and r["result"]["scans"] == 12
    assert action is None and len(link.sent) == 1  # telemetry sent as well
    reply, action = commands.handle(b'{"v":1,"id":"c-2","cmd":"reboot"}', link)
    assert json.loads(reply)["ok"] is True and action == "reboot"
    reply, action = commands.handle(b'{"v":1,"id":"c-3","cmd":"format"}', link)
    r = json.loads(reply)
    assert r["ok"] is False and r["error"].startswith("cmd:") and action is None
    reply, _ = commands.handle(b'{"v":2,"id":"c-4","cmd":"status"}', link)
    assert json.loads(reply)["error"].startswith("v:")


def test_messages_without_a_usable_id_are_ignored_without_raising():
    link = _link()
    for bad in (b"not json", b"[1,2]", b'{"v":1,"cmd":"status"}', b'{"v":1,"id":"","cmd":"x"}',
                b'{"v":1,"id":"' + b"x" * 33 + b'","cmd":"status"}', b"\xff\xfe",
                b'{"v":1,"id":"a b","cmd":"status"}'):
        assert commands.handle(bad, link) == (None, None), bad
