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


def test_defaults_fill_every_optional_section():
    cfg, err = config.validate(_copy())
    assert err is None
    assert cfg["broker"]["user"] == "kiosk-q1-0001" and cfg["broker"]["keepalive"] == 30
    assert cfg["ntp"] == ["pool.ntp.org"] and cfg["telemetry_s"] == 60
    assert cfg["journal"]["max_bytes"] == 1048576 and cfg["journal"]["when_full"] == "refuse"
    assert cfg["fleet"] == {"policy": "fleet/policy", "trust": "fleet/trust"}
    assert cfg["safe_mode"]["crashes"] == 3


def test_new_fields_are_checked_and_named():
    def err_of(mutate):
        c = _copy()
        mutate(c)
        cfg, err = config.validate(c)
        assert cfg is None
        return err

    assert err_of(lambda c: c.update(ntp="pool.ntp.org")).startswith("ntp:")
    assert err_of(lambda c: c.update(telemetry_s=1)).startswith("telemetry_s:")
    assert err_of(lambda c: c.update(journal={"when_full": "drop"})).startswith(
        "journal.when_full:")
    assert err_of(lambda c: c.update(journal={"max_bytes": 10})).startswith("journal.max_bytes:")
    assert err_of(lambda c: c.update(operator_key="abc")).startswith("operator_key:")
    assert err_of(lambda c: c["broker"].update(tls={"cert": "/c"})).startswith("broker.tls.ca:")
    assert err_of(lambda c: c["broker"].update(tls={"ca": "/ca", "cert": "/c"})).startswith(
        "broker.tls:")
    assert err_of(lambda c: c["broker"].update(keepalive=True)).startswith("broker.keepalive:")
    assert err_of(lambda c: c.update(fleet={"policy": "fleet/#"})).startswith("fleet.policy:")


def test_tls_client_certificate_replaces_the_password():
    c = _copy()
    del c["broker"]["password"]
    del c["broker"]["port"]
    c["broker"]["tls"] = {"ca": "/ca.pem", "cert": "/k.pem", "key": "/k.key"}
    cfg, err = config.validate(c)
    assert err is None and cfg["broker"]["port"] == 8883
