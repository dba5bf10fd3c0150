# Telemetry (docs/protocol.md "Telemetry"): what an operator needs to see a
# kiosk is healthy, every telemetry_s seconds and on the status command.
# Counters run since boot. Never personal data: only counts and states.
# Heap: one dict and its JSON (~400 bytes) per report; one gc.collect()
# (a few ms) per report so heap_free is the live figure.

import gc
import json

from kiosk.version import VERSION

# gc.mem_free is MicroPython's; CPython (host tests) reports 0.
_mem_free = getattr(gc, "mem_free", None) or (lambda: 0)


def figures(link):
    gc.collect()  # heap_free = what is really free, not what awaits collection
    c = link.counts
    j = link.journal
    clock = link.clock
    return {
        "v": 1,
        "fw": VERSION,
        "uptime": clock.uptime_s(),
        "boot": link.health.boot,
        "reset": link.health.reset_cause,
        "heap_free": _mem_free(),
        "heap_min": link.heap_min,
        "rssi": link.board.rssi(),
        "reconnects": c["reconnects"],
        "journal": j.pending,
        "journal_free": j.free_estimate(),
        "journal_full": j.full,
        "unrecorded": c["unrecorded"],
        "scans": c["scans"],
        "pass": c["pass"],
        "fail": c["fail"],
        "unreadable": c["unreadable"],
        "errors": c["errors"],
        "clock": clock.source or "unset",
        "safe_mode": link.safe_mode,
    }


def payload(link):
    return json.dumps(figures(link)).encode()
