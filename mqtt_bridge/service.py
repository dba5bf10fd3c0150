"""The bridge service: spool + ingest + forwarder wired together, with counters and shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from mqtt_bridge.counters import Counters
from mqtt_bridge.forwarder import Backoff, Forwarder
from mqtt_bridge.ingest import DEFAULT_CLIENT_ID, DEFAULT_SESSION_EXPIRY, Ingest
from mqtt_bridge.spool import Spool

log = logging.getLogger("mqtt_bridge.service")


@dataclass
class BridgeConfig:
    """Everything the bridge needs to run; the CLI fills it from its arguments."""

    db: Path
    password: str = field(repr=False)  # never in a repr, hence never in a log line
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    username: str = "kiosk-bridge"
    client_id: str = DEFAULT_CLIENT_ID
    session_expiry: int = DEFAULT_SESSION_EXPIRY
    backend_url: str = "http://127.0.0.1:8080"
    #: TLS verification for the backend: True (system CAs) or a CA bundle path. Never off.
    backend_verify: bool | str = True
    retry_initial: float = 0.2
    retry_max: float = 30.0
    stats_interval: float = 5.0


class BridgeService:
    """Owns the spool, the MQTT ingest and the forwarder; start, run, stop."""

    def __init__(self, config: BridgeConfig) -> None:
        """Open the spool (raises sqlite3.Error / OSError if it cannot) and build the parts."""
        self.config = config
        self.counters = Counters()
        self.spool = Spool(config.db)
        self.forwarder = Forwarder(
            self.spool,
            config.backend_url,
            backoff=Backoff(config.retry_initial, config.retry_max),
            verify=config.backend_verify,
            on_forwarded=lambda n: self.counters.add("forwarded", n),
            on_dead_letter=lambda n: self.counters.add("dead_lettered", n),
        )
        self.ingest = Ingest(
            self.spool,
            self.counters,
            host=config.broker_host,
            port=config.broker_port,
            username=config.username,
            password=config.password,
            client_id=config.client_id,
            session_expiry=config.session_expiry,
            on_stored=self.forwarder.wake,
        )
        self._stopped = False

    def start(self) -> None:
        """Start forwarding (the spool may hold records from a previous run), then ingest."""
        log.info(
            "bridge starting: spool %s (%d pending), backend %s",
            self.config.db,
            self.spool.depth(),
            self.config.backend_url,
        )
        self.forwarder.start()
        self.ingest.start()

    def log_summary(self) -> None:
        """Log the one-line counter summary (plus the spool depth) at INFO."""
        log.info("stats %s spool_depth=%d", self.counters.summary(), self.spool.depth())

    def run(self, stop: threading.Event) -> None:
        """Block until `stop` is set, logging the summary every `stats_interval` seconds."""
        while not stop.wait(self.config.stats_interval):
            self.log_summary()

    def stop(self) -> None:
        """Clean shutdown: drain and ack ingest, disconnect, stop the forwarder, close the spool."""
        if self._stopped:
            return
        self._stopped = True
        log.info("bridge stopping")
        self.ingest.stop()
        self.forwarder.stop()
        self.log_summary()
        self.spool.close()
        log.info("bridge stopped")


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` (main thread only), so shutdown is always clean."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_service(config: BridgeConfig) -> None:
    """Run the bridge in the foreground until SIGTERM/SIGINT."""
    stop = threading.Event()
    install_signal_handlers(stop)
    service = BridgeService(config)
    try:
        service.start()
        service.run(stop)
    finally:
        service.stop()
