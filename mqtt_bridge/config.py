"""Bridge configuration: a TOML file, then command-line flags over it, then secrets.

    [broker]   host, port, username, password_file, client_id, instance, group, session_expiry,
               ack_process
    [spool]    path, high_water, low_water, retention_days
    [backend]  url, ca, token_url, client_id, client_secret_file, timeout, batch_size,
               retry_initial, retry_max
    [verify]   enabled, deadline, cache_ttl, workers
    [documents] operator_key, policy, trust, validity_days
    [fleet]    db, stale_after, registry (kioskctl's fleet.json)
    [metrics]  port, host
    [log]      stats_interval

Secrets never come from a flag (visible in `ps`) and are never printed: the
MQTT password comes from $KIOSK_BRIDGE_MQTT_PASSWORD or `broker.password_file`,
the OAuth2 client secret from $KIOSK_BRIDGE_CLIENT_SECRET or
`backend.client_secret_file`. An unknown section or key is an error that names
it (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

PASSWORD_ENV = "KIOSK_BRIDGE_MQTT_PASSWORD"
CLIENT_SECRET_ENV = "KIOSK_BRIDGE_CLIENT_SECRET"


class ConfigError(ValueError):
    """The configuration is wrong; the message names the file, key and rule."""


def _int(v: Any) -> int:
    if type(v) is not int:
        raise ValueError("must be an integer")
    return v


def _num(v: Any) -> float:
    if type(v) not in (int, float):
        raise ValueError("must be a number")
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ValueError("must be true or false")
    return v


#: (section, key) -> (field name, converter). Paths are resolved against the file's folder.
KEYS: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("broker", "host"): ("broker_host", _str),
    ("broker", "port"): ("broker_port", _int),
    ("broker", "username"): ("username", _str),
    ("broker", "password_file"): ("password_file", Path),
    ("broker", "client_id"): ("client_id", _str),
    ("broker", "instance"): ("instance", _str),
    ("broker", "group"): ("group", _str),
    ("broker", "session_expiry"): ("session_expiry", _int),
    ("broker", "ack_process"): ("ack_process", _bool),
    ("spool", "path"): ("db", Path),
    ("spool", "high_water"): ("high_water", _int),
    ("spool", "low_water"): ("low_water", _int),
    ("spool", "retention_days"): ("retention_days", _num),
    ("backend", "url"): ("backend_url", _str),
    ("backend", "ca"): ("backend_ca", Path),
    ("backend", "token_url"): ("token_url", _str),
    ("backend", "client_id"): ("oauth_client_id", _str),
    ("backend", "client_secret_file"): ("client_secret_file", Path),
    ("backend", "timeout"): ("backend_timeout", _num),
    ("backend", "batch_size"): ("batch_size", _int),
    ("backend", "retry_initial"): ("retry_initial", _num),
    ("backend", "retry_max"): ("retry_max", _num),
    ("verify", "enabled"): ("verify_enabled", _bool),
    ("verify", "deadline"): ("verify_deadline", _num),
    ("verify", "cache_ttl"): ("verify_cache_ttl", _num),
    ("verify", "workers"): ("verify_workers", _int),
    ("documents", "operator_key"): ("operator_key", Path),
    ("documents", "policy"): ("policy_file", Path),
    ("documents", "trust"): ("trust_file", Path),
    ("documents", "validity_days"): ("document_validity_days", _num),
    ("fleet", "db"): ("fleet_db", Path),
    ("fleet", "stale_after"): ("stale_after", _num),
    ("fleet", "registry"): ("registry", Path),
    ("metrics", "port"): ("metrics_port", _int),
    ("metrics", "host"): ("metrics_host", _str),
    ("log", "stats_interval"): ("stats_interval", _num),
}


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into {field name: value}; ConfigError on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    out: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}: expected a [section]")
        for key, value in table.items():
            spec = KEYS.get((section, key))
            if spec is None:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            name, convert = spec
            try:
                converted = convert(value) if convert is not Path else Path(_str(value))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{path}: {section}.{key}: {exc}") from None
            if isinstance(converted, Path) and not converted.is_absolute():
                converted = path.resolve().parent / converted
            out[name] = converted
    return out


def read_secret(env: str, file: Path | None, what: str) -> str | None:
    """A secret from the environment variable `env`, else from `file` (first line)."""
    value = os.environ.get(env)
    if value:
        return value
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {file} ({exc.strerror})") from None
    if not text:
        raise ConfigError(f"{what}: {file} is empty")
    return text.splitlines()[0].strip()
