"""The fleet folder the tool keeps: CA, per-device secrets and the fleet registry.

    <fleet>/                      $KIOSKCTL_FLEET, else ~/.kioskctl/fleet (mode 0700)
      ca.pem, ca.key              fleet CA (host_tools/pki.py)
      operator.pub                base64 of the operator's P-256 public point (optional)
      fleet.json                  the registry: one entry per provisioned kiosk
      devices/<id>/kiosk.pem, kiosk.key, broker-password     (secrets 0600)

`fleet.json` is what the bridge loads as its list of known kiosks; its format
is in docs/protocol.md ("Fleet registry (fleet.json)"). It holds no secret: the
broker password appears only as a Mosquitto `$7$` hash (`kioskctl fleet passwd`
prints a Mosquitto password file from it). Writers take a lock and replace the
file atomically, so parallel provisioning (batch mode) never loses an entry.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from host_tools.errors import Failure
from host_tools.pki import write_secret

REGISTRY = "fleet.json"
FLEET_ENV = "KIOSKCTL_FLEET"
_lock = threading.Lock()  # threads of one kioskctl; flock covers other processes


def default_fleet_dir() -> Path:
    env = os.environ.get(FLEET_ENV)
    return Path(env) if env else Path.home() / ".kioskctl" / "fleet"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """The `$7$` line Mosquitto's password file holds (PBKDF2-SHA512, 101 rounds)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7${101}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def ensure(self) -> Fleet:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)
        except OSError as e:
            raise Failure(f"cannot use fleet folder {self.folder}: {e.strerror or e}") from None
        return self

    def device_dir(self, device: str) -> Path:
        return self.folder / "devices" / device

    # -- per-device broker password ------------------------------------------

    def broker_password(self, device: str, given: str | None = None, rotate: bool = False) -> str:
        """The device's MQTT password: given, kept from an earlier provisioning, or new."""
        path = self.device_dir(device) / "broker-password"
        if given is not None:
            write_secret(path, given.encode())
            return given
        if path.exists() and not rotate:
            return path.read_text().strip()
        password = secrets.token_urlsafe(24)
        write_secret(path, password.encode())
        return password

    # -- operator key --------------------------------------------------------

    def operator_key(self) -> str | None:
        path = self.folder / "operator.pub"
        return path.read_text().strip() if path.exists() else None

    def set_operator_key(self, b64: str) -> None:
        (self.folder / "operator.pub").write_text(b64 + "\n")

    # -- registry ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.ensure()
        with _lock, open(self.folder / ".lock", "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)

    def load(self) -> dict[str, Any]:
        path = self.folder / REGISTRY
        if not path.exists():
            return {"v": 1, "devices": {}}
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError) as e:
            raise Failure(f"fleet registry {path} is unreadable ({e}): restore it") from None
        if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
            raise Failure(f"fleet registry {path} is not a kioskctl fleet.json")
        return data

    def register(self, device: str, entry: dict[str, Any]) -> None:
        """Add or replace one device's entry (atomically, under the lock)."""
        with self._locked():
            data = self.load()
            data["v"] = 1
            data["updated"] = int(time.time())
            data["devices"][device] = entry
            path = self.folder / REGISTRY
            tmp = path.with_name(REGISTRY + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)

    def passwd_file(self) -> str:
        """A Mosquitto password file for every registered kiosk (hashes only)."""
        lines = [f"{dev}:{e['mqtt_password_hash']}"
                 for dev, e in sorted(self.load()["devices"].items())
                 if e.get("mqtt_password_hash")]
        return "".join(line + "\n" for line in lines)
