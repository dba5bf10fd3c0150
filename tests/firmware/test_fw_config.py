# Kiosk configuration checks (firmware/kiosk/config.py).

import json

import fwtest

from kiosk import config

GOOD = {"device": "kiosk-q1-0001", "venue": "HCM-Q1-000123", "gate": "A",
        "broker": {"host": "127.0.0.1", "port": 1883, "password": "pw"}}


def _copy():
    return json.loads(json.dumps(GOOD))


def test_good_config_passes_and_defaults_port():
    c = _copy()
    del c["broker"]["port"]
    cfg, err = config.validate(c)
    assert err is None and cfg["broker"]["port"] == 1883


def test_each_bad_field_is_named():
    cases = [
        ("device", "Kiosk 1", "device"),
        ("device", "", "device"),
        ("venue", "HCM Q1", "venue"),
        ("gate", "x" * 17, "gate"),
        ("broker", None, "broker"),
    ]
    for key, value, field in cases:
        c = _copy()
        c[key] = value
        cfg, err = config.validate(c)
        assert cfg is None and err.startswith(field + ":"), (key, err)
    c = _copy()
    c["broker"]["port"] = 70000
    assert config.validate(c)[1].startswith("broker.port:")
    c = _copy()
    del c["broker"]["password"]
    assert config.validate(c)[1].startswith("broker.password:")
    assert config.validate(_copy(), need_wifi=True)[1].startswith("wifi.ssid:")
    assert config.validate([1, 2])[1].startswith("config:")


def test_load_reports_missing_and_broken_files():
    d = fwtest.tmpdir()
    assert config.load(d + "/nope.json")[1].startswith("config:")
    with open(d + "/c.json", "w") as f:
        f.write("{not json")
    assert config.load(d + "/c.json")[1] == "config: not valid JSON"
    with open(d + "/ok.json", "w") as f:
        f.write(json.dumps(GOOD))
    assert config.load(d + "/ok.json")[1] is None
