"""`kiosk-bridge`: command line of the bridge service.

    KIOSK_BRIDGE_MQTT_PASSWORD=... kiosk-bridge run --config bridge.toml [--flags]
    kiosk-bridge publish --config bridge.toml --kind policy --body policy.json
    kiosk-bridge fleet --config bridge.toml
    kiosk-bridge keygen --out operator.pem

Settings come from the TOML file (mqtt_bridge.config), flags override it.
Passwords and secrets come only from the environment or a file named in the
config: a command-line argument would be visible to every user in `ps`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mqtt_bridge import __version__
from mqtt_bridge.config import (
    CLIENT_SECRET_ENV,
    PASSWORD_ENV,
    ConfigError,
    load_file,
    read_secret,
)
from mqtt_bridge.ingest import DEFAULT_CLIENT_ID
from mqtt_bridge.service import BridgeConfig, run_service

__all__ = ["CLIENT_SECRET_ENV", "PASSWORD_ENV", "build_parser", "main"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_DB = Path("./bridge-spool.sqlite3")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def _name(text: str) -> str:
    if not text or any(c in text for c in "/+#$ ") or len(text) > 64:
        raise argparse.ArgumentTypeError(f"not a usable name (no / + # $ or spaces): {text!r}")
    return text


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file (flags override it)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="kiosk-bridge",
        description="MQTT bridge: kiosk check-ins -> durable spool -> city backend.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the bridge in the foreground until SIGTERM/SIGINT",
        description=f"Run the bridge. The MQTT password is read from ${PASSWORD_ENV} or the"
        f" config's broker.password_file; the OAuth2 secret from ${CLIENT_SECRET_ENV} or"
        " backend.client_secret_file.",
        argument_default=argparse.SUPPRESS,
    )
    _add_config(run)
    a = run.add_argument
    a("--broker-host", dest="broker_host", help="default: 127.0.0.1")
    a("--broker-port", dest="broker_port", type=_port, help="default: 1883")
    a("--username", help="MQTT user (default: kiosk-bridge)")
    a(
        "--client-id",
        dest="client_id",
        type=_name,
        help=f"fixed MQTT client id; the broker keeps its session (default: {DEFAULT_CLIENT_ID},"
        " or kiosk-bridge-<instance>)",
    )
    a("--instance", type=_name, help="instance name in a group: client id kiosk-bridge-<instance>")
    a(
        "--group",
        type=_name,
        help="shared-subscription group: bridges of one group split the check-ins",
    )
    a(
        "--session-expiry",
        dest="session_expiry",
        type=int,
        help="seconds the broker queues check-ins while the bridge is away (default: 30 days)",
    )
    a("--db", type=Path, help=f"spool database (default: {DEFAULT_DB})")
    a("--backend-url", dest="backend_url", type=_http_url, help="default: http://127.0.0.1:8080")
    a(
        "--backend-ca",
        dest="backend_ca",
        type=Path,
        help="CA bundle to verify the backend's TLS certificate (default: system CAs);"
        " verification cannot be turned off",
    )
    a(
        "--token-url",
        dest="token_url",
        type=_http_url,
        help="OAuth2 token endpoint (client credentials); needs --oauth-client-id",
    )
    a("--oauth-client-id", dest="oauth_client_id", help="OAuth2 client id")
    a("--batch-size", dest="batch_size", type=_positive_int, help="check-ins per POST (500)")
    a(
        "--retry-initial",
        dest="retry_initial",
        type=_positive_float,
        help="first backoff ceiling in seconds when the backend fails (default: 0.2)",
    )
    a(
        "--retry-max",
        dest="retry_max",
        type=_positive_float,
        help="backoff cap in seconds (default: 30)",
    )
    a(
        "--high-water",
        dest="high_water",
        type=_positive_int,
        help="spool depth at which acks pause (back-pressure; default: 200000)",
    )
    a(
        "--low-water",
        dest="low_water",
        type=_positive_int,
        help="spool depth at which acks resume (default: 150000)",
    )
    a(
        "--retention-days",
        dest="retention_days",
        type=_positive_float,
        help="dead letters are deleted after this many days (default: 7)",
    )
    a(
        "--no-ack-process",
        dest="ack_process",
        action="store_false",
        help="publish kiosk acks from the ingest process itself (slower)",
    )
    a(
        "--no-verify-service",
        dest="verify_enabled",
        action="store_false",
        help="do not answer online checks",
    )
    a(
        "--verify-deadline",
        dest="verify_deadline",
        type=_positive_float,
        help="seconds an online check may take before it is answered unknown (default: 0.5)",
    )
    a(
        "--verify-cache-ttl",
        dest="verify_cache_ttl",
        type=_positive_float,
        help="seconds a status answer is cached (default: 60)",
    )
    a("--operator-key", dest="operator_key", type=Path, help="PEM P-256 key signing documents")
    a("--policy", dest="policy_file", type=Path, help="policy body (JSON) to publish at start")
    a(
        "--trust",
        dest="trust_file",
        type=Path,
        help="trust list body (JSON) to publish at start and verify HC1 with",
    )
    a("--fleet-db", dest="fleet_db", type=Path, help="fleet view database (default: beside --db)")
    a(
        "--metrics-port",
        dest="metrics_port",
        type=_port,
        help="serve Prometheus /metrics on this loopback port (0: any free port; default: off)",
    )
    a(
        "--stats-interval",
        dest="stats_interval",
        type=_positive_float,
        help="seconds between counter summaries in the log (default: 5)",
    )
    a(
        "--log-level",
        dest="log_level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )

    pub = sub.add_parser(
        "publish",
        help="sign and publish a fleet document (retained on fleet/<kind>)",
        description="Sign a document body with the operator key and publish it retained."
        " The serial increases past every document published before.",
    )
    _add_config(pub)
    pub.add_argument("--kind", choices=["policy", "trust"], required=True)
    pub.add_argument("--body", type=Path, required=True, help="JSON file with the body")
    pub.add_argument("--operator-key", type=Path, help="PEM key (default: from the config)")
    pub.add_argument("--broker-host")
    pub.add_argument("--broker-port", type=_port)
    pub.add_argument("--username")
    pub.add_argument("--db", type=Path, help="bridge database holding the serials")
    pub.add_argument("--validity-days", type=_positive_float, help="default: 30")

    fleet = sub.add_parser("fleet", help="print the fleet table (offline and stale flagged)")
    _add_config(fleet)
    fleet.add_argument("--fleet-db", type=Path, help="default: from the config / beside the spool")
    fleet.add_argument("--stale-after", type=_positive_float, help="seconds (default: 180)")
    fleet.add_argument(
        "--registry", type=Path, help="kioskctl's fleet.json: also list kiosks never seen"
    )

    keygen = sub.add_parser("keygen", help="make a new operator key; print its public key")
    keygen.add_argument("--out", type=Path, required=True, help="PEM file to create (0600)")
    return parser


def _fail(message: str) -> int:
    print(f"kiosk-bridge: error: {message}", file=sys.stderr)
    return 2


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Config-file values overridden by the flags given (flags not given are absent)."""
    settings: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        settings.update(load_file(args.config))
    for key, value in vars(args).items():
        if key not in ("command", "config") and value is not None:
            settings[key] = value
    return settings


def build_config(settings: dict[str, Any]) -> BridgeConfig:
    """A BridgeConfig from merged settings, secrets read; ConfigError names what is wrong."""
    s = dict(settings)
    password = read_secret(PASSWORD_ENV, s.pop("password_file", None), "MQTT password")
    if not password:
        raise ConfigError(f"set the MQTT password in ${PASSWORD_ENV} or broker.password_file")
    instance = s.pop("instance", None)
    if "client_id" not in s:
        s["client_id"] = f"{DEFAULT_CLIENT_ID}-{instance}" if instance else DEFAULT_CLIENT_ID
    if s.get("group") and not instance and s["client_id"] == DEFAULT_CLIENT_ID:
        raise ConfigError(
            "a shared group needs a distinct client id per instance: set --instance"
            " (or --client-id)"
        )
    ca = s.pop("backend_ca", None)
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"backend CA: no such file: {ca}")
    s["backend_verify"] = str(ca) if ca is not None else True
    secret_file = s.pop("client_secret_file", None)
    if s.get("token_url"):
        if not s.get("oauth_client_id"):
            raise ConfigError("OAuth2: token_url needs backend.client_id / --oauth-client-id")
        secret = read_secret(CLIENT_SECRET_ENV, secret_file, "OAuth2 client secret")
        if not secret:
            raise ConfigError(
                f"OAuth2: set the client secret in ${CLIENT_SECRET_ENV}"
                " or backend.client_secret_file"
            )
        s["oauth_client_secret"] = secret
    s.pop("log_level", None)
    s.setdefault("db", DEFAULT_DB)
    if s.get("session_expiry", 0) < 0:
        raise ConfigError("session expiry must be >= 0")
    db_dir = Path(s["db"]).resolve().parent
    if not db_dir.is_dir():
        raise ConfigError(f"spool: folder does not exist: {db_dir}")
    if s.get("retry_max", 30.0) < s.get("retry_initial", 0.2):
        raise ConfigError("retry_max must be >= retry_initial")
    high = s.get("high_water", BridgeConfig.high_water)
    if "high_water" in s and "low_water" not in s:
        s["low_water"] = max(1, high * 3 // 4)
    if not 0 < s.get("low_water", BridgeConfig.low_water) <= high:
        raise ConfigError("spool limits: need 0 < low_water <= high_water")
    for path_key in ("operator_key", "policy_file", "trust_file"):
        if s.get(path_key) is not None and not Path(s[path_key]).is_file():
            raise ConfigError(f"{path_key.removesuffix('_file')}: no such file: {s[path_key]}")
    known = {f.name for f in dataclasses.fields(BridgeConfig)}
    unknown = set(s) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return BridgeConfig(password=password, **s)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        config = build_config(settings)
    except ConfigError as exc:
        return _fail(str(exc))
    if urlsplit(config.backend_url).scheme == "http" and urlsplit(
        config.backend_url
    ).hostname not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("mqtt_bridge").warning(
            "backend URL is plain http to another host: personal data travels unencrypted"
        )
    try:
        run_service(config)
    except ConfigError as exc:
        return _fail(str(exc))
    except sqlite3.Error as exc:
        return _fail(f"cannot use the spool {config.db}: {exc}")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _publish(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from mqtt_bridge.documents import load_private_key
    from mqtt_bridge.publisher import load_body, publish_retained, signed_document
    from mqtt_bridge.spool import Spool

    try:
        file_settings = load_file(args.config) if args.config else {}
        password = read_secret(PASSWORD_ENV, file_settings.get("password_file"), "MQTT password")
        if not password:
            raise ConfigError(f"set the MQTT password in ${PASSWORD_ENV} or broker.password_file")
        key_path = args.operator_key or file_settings.get("operator_key")
        if key_path is None:
            raise ConfigError("no operator key: --operator-key or documents.operator_key")
        key = load_private_key(key_path)
        body = load_body(args.body)
    except (ConfigError, ValueError, OSError) as exc:
        return _fail(str(exc))
    host = args.broker_host or file_settings.get("broker_host", "127.0.0.1")
    port = args.broker_port or file_settings.get("broker_port", 1883)
    username = args.username or file_settings.get("username", "kiosk-bridge")
    db = args.db or file_settings.get("db", DEFAULT_DB)
    validity = args.validity_days or file_settings.get("document_validity_days", 30.0)
    spool = Spool(db)
    try:
        text, serial = signed_document(
            spool, key, args.kind, body, validity_days=validity, force=True
        )
    except ValueError as exc:
        return _fail(str(exc))
    finally:
        spool.close()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"kiosk-bridge-publish-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, password)
    try:
        client.connect(host, port)
    except OSError as exc:
        return _fail(f"broker {host}:{port}: {exc}")
    client.loop_start()
    try:
        publish_retained(client, args.kind, text)
    except (RuntimeError, ValueError) as exc:
        return _fail(str(exc))
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"published fleet/{args.kind} serial {serial} ({len(text)} bytes, retained)")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from mqtt_bridge.fleet import DEFAULT_STALE_AFTER, load_registry, print_fleet, read_fleet

    try:
        file_settings = load_file(args.config) if args.config else {}
    except ConfigError as exc:
        return _fail(str(exc))
    path = args.fleet_db or file_settings.get("fleet_db")
    if path is None:
        db = Path(file_settings.get("db", DEFAULT_DB))
        path = db.resolve().parent / "fleet.sqlite3"
    if not Path(path).is_file():
        return _fail(f"no fleet database at {path} (has the bridge run?)")
    stale = args.stale_after or file_settings.get("stale_after", DEFAULT_STALE_AFTER)
    registry_path = args.registry or file_settings.get("registry")
    now = time.time()
    try:
        registry = load_registry(registry_path) if registry_path else None
        print_fleet(read_fleet(path, stale, now, registry), now)
    except ValueError as exc:
        return _fail(str(exc))
    except sqlite3.Error as exc:
        return _fail(f"cannot read {path}: {exc}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from mqtt_bridge.documents import generate_operator_key, operator_key_b64, save_private_key

    if args.out.exists():
        return _fail(f"{args.out} exists; not overwriting a key")
    key = generate_operator_key()
    save_private_key(key, args.out)
    print(f"operator key written to {args.out}")
    print(f"public key for the kiosks' config (operator_key): {operator_key_b64(key.public_key())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kiosk-bridge` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"), format=LOG_FORMAT, stream=sys.stderr
    )
    # httpx logs every request at INFO: one line per batch is noise, not information.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    handlers = {"run": _run, "publish": _publish, "fleet": _fleet, "keygen": _keygen}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
