"""`kioskctl provision`: a kiosk's identity and configuration, onto the board or into an image.

What a kiosk gets (docs/protocol.md, "Device configuration (config.json)"):

    /config.json        device id, venue, gate, Wi-Fi, broker (+ its MQTT password),
                        NTP, the operator's public key
    /certs/ca.pem       the fleet CA (pins the broker's certificate)     } with TLS
    /certs/kiosk.pem    the kiosk's client certificate (CN = device id)  } (default;
    /certs/kiosk.key    its private key                                   } --no-tls: none)

Settings a venue's kiosks share come from a site file (`--site site.json`: the
same shape as config.json without device and gate; `"tls": true` under broker
asks for certificates) and flags override it. The config is checked with the
firmware's own validator (firmware/kiosk/config.py) before anything is
written, so a missing field is refused here, named, and the board is left as
it was. The device is then registered in the fleet registry (host_tools/fleet.py).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.build import FIRMWARE_DIR
from host_tools.errors import Failure
from host_tools.fleet import Fleet, mosquitto_hash
from host_tools.pki import FleetCA, cert_pem, fingerprint, write_secret
from host_tools.repl import Board

TLS_FILES = {"ca": "/certs/ca.pem", "cert": "/certs/kiosk.pem", "key": "/certs/kiosk.key"}


def firmware_config_module(firmware: Path = FIRMWARE_DIR) -> ModuleType:
    """firmware/kiosk/config.py, loaded as a module: the device's own validator."""
    path = firmware / "kiosk" / "config.py"
    spec = importlib.util.spec_from_file_location("kiosk_firmware_config", path)
    if spec is None or spec.loader is None:
        raise Failure(f"firmware config validator not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Settings:
    """What a kiosk's config is made of, before its device id and gate."""

    site: dict[str, Any] = field(default_factory=dict)
    tls: bool = True
    operator_key: str | None = None

    @classmethod
    def from_args(cls, site_file: Path | None, *, venue: str | None = None,
                  wifi_ssid: str | None = None, wifi_password: str | None = None,
                  broker: str | None = None, tls: bool | None = None,
                  ntp: list[str] | None = None, operator_key: Path | None = None,
                  fleet: Fleet | None = None) -> Settings:
        site: dict[str, Any] = {}
        if site_file is not None:
            try:
                site = json.loads(site_file.read_text())
            except OSError as e:
                raise Failure(f"cannot read site file {site_file}: {e.strerror or e}") from None
            except ValueError as e:
                raise Failure(f"site file {site_file} is not valid JSON ({e})") from None
            if not isinstance(site, dict):
                raise Failure(f"site file {site_file} must hold a JSON object")
        if venue is not None:
            site["venue"] = venue
        if wifi_ssid is not None or wifi_password is not None:
            wifi = site.setdefault("wifi", {})
            if wifi_ssid is not None:
                wifi["ssid"] = wifi_ssid
            if wifi_password is not None:
                wifi["password"] = wifi_password
        b = site.setdefault("broker", {})
        if not isinstance(b, dict):
            raise Failure("site file: broker must be an object")
        site_tls = b.pop("tls", None)
        if broker is not None:
            host, _, port = broker.rpartition(":") if ":" in broker else (broker, "", "")
            b["host"] = host
            if port:
                try:
                    b["port"] = int(port)
                except ValueError:
                    raise Failure(f"--broker {broker}: port must be a number") from None
        use_tls = tls if tls is not None else (site_tls is not False)
        if ntp is not None:
            site["ntp"] = [n for n in ntp if n]
        key_b64 = load_operator_key(operator_key) if operator_key else site.pop(
            "operator_key", None)
        if fleet is not None:
            if key_b64:
                fleet.set_operator_key(key_b64)
            else:
                key_b64 = fleet.operator_key()
        return cls(site, use_tls, key_b64)


def load_operator_key(path: Path) -> str:
    """The operator's public key as config wants it (base64 of the 65-byte point), from a
    PEM public key, a PEM private key (only its public half is used) or that base64 text."""
    from mqtt_bridge.documents import operator_key_b64, public_key_from_b64

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise Failure(f"cannot read operator key {path}: {e.strerror or e}") from None
    try:
        if b"PUBLIC KEY" in raw:
            pub = serialization.load_pem_public_key(raw)
        elif b"PRIVATE KEY" in raw:
            from mqtt_bridge.documents import load_private_key

            pub = load_private_key(path).public_key()
        else:
            pub = public_key_from_b64(raw.decode().strip())
    except (ValueError, TypeError, UnicodeError):
        raise Failure(f"{path} is not an operator key (PEM or base64 P-256 point)") from None
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise Failure(f"{path}: the operator key must be an EC P-256 key")
    return operator_key_b64(pub)


@dataclass
class Provisioned:
    device: str
    files: dict[str, bytes]  # path on the device (no leading '/') -> content
    entry: dict[str, Any]  # its fleet registry entry


def precheck(settings: Settings, device: str, gate: str, need_wifi: bool = False,
             firmware: Path = FIRMWARE_DIR) -> None:
    """Refuse a config the firmware would refuse, before any board or secret is touched."""
    probe: dict[str, Any] = copy.deepcopy(settings.site)
    probe.update(device=device, gate=gate)
    probe.setdefault("broker", {}).setdefault("password", "x")
    _checked(firmware_config_module(firmware), probe, need_wifi)


def make_device(fleet: Fleet, settings: Settings, device: str, gate: str, *,
                need_wifi: bool, password: str | None = None, rotate: bool = False,
                firmware: Path = FIRMWARE_DIR) -> Provisioned:
    """Config and certificates for one kiosk, checked with the firmware's validator.

    Nothing is registered yet (register() does that once the files are on the device).
    """
    cfg: dict[str, Any] = copy.deepcopy(settings.site)
    cfg["device"] = device
    cfg["gate"] = gate
    broker = cfg.setdefault("broker", {})
    if settings.tls and "port" not in broker:
        broker["port"] = 8883
    if settings.operator_key:
        cfg["operator_key"] = settings.operator_key
    # Check what the technician gave before making any secret.
    validator = firmware_config_module(firmware)
    probe = copy.deepcopy(cfg)
    probe.setdefault("broker", {}).setdefault("password", "x")
    _checked(validator, probe, need_wifi)

    fleet.ensure()
    pw = fleet.broker_password(device, password, rotate)
    broker["password"] = pw
    files: dict[str, bytes] = {}
    entry: dict[str, Any] = {
        "venue": cfg["venue"], "gate": gate,
        "broker": f"{broker['host']}:{broker.get('port', 1883)}",
        "mqtt_password_hash": mosquitto_hash(pw),
        "tls": settings.tls,
    }
    if settings.tls:
        ca = FleetCA.load_or_create(fleet.folder)
        cert, key_pem = ca.issue_device(device)
        ddir = fleet.device_dir(device)
        (ddir / "kiosk.pem").write_bytes(cert_pem(cert))
        write_secret(ddir / "kiosk.key", key_pem)
        broker["tls"] = dict(TLS_FILES)
        files[TLS_FILES["ca"][1:]] = ca.cert_pem
        files[TLS_FILES["cert"][1:]] = cert_pem(cert)
        files[TLS_FILES["key"][1:]] = key_pem
        entry.update(cert_sha256=fingerprint(cert), cert_serial=format(cert.serial_number, "x"),
                     cert_not_after=int(cert.not_valid_after_utc.timestamp()))
    _checked(validator, copy.deepcopy(cfg), need_wifi)
    files["config.json"] = json.dumps(cfg, indent=1, sort_keys=True).encode()
    return Provisioned(device, files, entry)


def _checked(validator: ModuleType, cfg: dict[str, Any], need_wifi: bool) -> None:
    _, err = validator.validate(cfg, need_wifi)
    if err:
        raise Failure(f"config field {err} (give it as a flag or in the site file; "
                      "nothing was written)")


def register(fleet: Fleet, p: Provisioned, via: str, fw: str | None = None) -> None:
    entry = dict(p.entry, provisioned=int(time.time()), via=via)
    if fw:
        entry["fw"] = fw
    fleet.register(p.device, entry)


def device_platform(board: Board) -> str:
    """sys.platform on the board: 'esp32', or 'linux' for a virtual device."""
    return board.exec("import sys\nprint(sys.platform)", what="reading the board's platform",
                      changes=False).strip()


def write_to_board(board: Board, files: dict[str, bytes]) -> None:
    """Write files (config.json last, so a half-done provisioning keeps the old config)."""
    dirs = {str(Path(name).parent) for name in files if "/" in name}
    board.makedirs(sorted(dirs))
    for name in sorted(files, key=lambda n: n == "config.json"):
        board.write_file(name, files[name])


def installed_version(board: Board) -> str | None:
    """The firmware version the board's app manifest names, if any."""
    from host_tools.build import MANIFEST

    raw = board.read_file(MANIFEST)
    if raw is None:
        return None
    try:
        return str(json.loads(raw).get("version"))
    except (ValueError, AttributeError):
        return None


def masked(cfg_bytes: bytes) -> str:
    """A config for display: every password and key replaced by '***'."""
    cfg = json.loads(cfg_bytes)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: "***" if k in ("password", "key") and isinstance(v, str) else walk(v)
                    for k, v in node.items()}
        return node

    return json.dumps(walk(cfg), sort_keys=True)

