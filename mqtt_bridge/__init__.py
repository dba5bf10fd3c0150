"""The kiosk bridge: MQTT ingest, durable SQLite spool, forwarder to the city backend.

Kiosks publish check-ins on `kiosk/<device>/checkin` (see docs/protocol.md); the
bridge validates each one, commits it to its spool, only then acknowledges it
(MQTT PUBACK and `kiosk/<device>/ack`), and forwards the spool to the backend in
idempotent batches. Run it with `kiosk-bridge run` (mqtt_bridge.cli).
"""

__all__ = ["__version__"]

__version__ = "0.2.0"
