"""`kiosk-bridge`: command line of the bridge service.

    KIOSK_BRIDGE_MQTT_PASSWORD=... kiosk-bridge run --broker-port 1883 --backend-url https://...

The MQTT password comes only from the environment: a command-line argument
would be visible to every user in `ps`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mqtt_bridge import __version__
from mqtt_bridge.ingest import DEFAULT_CLIENT_ID, DEFAULT_SESSION_EXPIRY
from mqtt_bridge.service import BridgeConfig, run_service

PASSWORD_ENV = "KIOSK_BRIDGE_MQTT_PASSWORD"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _backend_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


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
        description=f"Run the bridge. The MQTT password is read from ${PASSWORD_ENV}.",
    )
    run.add_argument("--broker-host", default="127.0.0.1", help="default: %(default)s")
    run.add_argument("--broker-port", type=_port, default=1883, help="default: %(default)s")
    run.add_argument("--username", default="kiosk-bridge", help="MQTT user (default: %(default)s)")
    run.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        help="fixed MQTT client id; the broker keeps its session (default: %(default)s)",
    )
    run.add_argument(
        "--session-expiry",
        type=int,
        default=DEFAULT_SESSION_EXPIRY,
        help="seconds the broker queues check-ins while the bridge is away (default: 30 days)",
    )
    run.add_argument(
        "--db",
        type=Path,
        default=Path("./bridge-spool.sqlite3"),
        help="spool database (default: %(default)s)",
    )
    run.add_argument("--backend-url", type=_backend_url, default="http://127.0.0.1:8080")
    run.add_argument(
        "--backend-ca",
        type=Path,
        default=None,
        help="CA bundle to verify the backend's TLS certificate (default: system CAs)",
    )
    run.add_argument(
        "--retry-initial",
        type=_positive_float,
        default=0.2,
        help="first backoff ceiling in seconds when the backend fails (default: %(default)s)",
    )
    run.add_argument(
        "--retry-max",
        type=_positive_float,
        default=30.0,
        help="backoff cap in seconds (default: %(default)s)",
    )
    run.add_argument(
        "--stats-interval",
        type=_positive_float,
        default=5.0,
        help="seconds between counter summaries in the log (default: %(default)s)",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: %(default)s",
    )
    return parser


def _fail(message: str) -> int:
    print(f"kiosk-bridge: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kiosk-bridge` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    # httpx logs every request at INFO: one line per batch is noise, not information.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        return _fail(f"set the MQTT password in the environment variable {PASSWORD_ENV}")
    if args.backend_ca is not None and not args.backend_ca.is_file():
        return _fail(f"--backend-ca: no such file: {args.backend_ca}")
    if args.session_expiry < 0:
        return _fail("--session-expiry must be >= 0")
    db_dir = args.db.resolve().parent
    if not db_dir.is_dir():
        return _fail(f"--db: folder does not exist: {db_dir}")
    if args.retry_max < args.retry_initial:
        return _fail("--retry-max must be >= --retry-initial")

    config = BridgeConfig(
        db=args.db,
        password=password,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        username=args.username,
        client_id=args.client_id,
        session_expiry=args.session_expiry,
        backend_url=args.backend_url,
        backend_verify=str(args.backend_ca) if args.backend_ca else True,
        retry_initial=args.retry_initial,
        retry_max=args.retry_max,
        stats_interval=args.stats_interval,
    )
    try:
        run_service(config)
    except sqlite3.Error as exc:
        return _fail(f"cannot use the spool {args.db}: {exc}")
    except OSError as exc:
        return _fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
