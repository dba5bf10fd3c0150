"""Benchmarks for the kiosk in the field (issue 4), run by simulator/bench.py:

- journal_append_per_s, journal_replay_per_s, journal_load_5000_ms: the
  firmware's journal on the MicroPython unix port (append + flush per
  check-in; replay = read, decode and build the JSON payload; load = opening
  a journal of 5,000 pending check-ins, as at boot);
- worst_scan_to_display_ms_network_failing: scans while the path to the broker
  is blackholed, dropped and refused in turn (simulator/netfault.py), from the
  scanner line to the first screen that answers (a verdict, or "checking"
  while an identity code's online check runs);
- worst_scan_to_verdict_ms_network_failing: the same scans to their verdict:
  an identity code asked online while the session has not yet noticed the
  blackhole waits out the policy's online deadline, then the offline rule
  decides (and the next checks are not asked for online.RETRY_MS);
- kiosk_min_heapsize_{source,bundle}_kb: the smallest `micropython -X
  heapsize` at which the soak (every code type, garbage, MQTT session,
  reconnect, journal, telemetry, status command) still passes (bisection
  down to 8 KB), for the source tree and for the mpy-cross bundle. Indicative
  within ~16 KB: near the limit, passing is not monotonic in the heap size,
  because what fails is a contiguous block in a heap fragmented by loading
  the modules (the source tree compiles them at boot) - e.g. before the
  modules were unloaded, the source tree passed at 200k, failed at 208k and
  passed from 216k;
- kiosk_code_heap_*_bytes: what the resident modules take once imported (the
  ones loaded only at boot, for a command or for a fleet document are
  unloaded after use, kiosk/__init__.py): the unix port keeps all bytecode on
  the heap (64-bit objects), an ESP32 image with frozen modules keeps it in
  flash (a bundle of .mpy files on the device's file system does not: there
  the code takes heap too, in 32-bit objects);
- kiosk_peak_heap_*_bytes, kiosk_data_heap_*_bytes: at the smallest heap,
  the peak in use (heapsize minus the lowest heap_free in telemetry: live
  data after a collect, sampled while idle), and that minus the code: the
  workload's own data.

Figures (64-bit unix port, 2026-11): resident code heap, source 105 KB /
bundle 102 KB (was 124 / 122 KB; ~22 KB of it is the qstr pool, which
unloading does not shrink); smallest heap, bundle 169 KB (was 211 KB), source
~204-208 KB (was ~200-211 KB: the verifier and certificate parser, loaded for
the stored documents, are now compiled at boot in a fuller heap). A literal
128k is out of reach on this port: resident code (qstrs included) + ~30 KB
of live data is ~130 KB before any fragmentation. Taking a trust list near the 16 KiB
limit needs ~55 KB free (was ~75 KB; tests/test_resilience.py).

    python -m simulator.bench_resilience
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulator.broker import BRIDGE_USER, Broker
from simulator.codes import SampleFactory
from simulator.kiosk import FIRMWARE_DIR, DisplayLog, VirtualKiosk, kiosk_config, micropython_binary
from simulator.netfault import FaultProxy

Results = dict[str, dict[str, float | str]]

_JOURNAL_SCRIPT = """
import json, os, time
from kiosk.journal import Journal
d = os.getenv("BENCH_DIR")
META = ("kiosk-bench", "HCM-Q1-000123", "A", "0.3.0")
j = Journal(d + "/journal", META)
N = 5000
t0 = time.ticks_us()
for i in range(N):
    j.add("cccd", "%012d" % (79201000000 + i), "pass", "verified", None, 1764090000 + i)
dt = time.ticks_diff(time.ticks_us(), t0)
print("bench: journal_append_per_s = %.0f 1/s" % (N * 1e6 / dt))
j.close()
t0 = time.ticks_us()
j = Journal(d + "/journal", META)
dt = time.ticks_diff(time.ticks_us(), t0)
print("bench: journal_load_5000_ms = %.1f ms" % (dt / 1000))
t0 = time.ticks_us()
n = 0
while True:
    r = j.next_record()
    if r is None:
        break
    # What the replay does per record: the check-in's JSON payload.
    json.dumps({"v": 1, "device": META[0], "venue": r.meta[1], "gate": r.meta[2],
                "seq": r.seq, "ts": r.ts, "type": r.type, "id": r.ident,
                "verdict": r.verdict, "how": r.how, "fw": r.meta[3]})
    n += 1
dt = time.ticks_diff(time.ticks_us(), t0)
assert n == N
print("bench: journal_replay_per_s = %.0f 1/s" % (n * 1e6 / dt))
"""


def _report(results: Results, name: str, value: float, unit: str) -> None:
    results[name] = {"value": value, "unit": unit}
    print(f"bench: {name} = {value:.6g} {unit}")


def bench_journal(results: Results, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [micropython_binary(), "-c", _JOURNAL_SCRIPT], capture_output=True, text=True,
        timeout=120, env={"MICROPYPATH": f"{FIRMWARE_DIR}:.frozen", "BENCH_DIR": str(work)},
        check=True).stdout
    for line in out.splitlines():
        if line.startswith("bench: "):
            name, rest = line[7:].split(" = ")
            value, unit = rest.split()
            _report(results, name, float(value), unit)


def _wait(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _kiosk(work: Path, port: int, heapsize: str | None = None,
           firmware: Path = FIRMWARE_DIR) -> VirtualKiosk:
    cfg = kiosk_config("kiosk-bench", "HCM-Q1-000123", "A", port, "bench-kiosk",
                       operator_key=SampleFactory.operator_key_b64())
    cfg["broker"].update(keepalive=5, backoff_max_s=2)
    cfg["journal"] = {"replay_per_s": 200, "replay_delay_s": 0}
    cfg["telemetry_s"] = 10
    kiosk = VirtualKiosk(work, cfg, heapsize=heapsize, firmware_dir=firmware)
    kiosk.install_document("trust", SampleFactory.trust_document())
    return kiosk


def _answered(display: DisplayLog, since: int) -> bool:
    """A screen that answers the scan appeared after event `since`: a verdict
    (it sounds the buzzer) or "checking" while the online check runs."""
    display.poll()
    return any(e.get("buzz") or e["lines"][0].startswith("DANG KIEM TRA")
               for e in display.events[since:])


def bench_network_failing(results: Results, work: Path, n: int = 60) -> None:
    broker = Broker(work / "broker")
    broker.add_account(BRIDGE_USER, "bench-bridge")
    broker.add_account("kiosk-bench", "bench-kiosk")
    broker.start()
    proxy = FaultProxy(broker.port).start()
    kiosk = _kiosk(work / "kiosk", proxy.port)
    try:
        kiosk.start()
        kiosk.wait_ready()
        f = SampleFactory(seed=9)
        worst_screen = worst_verdict = 0.0
        faults = (proxy.blackhole, proxy.drop, proxy.refuse, proxy.heal)
        assert kiosk.scanner is not None
        display = kiosk.display
        for i in range(n):
            if i % 10 == 0:
                faults[(i // 10) % len(faults)]()
            sample = f.hc1("vtr"[i % 3]) if i % 2 else f.well_formed()
            display.poll()
            screens, verdicts = len(display.events), len(display.verdicts())
            t0 = time.perf_counter()
            kiosk.scanner.scan(sample.payload)
            if not _wait(lambda s=screens: _answered(display, s), 15):
                raise TimeoutError("no screen while the network was failing")
            worst_screen = max(worst_screen, (time.perf_counter() - t0) * 1000)
            if not _wait(lambda v=verdicts: len(display.verdicts()) > v, 15):
                raise TimeoutError("no verdict while the network was failing")
            worst_verdict = max(worst_verdict, (time.perf_counter() - t0) * 1000)
        _report(results, "worst_scan_to_display_ms_network_failing", worst_screen, "ms")
        _report(results, "worst_scan_to_verdict_ms_network_failing", worst_verdict, "ms")
    finally:
        kiosk.stop()
        proxy.stop()
        broker.stop()


def _status(port: int, device: str) -> dict[str, object] | None:
    """The kiosk's status (telemetry figures) through its command topic."""
    import json

    import paho.mqtt.client as mqtt

    replies: list[dict[str, object]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-operator")
    client.username_pw_set(BRIDGE_USER, "bench-bridge")
    client.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    client.connect("127.0.0.1", port)
    client.subscribe(f"kiosk/{device}/cmd/result", 1)
    client.loop_start()
    try:
        time.sleep(0.3)  # the subscription settles (benchmark only, not a test)
        client.publish(f"kiosk/{device}/cmd", json.dumps({"v": 1, "id": "b1", "cmd": "status"}), 1)
        _wait(lambda: replies, 10)
    finally:
        client.loop_stop()
        client.disconnect()
    result = replies[0].get("result") if replies else None
    return result if isinstance(result, dict) else None


def soak(work: Path, heapsize: str, firmware: Path = FIRMWARE_DIR) -> dict[str, object] | None:
    """Boot under `heapsize`, scan every code type (and garbage), keep the MQTT
    session with telemetry and a reconnect; the kiosk's status, or None if it
    failed. (tests/test_resilience.py runs it too.)"""
    broker = Broker(work / "broker")
    broker.add_account(BRIDGE_USER, "bench-bridge")
    broker.add_account("kiosk-bench", "bench-kiosk")
    broker.start()
    kiosk = _kiosk(work / "kiosk", broker.port, heapsize, firmware)
    try:
        kiosk.start()
        try:
            kiosk.wait_ready(timeout=20)
        except (RuntimeError, TimeoutError):
            return None
        f = SampleFactory(seed=11)
        samples = [f.cccd(), f.pccovid(), f.hc1("v"), f.hc1("t"), f.hc1("r"),
                   f.binary_garbage(), f.cccd_bad_date()] * 3
        assert kiosk.scanner is not None
        for i, s in enumerate(samples):
            if i == len(samples) // 2:
                broker.stop()  # a reconnect in the middle
                broker.start()
            before = len(kiosk.display.verdicts())
            kiosk.scanner.scan(s.payload)
            if not _wait(lambda b=before: len(kiosk.display.verdicts()) > b, 15):
                return None
        if not (_wait(lambda: kiosk.console().count("mqtt: connected") >= 2, 20)
                and kiosk.alive()):
            return None
        status = _status(broker.port, "kiosk-bench")
        if status is None or "MemoryError" in kiosk.console() or not kiosk.alive():
            return None
        return status
    finally:
        kiosk.stop()
        broker.stop()


_CODE_HEAP_SCRIPT = """
import gc
gc.collect()
a = gc.mem_alloc()
from kiosk import app
gc.collect()
print(gc.mem_alloc() - a)
"""


def code_heap_bytes(firmware: Path) -> int:
    """Heap the firmware's modules take once imported (bytecode, on this port)."""
    out = subprocess.run([micropython_binary(), "-c", _CODE_HEAP_SCRIPT], capture_output=True,
                         text=True, timeout=60, check=True,
                         env={"MICROPYPATH": f"{firmware}:.frozen"}, cwd=firmware).stdout
    return int(out.split()[-1])


def min_heapsize_kb(work: Path, firmware: Path, lo: int = 64, hi: int = 512) -> int:
    """The smallest -X heapsize (KB, 8 KB steps) at which the soak passes; -1 if not at hi."""
    if soak(work / f"h{hi}", f"{hi}k", firmware) is None:
        return -1
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if soak(work / f"h{mid}", f"{mid}k", firmware) is not None:
            hi = mid
        else:
            lo = mid
    return hi


def bench_heap(results: Results, work: Path) -> None:
    """Peak heap of the workload and the smallest heap it runs in, for the source
    tree (as the simulator runs it) and the mpy-cross bundle (as deployed)."""
    from host_tools.build import build

    bundle = build().save(work / "bundle")
    for name, firmware in (("source", FIRMWARE_DIR), ("bundle", bundle)):
        code = code_heap_bytes(firmware)
        _report(results, f"kiosk_code_heap_{name}_bytes", code, "bytes")
        least = min_heapsize_kb(work / name, firmware)
        _report(results, f"kiosk_min_heapsize_{name}_kb", least, "KB")
        status = soak(work / f"{name}-peak", f"{least}k", firmware) if least > 0 else None
        heap_min = status.get("heap_min") if status else None
        if isinstance(heap_min, int):
            # Peak in use: the heap minus the least that was ever free.
            _report(results, f"kiosk_peak_heap_{name}_bytes", least * 1024 - heap_min, "bytes")
            _report(results, f"kiosk_data_heap_{name}_bytes",
                    least * 1024 - heap_min - code, "bytes")


def run(results: Results, work: Path) -> None:
    bench_journal(results, work / "journal")
    bench_network_failing(results, work / "netfail")
    bench_heap(results, work / "heap")


def main() -> int:
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-res-") as tmp:
        run(results, Path(tmp))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
