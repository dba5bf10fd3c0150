# Commands on kiosk/<device>/cmd (docs/protocol.md "Commands"):
#   {"v":1,"id":"c-17","cmd":"reboot" | "selftest" | "status"}
# answered on kiosk/<device>/cmd/result with {"v":1,"id":..,"ok":..,"result"|"error":..}.
# A malformed message or an unknown command gets ok:false and an error, when
# it carried a usable id; without one there is nobody to answer. Never raises.
# Heap: the parsed command and the reply (< 1 KB; the self-test's report).

import json

from kiosk import log

COMMANDS = ("reboot", "selftest", "status")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"


def _good_id(cid):
    if not isinstance(cid, str) or not (1 <= len(cid) <= 32):
        return False
    for c in cid:
        if _ID_CHARS.find(c) < 0:
            return False
    return True


def _reply(cid, ok, key, value):
    return json.dumps({"v": 1, "id": cid, "ok": ok, key: value}).encode()


def handle(payload, link):
    """(reply bytes or None, action or None); action "reboot" asks for a restart."""
    try:
        msg = json.loads(payload)
    except (ValueError, UnicodeError):
        log.warn("cmd", "not JSON: ignored")
        return None, None
    if not isinstance(msg, dict) or not _good_id(msg.get("id")):
        log.warn("cmd", "no usable id: ignored")
        return None, None
    cid = msg["id"]
    if msg.get("v") != 1:
        return _reply(cid, False, "error", "v: must be 1"), None
    cmd = msg.get("cmd")
    if cmd not in COMMANDS:
        return _reply(cid, False, "error", "cmd: one of reboot, selftest, status"), None
    log.info("cmd", cmd)
    if cmd == "status":
        link.send_telemetry()
        return _reply(cid, True, "result", link.status()), None
    if cmd == "reboot":
        return _reply(cid, True, "result", {"rebooting": True}), "reboot"
    try:
        from kiosk import selftest
    except ImportError:
        return _reply(cid, False, "error", "selftest: not in this firmware"), None
    try:
        report = selftest.run(link.board, link.cfg, pattern=False, scanner=False,
                              wifi_wait_ms=0)
    except Exception as e:  # a broken check must not take the kiosk down
        return _reply(cid, False, "error", "selftest: %s" % type(e).__name__), None
    return _reply(cid, bool(report.get("ok")), "result", report), None
