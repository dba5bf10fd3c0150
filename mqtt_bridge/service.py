"""The bridge service: spool + ingest + forwarder + verify + fleet view + /metrics, wired."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from mqtt_bridge.acker import AckPublisher
from mqtt_bridge.backend_client import BackendClient
from mqtt_bridge.counters import Counters
from mqtt_bridge.fleet import DEFAULT_STALE_AFTER, FleetTracker
from mqtt_bridge.forwarder import BATCH_SIZE, Backoff, Forwarder
from mqtt_bridge.ingest import (
    DEFAULT_CLIENT_ID,
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    DEFAULT_SESSION_EXPIRY,
    Ingest,
)
from mqtt_bridge.metrics import Metrics
from mqtt_bridge.publisher import (
    DEFAULT_VALIDITY_DAYS,
    load_body,
    publish_retained,
    signed_document,
)
from mqtt_bridge.spool import Spool
from mqtt_bridge.verify import VerifyService

log = logging.getLogger("mqtt_bridge.service")


@dataclass
class BridgeConfig:
    """Everything the bridge needs to run; the CLI fills it from a TOML file and flags."""

    db: Path
    password: str = field(repr=False)  # never in a repr, hence never in a log line
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    username: str = "kiosk-bridge"
    client_id: str = DEFAULT_CLIENT_ID
    #: Shared-subscription group (None: plain subscriptions, a single bridge).
    group: str | None = None
    session_expiry: int = DEFAULT_SESSION_EXPIRY
    backend_url: str = "http://127.0.0.1:8080"
    #: TLS verification for the backend: True (system CAs) or a CA bundle path. Never off.
    backend_verify: bool | str = True
    #: OAuth2 client credentials (token_url None: no tokens).
    token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    backend_timeout: float = 10.0
    batch_size: int = BATCH_SIZE
    retry_initial: float = 0.2
    retry_max: float = 30.0
    stats_interval: float = 5.0
    #: Back-pressure: stop acking at high_water spooled check-ins, resume at low_water.
    high_water: int = DEFAULT_HIGH_WATER
    low_water: int = DEFAULT_LOW_WATER
    #: Dead letters (personal data) are deleted after this many days.
    retention_days: float = 7.0
    retention_check_interval: float = 3600.0
    #: Publish kiosk acks from a second process (mqtt_bridge/acker.py): ~40 % more rate.
    ack_process: bool = True
    #: Online checks.
    verify_enabled: bool = True
    verify_deadline: float = 0.5
    verify_cache_ttl: float = 60.0
    verify_workers: int = 4
    #: Signed fleet documents: operator key and the bodies published at startup.
    operator_key: Path | None = None
    policy_file: Path | None = None
    trust_file: Path | None = None
    document_validity_days: float = DEFAULT_VALIDITY_DAYS
    #: Fleet view database (None: next to the spool, `fleet.sqlite3`).
    fleet_db: Path | None = None
    stale_after: float = DEFAULT_STALE_AFTER
    #: kioskctl's fleet registry (fleet.json), read by `kiosk-bridge fleet`.
    registry: Path | None = None
    #: /metrics on loopback (None: off; 0: any free port).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def fleet_path(self) -> Path:
        return self.fleet_db or self.db.resolve().parent / "fleet.sqlite3"


def load_trust(path: Path) -> Any:
    """The trust list for HC1 verification from a trust document body file."""
    from mqtt_bridge import hcert

    return hcert.TrustList.from_body(load_body(path))


class BridgeService:
    """Owns the spool, the MQTT ingest, the forwarder and the side services; start, run, stop."""

    def __init__(self, config: BridgeConfig) -> None:
        """Open the spool (raises sqlite3.Error / OSError if it cannot) and build the parts.

        Raises ValueError for a configuration that cannot work (named in the message).
        """
        self.config = config
        self.counters = Counters()
        self.metrics = Metrics(self.counters)
        self.spool = Spool(config.db)
        self.backend = BackendClient(
            config.backend_url,
            verify=config.backend_verify,
            timeout=config.backend_timeout,
            token_url=config.token_url,
            client_id=config.oauth_client_id,
            client_secret=config.oauth_client_secret,
            max_connections=config.verify_workers + 2,
        )
        self.forwarder = Forwarder(
            self.spool,
            config.backend_url,
            backoff=Backoff(config.retry_initial, config.retry_max),
            batch_size=config.batch_size,
            backend=self.backend,
            on_forwarded=lambda n: self.counters.add("forwarded", n),
            on_dead_letter=lambda n: self.counters.add("dead_lettered", n),
            on_latency=self.metrics.backend_latency.observe,
        )
        self.fleet = FleetTracker(config.fleet_path())
        self.operator_key = None
        self.documents: dict[str, dict[str, Any]] = {}
        if config.operator_key is not None:
            from mqtt_bridge.documents import load_private_key

            self.operator_key = load_private_key(config.operator_key)
        for kind, path in (("policy", config.policy_file), ("trust", config.trust_file)):
            if path is not None:
                self.documents[kind] = load_body(path)
        if self.documents and self.operator_key is None:
            raise ValueError("documents configured but no operator key to sign them")
        trust = load_trust(config.trust_file) if config.trust_file is not None else None
        self.verify: VerifyService | None = None
        if config.verify_enabled:
            self.verify = VerifyService(
                self.backend,
                self._publish_answer,
                deadline=config.verify_deadline,
                cache_ttl=config.verify_cache_ttl,
                workers=config.verify_workers,
                trust=trust,
                on_latency=self.metrics.verify_latency.observe,
                on_invalid=lambda: self.counters.add("verify_invalid"),
            )
        self.acker = (
            AckPublisher(
                config.broker_host,
                config.broker_port,
                config.username,
                config.password,
                config.client_id,
            )
            if config.ack_process
            else None
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
            group=config.group,
            high_water=config.high_water,
            low_water=config.low_water,
            on_verify=self.verify.handle if self.verify else None,
            fleet=self.fleet,
            acker=self.acker,
        )
        self.metrics.gauge("spool_depth", "check-ins waiting for the backend", self.spool.depth)
        self.metrics.gauge(
            "kiosks_online", "kiosks whose status is online", self.fleet.online_count
        )
        self.metrics.gauge(
            "backpressure", "1 while acks are paused (spool full)", lambda: int(self.ingest.holding)
        )
        self.metrics.gauge(
            "broker_connected",
            "1 while connected to the broker",
            lambda: int(self.ingest.connected),
        )
        self.metrics.gauge(
            "forwarder_failures", "backend failures in a row", lambda: self.forwarder.failures
        )
        self.metrics.gauge(
            "forwarder_backoff_seconds",
            "ceiling of the current retry wait (reaches the cap in a long outage)",
            lambda: self.forwarder.backoff_ceiling,
        )
        self.metrics_port: int | None = None
        self._halt = threading.Event()
        self._side: list[threading.Thread] = []
        self._stopped = False

    def _publish_answer(self, topic: str, payload: bytes) -> None:
        self.ingest.client.publish(topic, payload, qos=0)

    def start(self) -> None:
        """Start forwarding (the spool may hold records from a previous run), then ingest."""
        log.info(
            "bridge starting: spool %s (%d pending), backend %s, client id %s%s",
            self.config.db,
            self.spool.depth(),
            self.config.backend_url,
            self.config.client_id,
            f", shared group {self.config.group}" if self.config.group else "",
        )
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_port, self.config.metrics_host
            )
        self.purge_expired()
        self.fleet.start()
        self.forwarder.start()
        self.ingest.start()
        for target, name in (
            (self._retention_loop, "retention"),
            (self._publish_documents, "docs"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._side.append(thread)

    def purge_expired(self) -> int:
        """Delete dead letters older than the retention limit (invariant 7); returns how many."""
        cutoff = time.time() - self.config.retention_days * 86400
        purged = self.spool.purge_dead_letters(cutoff)
        if purged:
            self.counters.add("purged", purged)
            log.info(
                "retention: deleted %d dead letters older than %g days",
                purged,
                self.config.retention_days,
            )
        return purged

    def _retention_loop(self) -> None:
        while not self._halt.wait(self.config.retention_check_interval):
            try:
                self.purge_expired()
            except Exception as exc:
                log.error("retention purge failed (%s)", type(exc).__name__)

    def _publish_documents(self) -> None:
        """Publish the configured fleet documents once the broker connection is up."""
        if not self.documents or self.operator_key is None:
            return
        while not self.ingest.connected:
            if self._halt.wait(0.1):
                return
        for kind, body in self.documents.items():
            try:
                text, serial = signed_document(
                    self.spool,
                    self.operator_key,
                    kind,
                    body,
                    validity_days=self.config.document_validity_days,
                )
                publish_retained(self.ingest.client, kind, text)
                log.info("published fleet/%s serial %d (retained)", kind, serial)
            except Exception as exc:
                log.error("could not publish fleet/%s: %s", kind, exc)

    def log_summary(self) -> None:
        """Log the one-line counter summary (plus the spool depth) at INFO."""
        log.info("stats %s spool_depth=%d", self.counters.summary(), self.spool.depth())

    def run(self, stop: threading.Event) -> None:
        """Block until `stop` is set, logging the summary every `stats_interval` seconds."""
        while not stop.wait(self.config.stats_interval):
            self.log_summary()

    def stop(self) -> None:
        """Clean shutdown: drain and ack ingest, disconnect, stop the rest, close the spool."""
        if self._stopped:
            return
        self._stopped = True
        log.info("bridge stopping")
        self._halt.set()
        self.ingest.stop()
        if self.acker is not None:
            self.acker.close()
        if self.verify is not None:
            self.verify.close()
        self.forwarder.stop()
        for thread in self._side:
            thread.join(5)
        self.fleet.close()
        self.metrics.close()
        self.backend.close()
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
