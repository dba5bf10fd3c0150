# A check-in record (payload version 1, docs/protocol.md) and its topics.
# Heap: one dict and its JSON encoding (~250 bytes).

import json

from kiosk.version import VERSION


def topic(device, leaf):
    """kiosk/<device>/<leaf>: checkin, status, ack, reply."""
    return "kiosk/" + device + "/" + leaf


def encode(cfg, seq, ts, code, verdict, how, reason=None):
    """The JSON payload (bytes) of one check-in. `reason`: why a fail, or
    why a pass is unverified (a reason code, never personal data)."""
    record = {
        "v": 1,
        "device": cfg["device"],
        "venue": cfg["venue"],
        "gate": cfg["gate"],
        "seq": seq,
        "ts": ts,
        "type": code.type,
        "id": code.ident,
        "verdict": verdict,
        "how": how,
        "fw": VERSION,
    }
    if reason:
        record["reason"] = reason
    return json.dumps(record).encode()
