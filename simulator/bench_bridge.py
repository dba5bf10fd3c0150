"""Bridge benchmarks: `python -m simulator.bench_bridge` (also run by `make bench`).

All on loopback with real Mosquitto, the backend emulator and `kiosk-bridge run`:

- paho_qos1_ceiling: what one plain paho-mqtt consumer receives per second at
  QoS 1 from this broker while simulated kiosks publish as fast as they can
  (the ceiling for any Python consumer here).
- bridge_durable_rate: the bridge under the same load, publish -> committed to
  the spool (and acked); bridge_end_to_end_rate: publish -> the backend holds
  all of them; bridge_vs_paho_ceiling: end-to-end / ceiling, side by side.
- forward_rate: the forwarder draining a full spool into the backend.
- bridge_group2_end_to_end_rate: two bridges in one shared-subscription group
  on this same machine (the broker, the kiosks and the backend share its cores);
  bridge_group2_vs_paho_ceiling: that / the ceiling measured in the same run.
- verify_ms_p50 / _p99: online check round trip (kiosk request -> answer),
  1,000 kiosks scanning once a second each, identity codes of the sample people.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from simulator.backend import sample_people
from simulator.broker import BRIDGE_USER, Broker
from simulator.fleetload import connect_kiosks, kiosk_ids, kiosk_password, run_load
from simulator.stack import start_backend, start_bridge

BRIDGE_PASSWORD = "bench-bridge"
Results = dict[str, dict[str, float | str]]


def report(results: Results, name: str, value: float, unit: str, quiet: bool = False) -> None:
    results[name] = {"value": value, "unit": unit}
    if not quiet:
        print(f"bench: {name} = {value:.3f} {unit}", flush=True)


def _broker(work: Path, devices: list[str]) -> Broker:
    broker = Broker(work)
    broker.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    for device in devices:
        broker.add_account(device, kiosk_password(device))
    return broker.start()


def _wait(condition: object, timeout: float, interval: float = 0.01) -> float:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(interval)
    return time.perf_counter()


def paho_ceiling(work: Path, devices: list[str], per_kiosk: int) -> float:
    """Messages/s one paho consumer (QoS 1, auto-ack) receives under the kiosks' load."""
    total = len(devices) * per_kiosk
    broker = _broker(work / "ceiling", devices)
    count = [0]
    subscribed = threading.Event()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="paho-ceiling",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    client.max_inflight_messages_set(100)

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        count[0] += 1

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe("kiosk/+/checkin", qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        _wait(subscribed.is_set, 10)
        started = time.perf_counter()
        run_load(broker.port, devices, per_kiosk)
        done = _wait(lambda: count[0] >= total, 120, 0.002)
        return total / (done - started)
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()


def _stats(url: str) -> int:
    return int(httpx.get(url + "/api/v1/stats", timeout=10).json()["total"])


def bridge_rates(
    results: Results, work: Path, devices: list[str], per_kiosk: int, forward: bool = True
) -> float:
    """The bridge under the same load: durable and end-to-end rates, then the forwarder."""
    total = len(devices) * per_kiosk
    broker = _broker(work / "broker", devices)
    backend = start_backend(work / "backend")
    bridge = start_bridge(
        work / "bridge",
        broker.port,
        BRIDGE_PASSWORD,
        backend.url,
        ["--metrics-port", "0", "--stats-interval", "60"],
    )
    try:
        port = int(_wait_log(bridge, r"metrics on http://127.0.0.1:(\d+)/metrics"))
        metrics = f"http://127.0.0.1:{port}/metrics"

        def stored() -> float:
            text = httpx.get(metrics, timeout=5).text
            line = next(x for x in text.splitlines() if x.startswith("kiosk_bridge_stored_total"))
            return float(line.split()[1])

        started = time.perf_counter()
        run_load(broker.port, devices, per_kiosk)
        durable_done = _wait(lambda: stored() >= total, 120, 0.02)
        e2e_done = _wait(lambda: _stats(backend.url) >= total, 120, 0.02)
        report(
            results,
            "bridge_durable_rate",
            total / (durable_done - started),
            "checkins/s",
            quiet=True,
        )
        e2e = total / (e2e_done - started)
        report(results, "bridge_end_to_end_rate", e2e, "checkins/s", quiet=True)

        if not forward:
            return e2e
        # The forwarder alone: fill the spool while the backend refuses, then let go.
        httpx.post(backend.url + "/admin/faults", json={"status": 503, "scope": "checkins"})
        run_load(broker.port, devices, per_kiosk, first_seq=per_kiosk + 1)
        _wait(lambda: stored() >= 2 * total, 120, 0.02)
        httpx.delete(backend.url + "/admin/faults")
        # Start the clock at the first accepted batch (the retry wait before it is not
        # the forwarder's rate).
        first = _wait(lambda: _stats(backend.url) > total, 60, 0.005)
        base = _stats(backend.url)
        done = _wait(lambda: _stats(backend.url) >= 2 * total, 120, 0.01)
        report(
            results, "forward_rate", (2 * total - base) / (done - first), "checkins/s", quiet=True
        )
        return e2e
    finally:
        bridge.stop()
        backend.stop()
        broker.stop()


def group_rate(work: Path, devices: list[str], per_kiosk: int, members: int = 2) -> float:
    """End-to-end check-ins/s with `members` bridges in one shared-subscription group."""
    total = len(devices) * per_kiosk
    broker = _broker(work / "gbroker", devices)
    backend = start_backend(work / "gbackend")
    bridges = [
        start_bridge(
            work / f"g{i}",
            broker.port,
            BRIDGE_PASSWORD,
            backend.url,
            ["--group", "bench", "--instance", str(i), "--stats-interval", "60"],
            name=f"b{i}",
        )
        for i in range(members)
    ]
    try:
        started = time.perf_counter()
        run_load(broker.port, devices, per_kiosk)
        done = _wait(lambda: _stats(backend.url) >= total, 120, 0.02)
        return total / (done - started)
    finally:
        for bridge in bridges:
            bridge.stop()
        backend.stop()
        broker.stop()


def _wait_log(service: object, pattern: str) -> str:
    import re

    found: list[str] = []

    def match() -> bool:
        m = re.search(pattern, service.log_text())  # type: ignore[attr-defined]
        if m:
            found.append(m.group(1))
        return bool(m)

    _wait(match, 20)
    return found[0]


async def _verify_round_trips(
    port: int, devices: list[str], people: list[tuple[str, str]], seconds: int
) -> tuple[list[float], list[float]]:
    sent: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    first_lookups: list[float] = []
    seen_people: set[str] = set()
    first_rids: set[tuple[str, int]] = set()

    def on_message(device: str, topic: str, body: bytes) -> None:
        rid = json.loads(body)["rid"]
        t0 = sent.pop((device, rid), None)
        if t0 is not None:
            ms = (time.perf_counter() - t0) * 1000
            latencies.append(ms)
            if (device, rid) in first_rids:
                first_lookups.append(ms)

    clients = await connect_kiosks(port, devices, on_message=on_message)
    await asyncio.gather(
        *(clients[d].subscribe([(f"kiosk/{d}/verify/result", 0)]) for d in devices)
    )
    rng = random.Random(11)
    start = time.perf_counter() + 0.5

    async def scan(device: str) -> None:
        offset = rng.random()
        for second in range(seconds):
            delay = start + second + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, ident = rng.choice(people)
            rid = second + 1
            if ident not in seen_people:
                seen_people.add(ident)
                first_rids.add((device, rid))
            sent[(device, rid)] = time.perf_counter()
            body = json.dumps({"v": 1, "rid": rid, "type": kind, "id": ident}).encode()
            clients[device].publish(f"kiosk/{device}/verify", body, qos=0)

    await asyncio.gather(*(scan(d) for d in devices))
    deadline = time.perf_counter() + 5
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.gather(*(c.close() for c in clients.values()))
    if sent:
        raise RuntimeError(f"{len(sent)} online checks were never answered")
    return latencies, first_lookups


def verify_latency(results: Results, work: Path, kiosks: int = 1000, seconds: int = 10) -> None:
    devices = kiosk_ids(kiosks, "kiosk-verify")
    broker = _broker(work / "vbroker", devices)
    backend = start_backend(work / "vbackend")
    people = sample_people()
    httpx.get(backend.url + "/api/v1/status/warm-up", timeout=60)  # build its people once
    bridge = start_bridge(
        work / "vbridge", broker.port, BRIDGE_PASSWORD, backend.url, ["--stats-interval", "60"]
    )
    try:
        latencies, first = asyncio.run(_verify_round_trips(broker.port, devices, people, seconds))
        latencies.sort()
        first.sort()
        report(results, "verify_ms_p50", statistics.median(latencies), "ms")
        report(results, "verify_ms_p99", latencies[int(len(latencies) * 0.99) - 1], "ms")
        report(results, "verify_backend_lookup_ms_p99", first[int(len(first) * 0.99) - 1], "ms")
    finally:
        bridge.stop()
        backend.stop()
        broker.stop()


def run(results: Results, work: Path) -> None:
    """Every bridge figure, in one run (in its own subfolder of `work`).

    The ceiling and the bridge are measured alternately, twice each, and the
    better of each pair is kept: on a shared machine other work only ever
    lowers a figure, and alternating keeps the ratio honest.
    """
    work = work / "bench-bridge"
    devices = kiosk_ids(500)
    per_kiosk = 80  # 40,000 check-ins per measurement
    ceilings, rates = [], []
    for attempt in range(2):
        ceilings.append(paho_ceiling(work / f"c{attempt}", devices, per_kiosk))
        scratch: Results = {}
        rates.append(
            bridge_rates(scratch, work / f"b{attempt}", devices, per_kiosk, forward=attempt == 0)
        )
        if attempt == 0:
            best = scratch
        elif rates[-1] > rates[0]:
            best.update(scratch)
    ceiling = max(ceilings)
    report(results, "paho_qos1_ceiling", ceiling, "msg/s")
    for name, figure in best.items():
        report(results, name, float(figure["value"]), str(figure["unit"]))
    report(results, "bridge_vs_paho_ceiling", max(rates) / ceiling, "x")
    group = group_rate(work / "group", devices, per_kiosk)
    report(results, "bridge_group2_end_to_end_rate", group, "checkins/s")
    report(results, "bridge_group2_vs_paho_ceiling", group / ceiling, "x")
    verify_latency(results, work)


def main() -> int:
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-bridge-") as tmp:
        run(results, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
