"""Prometheus `/metrics` for the bridge, on a loopback port.

The running counters (mqtt_bridge.counters) are exported as they are by a
collector, so there is one set of numbers for the log line, the tests and
Prometheus; latencies are prometheus_client histograms. A private registry
keeps several bridges in one process (tests) from colliding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mqtt_bridge.counters import Counters

log = logging.getLogger("mqtt_bridge.metrics")

#: Counter name -> help text; exported as kiosk_bridge_<name>_total.
COUNTER_HELP = {
    "received": "MQTT check-in messages received",
    "stored": "check-ins newly committed to the spool",
    "duplicates": "check-ins already held (redeliveries, resends): deduplicated",
    "rejected": "check-in messages refused (malformed, too large, device mismatch)",
    "forwarded": "check-ins the backend accepted",
    "dead_lettered": "check-ins the backend refused for good",
    "verify_requests": "online check requests received",
    "verify_invalid": "online check requests that were malformed",
    "telemetry": "telemetry messages received",
    "telemetry_invalid": "telemetry or status messages that were malformed",
    "purged": "dead letters deleted by the retention limit",
}


class _BridgeCollector(Collector):
    def __init__(self, counters: Counters, gauges: dict[str, tuple[str, Callable[[], float]]]):
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, value in self.counters.snapshot().items():
            family = CounterMetricFamily(f"kiosk_bridge_{name}", COUNTER_HELP.get(name, name))
            family.add_metric([], value)
            yield family
        for name, (help_text, read) in self.gauges.items():
            try:
                value = float(read())
            except Exception:  # a gauge that cannot be read is left out, not fatal
                continue
            yield GaugeMetricFamily(f"kiosk_bridge_{name}", help_text, value=value)


class Metrics:
    """The bridge's registry: counters, gauges read on scrape, latency histograms."""

    def __init__(self, counters: Counters) -> None:
        self.registry = CollectorRegistry()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_BridgeCollector(counters, self.gauges))
        self.backend_latency = Histogram(
            "kiosk_bridge_backend_latency_seconds",
            "time of one batch POST to the backend",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.verify_latency = Histogram(
            "kiosk_bridge_verify_latency_seconds",
            "time from an online check request's arrival to its answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1),
            registry=self.registry,
        )
        self._server: Any = None

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Export `kiosk_bridge_<name>` as a gauge whose value `read()` gives at scrape time."""
        self.gauges[name] = (help_text, read)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on host:port (0 = any free port); returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
