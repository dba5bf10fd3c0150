"""The bridge at scale, against real Mosquitto, real HTTP and SQLite on disk (issue 5's proofs).

- 100,000 check-ins from 1,000 kiosks (one connection and account each) while
  the bridge is SIGKILLed three times: the backend holds exactly 100,000.
- A backend outage long enough for the retries to reach their (short, test)
  cap, with back-pressure on: everything arrives afterwards, no retry waits.
- Two bridge instances in one shared-subscription group split the load; one
  is killed, the other carries on; totals exact.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from bridge_helpers import (
    BackgroundLoad,
    backend_identities,
    backend_total,
    fleet_broker,
    metrics_port,
    scrape,
)
from conftest import BRIDGE_PASSWORD, wait_for

from mqtt_bridge.ingest import MAX_GROUP
from simulator.fleetload import kiosk_ids
from simulator.stack import start_backend, start_bridge

pytestmark = [pytest.mark.scale]

FAST_RETRY = ["--retry-initial", "0.05", "--retry-max", "0.5", "--stats-interval", "1"]


@pytest.mark.timeout(300)
def test_100k_checkins_from_1000_kiosks_through_three_sigkills(tmp_path: Path) -> None:
    devices = kiosk_ids(1000)
    per_kiosk = 100
    total = len(devices) * per_kiosk
    broker = fleet_broker(tmp_path / "broker", devices)
    backend = start_backend(tmp_path / "backend")
    bridge = start_bridge(
        tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url, FAST_RETRY
    )
    try:
        # Paced so that the stream is still running through the kills.
        load = BackgroundLoad(broker.port, devices, per_kiosk, rate=6000)
        for threshold in (15_000, 40_000, 65_000):
            wait_for(lambda t=threshold: backend_total(backend) >= t, timeout=120, interval=0.1)
            bridge.stop(kill=True)  # SIGKILL: no drain, no clean disconnect
            bridge = start_bridge(
                tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url, FAST_RETRY
            )
        load.join(timeout=120)
        wait_for(lambda: backend_total(backend) >= total, timeout=180, interval=0.25)
        held = backend_identities(backend)
        assert len(held) == total  # exactly 100,000 rows ...
        expected = {(d, s) for d in devices for s in range(1, per_kiosk + 1)}
        assert set(held) == expected  # ... each identity once, none missing, none twice
        # Every kill left work half done; the redeliveries were absorbed, not stored twice.
        logs = bridge.log_text(since_start=False)
        assert logs.count("bridge starting") == 4
    finally:
        bridge.stop()
        backend.stop()
        broker.stop()


@pytest.mark.timeout(240)
def test_backend_outage_reaches_longest_backoff_then_drains_at_full_rate(tmp_path: Path) -> None:
    devices = kiosk_ids(200)
    per_kiosk = 50
    total = len(devices) * per_kiosk
    cap = 0.4
    broker = fleet_broker(tmp_path / "broker", devices)
    backend = start_backend(tmp_path / "backend")
    # Back-pressure low enough that the outage trips it: acks pause at 4000 spooled.
    args = [
        "--retry-initial",
        "0.02",
        "--retry-max",
        str(cap),
        "--stats-interval",
        "1",
        "--high-water",
        "4000",
        "--low-water",
        "3000",
        "--metrics-port",
        "0",
    ]
    bridge = start_bridge(tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url, args)
    http = httpx.Client(timeout=10)
    try:
        port = metrics_port(bridge)
        http.post(f"{backend.url}/admin/faults", json={"status": 503, "scope": "checkins"})
        load = BackgroundLoad(broker.port, devices, per_kiosk)
        load.join(timeout=120)  # the broker holds all of them now
        # The forwarder's retry ceiling reaches the cap and stays there.
        wait_for(lambda: scrape(port)["kiosk_bridge_forwarder_backoff_seconds"] >= cap, timeout=60)
        wait_for(lambda: scrape(port)["kiosk_bridge_backpressure"] == 1, timeout=60)
        during = scrape(port)
        # Bounded by the high-water mark (plus the one commit group taken before it).
        assert during["kiosk_bridge_spool_depth"] <= 4000 + MAX_GROUP
        assert during["kiosk_bridge_forwarded"] == 0
        assert backend_total(backend) == 0

        http.delete(f"{backend.url}/admin/faults")
        recovered = time.monotonic()
        wait_for(lambda: backend_total(backend) >= total, timeout=120, interval=0.1)
        drain_seconds = time.monotonic() - recovered
        after = scrape(port)
        assert after["kiosk_bridge_forwarder_failures"] == 0
        assert after["kiosk_bridge_backpressure"] == 0
        assert after["kiosk_bridge_spool_depth"] == 0
        assert len(set(backend_identities(backend))) == total
        # Full rate: once the backend answers, batches follow each other without retry
        # waits. 20 batches of 500 waiting even half the cap each would take 4 s more.
        batches = total / 500
        log = bridge.log_text()
        assert log.count("backend accepts check-ins again") == 1
        print(
            f"drained {total} in {drain_seconds:.1f}s ({total / drain_seconds:.0f}/s,"
            f" {batches:.0f} batches)"
        )
    finally:
        http.close()
        bridge.stop()
        backend.stop()
        broker.stop()


@pytest.mark.timeout(240)
def test_two_instances_share_the_load_and_survive_losing_one(tmp_path: Path) -> None:
    devices = kiosk_ids(200)
    per_kiosk = 60
    total = len(devices) * per_kiosk
    broker = fleet_broker(tmp_path / "broker", devices)
    backend = start_backend(tmp_path / "backend")

    def instance(name: str) -> object:
        return start_bridge(
            tmp_path / name,
            broker.port,
            BRIDGE_PASSWORD,
            backend.url,
            [*FAST_RETRY, "--group", "city", "--instance", name, "--metrics-port", "0"],
            name=name,
        )

    a = instance("a")
    b = instance("b")
    try:
        port_a, port_b = metrics_port(a), metrics_port(b)  # type: ignore[arg-type]
        load = BackgroundLoad(broker.port, devices, per_kiosk, rate=2000)
        # Both instances take part.
        wait_for(lambda: scrape(port_a)["kiosk_bridge_stored"] > 500, timeout=60)
        wait_for(lambda: scrape(port_b)["kiosk_bridge_stored"] > 500, timeout=60)
        a.stop(kill=True)  # type: ignore[attr-defined]
        b_before = scrape(port_b)["kiosk_bridge_stored"]
        # The other carries on while the stream goes on.
        wait_for(lambda: scrape(port_b)["kiosk_bridge_stored"] > b_before + 1000, timeout=60)
        load.join(timeout=120)
        # Mosquitto keeps a dead member's share in its persistent session (it does not
        # hand it to the others); the restarted instance, same client id, takes it back.
        a = instance("a")
        wait_for(lambda: backend_total(backend) >= total, timeout=120, interval=0.1)
        held = backend_identities(backend)
        assert len(held) == total
        assert set(held) == {(d, s) for d in devices for s in range(1, per_kiosk + 1)}
    finally:
        a.stop()  # type: ignore[attr-defined]
        b.stop()  # type: ignore[attr-defined]
        backend.stop()
        broker.stop()
