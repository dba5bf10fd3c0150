# The kiosk's configuration (config.json on the device), validated at boot.
#
# {
#   "device": "kiosk-q1-0001",          device id = MQTT username and client id
#   "venue": "HCM-Q1-000123",           the venue's registered location code
#   "gate": "A",                        gate / door within the venue
#   "broker": {"host": "10.0.0.2", "port": 1883, "password": "..."},
#   "wifi": {"ssid": "...", "password": "..."}     (boards with Wi-Fi only)
# }
#
# validate() returns (config, None) or (None, "field: what is wrong") so the
# display can name the field to fix. Heap: the parsed JSON (< 1 KB).

import json

_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def _only(s, allowed, lo, hi):
    if not isinstance(s, str) or not (lo <= len(s) <= hi):
        return False
    for c in s:
        if allowed.find(c) < 0:
            return False
    return True


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
    broker = cfg.get("broker")
    if not isinstance(broker, dict):
        return None, "broker: missing"
    host = broker.get("host")
    if not isinstance(host, str) or not host:
        return None, "broker.host: missing"
    port = broker.get("port", 1883)
    if not isinstance(port, int) or not (0 < port < 65536):
        return None, "broker.port: 1-65535"
    broker["port"] = port
    if not isinstance(broker.get("password"), str):
        return None, "broker.password: missing"
    if need_wifi:
        wifi = cfg.get("wifi")
        if not isinstance(wifi, dict) or not isinstance(wifi.get("ssid"), str) or not wifi["ssid"]:
            return None, "wifi.ssid: missing"
        if not isinstance(wifi.get("password"), str):
            return None, "wifi.password: missing"
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
