# The kiosk's configuration (config.json on the device), validated at boot.
# The format, every key and its default: docs/protocol.md, "Device
# configuration (config.json)". In short:
#
# {
#   "device": "kiosk-q1-0001", "venue": "HCM-Q1-000123", "gate": "A",
#   "wifi": {"ssid": "...", "password": "..."},            (boards with Wi-Fi)
#   "broker": {"host": "10.0.0.2", "port": 8883, "password": "...",
#              "keepalive": 30, "backoff_max_s": 60,
#              "tls": {"ca": "/certs/ca.pem", "cert": "...", "key": "..."}},
#   "ntp": ["pool.ntp.org"], "telemetry_s": 60,
#   "journal": {"max_bytes": 1048576, "when_full": "refuse",
#               "replay_per_s": 20, "replay_delay_s": 30},
#   "operator_key": "<base64 P-256 point>",
#   "fleet": {"policy": "fleet/policy", "trust": "fleet/trust"},
#   "safe_mode": {"crashes": 3, "window_s": 600}
# }
#
# validate() returns (config, None) with every default filled in, or
# (None, "field: what is wrong") so the display can name the field to fix.
# Heap: the parsed JSON (< 1.5 KB).

import json

_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

WHEN_FULL = ("refuse", "admit")


def _only(s, allowed, lo, hi):
    if not isinstance(s, str) or not (lo <= len(s) <= hi):
        return False
    for c in s:
        if allowed.find(c) < 0:
            return False
    return True


def _int(d, key, default, lo, hi):
    """d[key] as an int in lo..hi (default when absent), or None if wrong."""
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
        return None
    d[key] = v
    return v


def _section(cfg, key):
    """cfg[key] as a dict ({} when absent), or None if it is something else."""
    v = cfg.get(key)
    if v is None:
        v = cfg[key] = {}
    return v if isinstance(v, dict) else None


def _broker(cfg):
    broker = cfg.get("broker")
    if not isinstance(broker, dict):
        return "broker: missing"
    host = broker.get("host")
    if not isinstance(host, str) or not host or len(host) > 253:
        return "broker.host: missing"
    tls = broker.get("tls")
    if tls is not None:
        if not isinstance(tls, dict):
            return "broker.tls: must be an object"
        for k in ("ca", "cert", "key"):
            v = tls.get(k)
            if v is not None and (not isinstance(v, str) or not v):
                return "broker.tls." + k + ": file path"
        if not tls.get("ca"):
            return "broker.tls.ca: missing (CA to pin)"
        if bool(tls.get("cert")) != bool(tls.get("key")):
            return "broker.tls: cert and key go together"
    if _int(broker, "port", 8883 if tls else 1883, 1, 65535) is None:
        return "broker.port: 1-65535"
    user = broker.get("user", cfg["device"])
    if not isinstance(user, str) or not user:
        return "broker.user: text"
    broker["user"] = user
    pw = broker.get("password")
    if pw is None and tls and tls.get("cert"):
        pass  # the client certificate is the credential
    elif not isinstance(pw, str):
        return "broker.password: missing"
    if _int(broker, "keepalive", 30, 5, 3600) is None:
        return "broker.keepalive: 5-3600 s"
    if _int(broker, "backoff_max_s", 60, 1, 3600) is None:
        return "broker.backoff_max_s: 1-3600 s"
    return None


def _rest(cfg):
    ntp = cfg.get("ntp", ["pool.ntp.org"])
    if not isinstance(ntp, list) or len(ntp) > 4:
        return "ntp: list of up to 4 servers"
    for host in ntp:
        if not isinstance(host, str) or not host or len(host) > 253:
            return "ntp: server names"
    cfg["ntp"] = ntp
    if _int(cfg, "telemetry_s", 60, 10, 86400) is None:
        return "telemetry_s: 10-86400"
    j = _section(cfg, "journal")
    if j is None:
        return "journal: must be an object"
    if _int(j, "max_bytes", 1048576, 65536, 16777216) is None:
        return "journal.max_bytes: 65536-16777216"
    j.setdefault("when_full", "refuse")
    if j["when_full"] not in WHEN_FULL:
        return "journal.when_full: refuse or admit"
    if _int(j, "replay_per_s", 20, 1, 1000) is None:
        return "journal.replay_per_s: 1-1000"
    if _int(j, "replay_delay_s", 30, 0, 600) is None:
        return "journal.replay_delay_s: 0-600"
    key = cfg.get("operator_key")
    if key is not None and not _only(key, _B64_CHARS, 88, 88):
        return "operator_key: base64 of 65 bytes"
    fleet = _section(cfg, "fleet")
    if fleet is None:
        return "fleet: must be an object"
    for k in ("policy", "trust"):
        t = fleet.setdefault(k, "fleet/" + k)
        if not isinstance(t, str) or not t or "#" in t or "+" in t:
            return "fleet." + k + ": topic"
    sm = _section(cfg, "safe_mode")
    if sm is None:
        return "safe_mode: must be an object"
    if _int(sm, "crashes", 3, 1, 100) is None:
        return "safe_mode.crashes: 1-100"
    if _int(sm, "window_s", 600, 10, 86400) is None:
        return "safe_mode.window_s: 10-86400"
    return None


def validate(cfg, need_wifi=False):
    """Check a parsed config; fill defaults. Returns (cfg, None) or (None, error)."""
    if not isinstance(cfg, dict):
        return None, "config: must be a JSON object"
    if not _only(cfg.get("device"), _ID_CHARS, 1, 32):
        return None, "device: 1-32 chars a-z 0-9 -"
    if not _only(cfg.get("venue"), _CODE_CHARS, 1, 32):
        return None, "venue: location code, 1-32 chars"
    if not _only(cfg.get("gate"), _CODE_CHARS, 1, 16):
        return None, "gate: 1-16 chars"
    err = _broker(cfg)
    if err:
        return None, err
    if need_wifi:
        wifi = cfg.get("wifi")
        if not isinstance(wifi, dict) or not isinstance(wifi.get("ssid"), str) or not wifi["ssid"]:
            return None, "wifi.ssid: missing"
        if not isinstance(wifi.get("password"), str):
            return None, "wifi.password: missing"
    err = _rest(cfg)
    if err:
        return None, err
    return cfg, None


def load(path, need_wifi=False):
    """Read and validate a config file. Returns (cfg, None) or (None, error)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None, "config: " + path + " not found"
    try:
        cfg = json.loads(text)
    except ValueError:
        return None, "config: not valid JSON"
    return validate(cfg, need_wifi)
