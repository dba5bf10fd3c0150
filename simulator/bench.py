"""`make bench`: figures for the check-in path, printed as `bench: <name> = <value> <unit>`.

    python -m simulator.bench [--json bench-results.json]

- firmware_read_<type>_us / _alloc_bytes: reading one code of each type with
  the firmware's own code under the MicroPython unix port (time, heap allocated).
- scan_to_display_ms_p50/_max: a virtual kiosk, from the scanner line to the
  display log (pty, UTF-8, decode, verdict, journal append, show), mixed
  codes: certificates verified on the kiosk, identity codes answered by the
  bridge's online check (a round trip through Mosquitto and the bridge).
- scan_to_backend_ms_p50/_p99: from the scanner line through Mosquitto, the
  bridge's spool and HTTP forwarding to the backend emulator holding it.
  Scans come at most 10 a second, under the kiosk's send pace (20/s).
Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from simulator.bench_bridge import run as bench_bridge
from simulator.bench_resilience import run as bench_resilience
from simulator.bench_tools import bench_tools
from simulator.bench_verdict import bench_verdict
from simulator.bench_verify import bench_verify
from simulator.broker import BRIDGE_USER, Broker
from simulator.codes import SampleFactory
from simulator.kiosk import FIRMWARE_DIR, VirtualKiosk, kiosk_config, micropython_binary
from simulator.stack import start_backend, start_bridge

FIGURE = re.compile(r"^bench: (\S+) = ([-0-9.eE+]+) (\S+)$")


def report(results: dict[str, dict[str, float | str]], name: str, value: float, unit: str) -> None:
    results[name] = {"value": value, "unit": unit}
    print(f"bench: {name} = {value:.3f} {unit}", flush=True)


def bench_firmware_read(results: dict[str, dict[str, float | str]], work: Path) -> None:
    f = SampleFactory(seed=99)
    samples = [f.cccd() for _ in range(20)] + [f.pccovid() for _ in range(20)]
    samples += [f.hc1() for _ in range(20)]
    path = work / "samples.json"
    path.write_text(json.dumps([{"type": s.type, "text": s.payload.decode()} for s in samples]))
    script = Path(__file__).with_name("bench_decode_mpy.py").read_text()
    out = subprocess.run(
        [micropython_binary(), "-c", script],
        env={"MICROPYPATH": f"{FIRMWARE_DIR}:.frozen", "BENCH_SAMPLES": str(path)},
        cwd=work, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    for line in out.splitlines():
        m = FIGURE.match(line.strip())
        if m:
            report(results, m[1], float(m[2]), m[3])


def _wait(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.0005)


def bench_path(results: dict[str, dict[str, float | str]], work: Path, n: int = 120) -> None:
    broker = Broker(work / "broker")
    broker.add_account(BRIDGE_USER, "bench-bridge")
    broker.add_account("kiosk-bench", "bench-kiosk")
    broker.start()
    backend = start_backend(work / "backend")
    bridge = start_bridge(work / "bridge", broker.port, "bench-bridge", backend.url)
    kiosk = VirtualKiosk(work / "kiosk", kiosk_config(
        "kiosk-bench", "HCM-Q1-000123", "A", broker.port, "bench-kiosk",
        operator_key=SampleFactory.operator_key_b64()))
    kiosk.install_document("trust", SampleFactory.trust_document())  # HC1 verified on the kiosk
    try:
        kiosk.start()
        kiosk.wait_ready()
        httpx.get(backend.url + "/api/v1/status/warm-up", timeout=60)  # builds its people once
        assert kiosk.scanner is not None
        f = SampleFactory(seed=5)
        display_ms: list[float] = []
        backend_ms: list[float] = []
        with httpx.Client(base_url=backend.url, timeout=5) as http:
            t0 = 0.0
            for i in range(n):
                sample = f.well_formed()
                before = len(kiosk.display.verdicts())
                # At most 10 scans a second (a real gate: under 1/s): faster than
                # the kiosk's send pace (journal.replay_per_s, 20/s) would
                # measure that pacing instead of the path.
                _wait(lambda t=t0: time.perf_counter() - t >= 0.1, 1)
                t0 = time.perf_counter()
                kiosk.scanner.scan(sample.payload)
                _wait(lambda b=before: len(kiosk.display.verdicts()) > b, 10)
                display_ms.append((time.perf_counter() - t0) * 1000)
                _wait(lambda i=i: http.get("/api/v1/stats").json()["total"] > i, 10)
                backend_ms.append((time.perf_counter() - t0) * 1000)
        display_ms.sort()
        backend_ms.sort()
        report(results, "scan_to_display_ms_p50", statistics.median(display_ms), "ms")
        report(results, "scan_to_display_ms_max", display_ms[-1], "ms")
        report(results, "scan_to_backend_ms_p50", statistics.median(backend_ms), "ms")
        report(results, "scan_to_backend_ms_p99", backend_ms[int(len(backend_ms) * 0.99) - 1], "ms")
    finally:
        kiosk.stop()
        bridge.stop()
        backend.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.bench")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        work = Path(tmp)
        bench_firmware_read(results, work)
        bench_verify(results, work)  # simulator/bench_verify.py: signatures
        bench_verdict(results, work)  # simulator/bench_verdict.py: scan to verdict on screen
        bench_path(results, work)
        bench_tools(results, work)  # simulator/bench_tools.py: kioskctl build/image/deploy
        bench_bridge(results, work)  # simulator/bench_bridge.py: rates, ceiling, online check
        bench_resilience(results, work / "resilience")  # journal rates, failing network, heap
    if args.json:
        args.json.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
