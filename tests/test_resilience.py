"""The kiosk in the field: broker outages, power cuts, a flapping network, a
noisy scanner line, a small heap. Real firmware (MicroPython unix port), real
Mosquitto, the real bridge and backend emulator; the outcome is judged at the
backend: every confirmed check-in there, exactly once, in order per kiosk.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BRIDGE_PASSWORD, wait_for

from kiosk.journal import pending_in  # the firmware's own journal code, on CPython
from simulator.broker import Broker
from simulator.codes import SampleFactory
from simulator.kiosk import VirtualKiosk, kiosk_config
from simulator.netfault import FaultProxy
from simulator.stack import ServiceProcess, start_bridge

VENUE = "HCM-Q1-000123"
DEVICE = "kiosk-res-01"
PASSWORD = "kiosk-res-secret"

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path, broker: Broker,
          backend: ServiceProcess) -> Iterator[tuple[Broker, ServiceProcess]]:
    broker.add_account(DEVICE, PASSWORD)
    broker.restart()
    bridge = start_bridge(tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url)
    try:
        yield broker, backend
    finally:
        bridge.stop()


def field_config(port: int) -> dict[str, Any]:
    """Short keepalive and backoff cap so outages play out in seconds."""
    cfg = kiosk_config(DEVICE, VENUE, "A", port, PASSWORD,
                       operator_key=SampleFactory.operator_key_b64())
    cfg["broker"].update(keepalive=5, backoff_max_s=2)
    cfg["journal"] = {"replay_per_s": 200, "replay_delay_s": 1}
    cfg["telemetry_s"] = 10
    return cfg


def make_kiosk(tmp_path: Path, port: int, **kw: Any) -> VirtualKiosk:
    kiosk = VirtualKiosk(tmp_path / DEVICE, field_config(port), **kw)
    kiosk.install_document("trust", SampleFactory.trust_document())
    return kiosk


def certificates(n: int, seed: int) -> list[tuple[bytes, str]]:
    """n distinct HC1 certificates (decided on the kiosk, no online check)."""
    f = SampleFactory(seed)
    out = []
    for i in range(n):
        s = f.hc1("vtr"[i % 3])
        out.append((s.payload, s.ident))
    return out


def backend_rows(url: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=10) as http:
        rows: list[dict[str, Any]] = http.get(
            "/api/v1/checkins", params={"venue": VENUE, "limit": 100000}).json()["checkins"]
    return rows


def wait_backend(url: str, n: int, timeout: float) -> list[dict[str, Any]]:
    return wait_for(lambda: (rows := backend_rows(url)) and len(rows) >= n and rows,
                    timeout=timeout, interval=0.2, what=f"{n} check-ins at the backend")


def new_verdicts(kiosk: VirtualKiosk, since: int) -> int:
    return len(kiosk.display.verdicts()) - since


def scan_all(kiosk: VirtualKiosk, codes: list[tuple[bytes, str]], window: int = 8) -> None:
    """Feed codes, keeping at most `window` unanswered on the line."""
    assert kiosk.scanner is not None
    base = len(kiosk.display.verdicts())
    for i, (payload, _) in enumerate(codes):
        wait_for(lambda i=i: new_verdicts(kiosk, base) >= i - window, timeout=30,
                 what="the kiosk keeps answering")
        kiosk.scanner.scan(payload)
    wait_for(lambda: new_verdicts(kiosk, base) >= len(codes), timeout=60, what="all answered")


def assert_exactly_once_in_order(rows: list[dict[str, Any]], idents: list[str]) -> None:
    mine = [r for r in rows if r["device"] == DEVICE]
    assert [r["id"] for r in sorted(mine, key=lambda r: r["seq"])] == idents
    assert len({r["seq"] for r in mine}) == len(mine)
    assert all(r["verdict"] == "pass" for r in mine)


def test_broker_outage_during_500_scans_delivers_all_exactly_once_in_order(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess]
) -> None:
    broker, backend = stack
    codes = certificates(500, seed=41)
    kiosk = make_kiosk(tmp_path, broker.port).start()
    try:
        kiosk.wait_ready()
        scan_all(kiosk, codes[:20])
        wait_backend(backend.url, 20, timeout=30)
        broker.stop()  # the broker is gone while people keep coming
        t0 = time.monotonic()
        scan_all(kiosk, codes[20:])
        # Long enough for a keepalive period to pass and the backoff to reach its 2 s cap.
        wait_for(lambda: kiosk.console().count("mqtt: down:") >= 6
                 and time.monotonic() - t0 > 8, timeout=60, what="reconnects at the capped backoff")
        broker.start()
        rows = wait_backend(backend.url, 500, timeout=90)
        assert_exactly_once_in_order(rows, [c[1] for c in codes])
        wait_for(lambda: pending_in(str(kiosk.state_dir / "journal")) == [], timeout=30,
                 what="journal empty once acknowledged")
        assert kiosk.alive()
    finally:
        kiosk.stop()


def test_power_cut_at_200_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess]
) -> None:
    broker, backend = stack
    rng = random.Random(2026)
    codes = certificates(400, seed=43)
    confirmed: list[str] = []  # idents whose verdict the display showed
    kiosk = make_kiosk(tmp_path, broker.port)
    nxt = 0
    for _ in range(200):
        kiosk.display.poll()
        idle_before = sum(1 for e in kiosk.display.events if e["lines"][0].startswith("MOI"))
        kiosk.start()
        before = len(kiosk.display.verdicts())
        batch = codes[nxt:nxt + rng.randint(0, 3)] if nxt < len(codes) else []
        nxt += len(batch)
        assert kiosk.scanner is not None
        if rng.random() < 0.8:  # mostly cut while scanning and sending; sometimes at boot
            wait_for(lambda n=idle_before: kiosk.display.poll() is not None and sum(
                1 for e in kiosk.display.events if e["lines"][0].startswith("MOI")) > n,
                timeout=20, what="boot finished")
        for payload, _ in batch:
            kiosk.scanner.scan(payload)
        # The power cut comes at a random moment: while booting, scanning or sending.
        time.sleep(rng.uniform(0.0, 0.25))
        kiosk.stop(kill=True)
        shown = new_verdicts(kiosk, before)
        confirmed += [ident for _, ident in batch[:shown]]
        pending_in(str(kiosk.state_dir / "journal"))  # always readable
    kiosk.start()
    try:
        rows = wait_backend(backend.url, len(confirmed), timeout=90)
        mine = [r for r in rows if r["device"] == DEVICE]
        ids = [r["id"] for r in sorted(mine, key=lambda r: r["seq"])]
        assert len(ids) == len(set(ids)), "a check-in reached the backend twice"
        assert set(confirmed) <= set(ids), "a confirmed check-in was lost"
        assert len(confirmed) > 100
        # Anything beyond the confirmed ones was journaled but cut before the display.
        assert set(ids) <= {c[1] for c in codes}
    finally:
        kiosk.stop()


def test_network_flapping_for_a_minute_delivers_all_exactly_once_in_order(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess]
) -> None:
    broker, backend = stack
    codes = certificates(150, seed=47)
    with FaultProxy(broker.port) as proxy:
        kiosk = make_kiosk(tmp_path, proxy.port).start()
        try:
            kiosk.wait_ready()
            proxy.flap(up_s=3.0, down_s=2.0, mode="blackhole", duration_s=60)
            deadline = time.monotonic() + 60
            i = 0
            while time.monotonic() < deadline:
                if i < len(codes):
                    scan_all(kiosk, codes[i:i + 5], window=5)
                    i += 5
                else:
                    time.sleep(0.5)
            proxy.wait_flapping_done(10)
            assert proxy.drops >= 10
            rows = wait_backend(backend.url, len(codes), timeout=60)
            assert_exactly_once_in_order(rows, [c[1] for c in codes])
            assert kiosk.alive()
        finally:
            kiosk.stop()


def test_garbage_on_the_scanner_line_keeps_the_kiosk_working_with_a_flat_heap(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess]
) -> None:
    import paho.mqtt.client as mqtt

    from simulator.broker import BRIDGE_USER

    broker, backend = stack
    replies: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="res-operator")
    client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    client.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"kiosk/{DEVICE}/cmd/result", 1)
    client.loop_start()

    def heap(tag: str) -> dict[str, Any]:
        n = len(replies)
        client.publish(f"kiosk/{DEVICE}/cmd", json.dumps({"v": 1, "id": tag, "cmd": "status"}), 1)
        wait_for(lambda: len(replies) > n, timeout=20, what="status reply")
        r = replies[-1]
        assert r["ok"] and r["id"] == tag
        return dict(r["result"])

    kiosk = make_kiosk(tmp_path, broker.port).start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: "mqtt: connected" in kiosk.console(), what="session up")
        rng = random.Random(5)
        garbage = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 60)))
                   .replace(b"\r", b"") for _ in range(10000)]
        first = heap("h0")
        assert kiosk.scanner is not None
        for i in range(0, 10000, 500):
            kiosk.scanner.write_raw(b"".join(g + b"\r" for g in garbage[i:i + 500]))
            if i == 4500:
                mid = heap("h1")
        wait_for(lambda: heap("h2")["unreadable"] >= 9000, timeout=60, what="garbage counted")
        last = heap("h3")
        # Still working: a real code after all that is admitted and delivered.
        code = certificates(1, seed=53)[0]
        kiosk.scanner.scan(code[0])
        rows = wait_backend(backend.url, 1, timeout=30)
        assert rows[-1]["id"] == code[1]
        # Heap flat: what is live after a collection did not grow with the garbage.
        assert last["heap_free"] > mid["heap_free"] - 4096, (first, mid, last)
        assert last["heap_free"] > first["heap_free"] - 4096, (first, mid, last)
        assert last["errors"] == 0
    finally:
        kiosk.stop()
        client.loop_stop()
        client.disconnect()


def test_whole_workload_fits_128_kb_of_heap_beside_the_code(tmp_path: Path) -> None:
    """Every code type, garbage, the MQTT session with a broker restart, the
    journal, telemetry and a status command, under `micropython -X heapsize`
    = the firmware's own bytecode + 128 KB. On the unix port all bytecode sits
    on the heap (~110 KB resident, 64-bit objects; boot-only and rare modules
    are unloaded after use, kiosk/__init__.py unload); an ESP32 image freezes
    it into flash, so 128 KB beside the code is the device's budget for data.
    (A literal 128k does not hold the unix port's code and its fragmentation:
    simulator/bench_resilience.py measures the smallest heap.)"""
    from simulator.bench_resilience import code_heap_bytes, soak
    from simulator.kiosk import FIRMWARE_DIR

    heap_kb = code_heap_bytes(FIRMWARE_DIR) // 1024 + 128
    status = soak(tmp_path, f"{heap_kb}k")
    assert status is not None, "the soak failed under a 128 KB data heap"
    assert status["errors"] == 0 and status["unreadable"] >= 3


def _operator(port: int) -> tuple[Any, list[dict[str, Any]]]:
    import paho.mqtt.client as mqtt

    from simulator.broker import BRIDGE_USER

    replies: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="res-operator-2")
    client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    client.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    client.connect("127.0.0.1", port)
    client.subscribe(f"kiosk/{DEVICE}/cmd/result", 1)
    client.loop_start()
    return client, replies


def test_hung_loop_is_reset_by_the_watchdog_and_a_crash_loop_ends_in_safe_mode(
    tmp_path: Path, broker: Broker
) -> None:
    from simulator.kiosk import EXIT_WATCHDOG

    broker.add_account(DEVICE, PASSWORD)
    broker.restart()
    kiosk = make_kiosk(tmp_path, broker.port,
                       env={"KIOSK_SIM_WDT_MS": "1000", "KIOSK_SIM_STALL_AFTER_MS": "700"})
    for _ in range(3):
        kiosk.start()
        assert kiosk.proc is not None
        assert kiosk.proc.wait(20) == EXIT_WATCHDOG  # the emulated watchdog reset it
        kiosk.stop()
    kiosk.env = {}
    kiosk.start()
    try:
        wait_for(lambda: kiosk.display.poll() is not None and any(
            e["lines"][1].startswith("SAFE MODE") for e in kiosk.display.events),
            what="safe mode on the display")
        assert "safe mode: 3 crashes in a row" in kiosk.console()
        code = certificates(1, seed=59)[0]
        before = len(kiosk.display.verdicts())
        assert kiosk.scanner is not None
        kiosk.scanner.scan(code[0])  # still scans, decides and journals
        wait_for(lambda: len(kiosk.display.verdicts()) > before, what="verdict in safe mode")
        assert pending_in(str(kiosk.state_dir / "journal")) == [1]  # journaled (no bridge here)
    finally:
        kiosk.stop()


def test_reboot_command_restarts_the_kiosk_and_telemetry_names_the_reset(
    tmp_path: Path, broker: Broker
) -> None:
    from simulator.kiosk import EXIT_RESET

    broker.add_account(DEVICE, PASSWORD)
    broker.restart()
    client, replies = _operator(broker.port)
    kiosk = make_kiosk(tmp_path, broker.port).start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: "mqtt: connected" in kiosk.console(), what="session up")
        client.publish(f"kiosk/{DEVICE}/cmd", json.dumps({"v": 1, "id": "r1", "cmd": "reboot"}), 1)
        assert kiosk.proc is not None
        assert kiosk.proc.wait(20) == EXIT_RESET
        assert replies and replies[0] == {"v": 1, "id": "r1", "ok": True,
                                          "result": {"rebooting": True}}
        kiosk.stop()
        kiosk.start()
        wait_for(lambda: kiosk.console().count("mqtt: connected") >= 2, what="back")
        n = len(replies)
        client.publish(f"kiosk/{DEVICE}/cmd", json.dumps({"v": 1, "id": "s1", "cmd": "status"}), 1)
        wait_for(lambda: len(replies) > n, what="status after the reboot")
        assert replies[-1]["result"]["reset"] == "soft"
        assert replies[-1]["result"]["boot"] == 2
        # The self-test runs on the live kiosk too (kiosk/selftest.py), answered on cmd/result.
        n = len(replies)
        client.publish(f"kiosk/{DEVICE}/cmd", json.dumps({"v": 1, "id": "t1", "cmd": "selftest"}),
                       1)
        wait_for(lambda: len(replies) > n, timeout=20, what="self-test report")
        report = replies[-1]
        assert report["id"] == "t1" and isinstance(report["ok"], bool)
        names = [c[0] for c in report["result"]["checks"]]
        assert "journal" in names and "broker" in names and "scanner" not in names
        assert kiosk.alive()
    finally:
        kiosk.stop()
        client.loop_stop()
        client.disconnect()


def _fill_journal(kiosk: VirtualKiosk, max_bytes: int) -> int:
    """Fill the kiosk's journal on disk with the firmware's own code (CPython)."""
    from kiosk.journal import Journal
    from kiosk.version import VERSION

    j = Journal(str(kiosk.state_dir / "journal"), (DEVICE, VENUE, "A", VERSION), max_bytes)
    n = 0
    while j.add("cccd", f"{79201000000 + n:012d}", "pass", "verified", None, 1764090000):
        n += 1
    j.close()
    return n


@pytest.mark.parametrize("when_full", ["refuse", "admit"])
def test_full_journal_follows_the_policy_and_says_so(
    tmp_path: Path, broker: Broker, when_full: str
) -> None:
    broker.add_account(DEVICE, PASSWORD)
    broker.restart()
    client, replies = _operator(broker.port)
    kiosk = make_kiosk(tmp_path, broker.port)
    kiosk.config["journal"] = {"max_bytes": 65536, "when_full": when_full}
    kiosk.state_dir.mkdir(parents=True, exist_ok=True)
    stored = _fill_journal(kiosk, 65536)  # nobody acknowledges: no bridge here
    kiosk.start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: "mqtt: connected" in kiosk.console(), what="session up")
        code = certificates(1, seed=61)[0]
        before = len(kiosk.display.verdicts())
        assert kiosk.scanner is not None
        kiosk.scanner.scan(code[0])
        wait_for(lambda: len(kiosk.display.verdicts()) > before, what="an answer")
        shown = kiosk.display.verdicts()[-1]
        client.publish(f"kiosk/{DEVICE}/cmd", json.dumps({"v": 1, "id": "f1", "cmd": "status"}), 1)
        wait_for(lambda: replies, what="status")
        status = replies[-1]["result"]
        assert status["journal_full"] is True and status["journal"] == stored
        if when_full == "refuse":
            assert shown["lines"] == ["KHONG GHI DUOC  ", "Bo nho day      "]
            assert shown["led"] == "red" and status["unrecorded"] == 0
        else:
            assert shown["led"] == "green" and status["unrecorded"] == 1
        assert pending_in(str(kiosk.state_dir / "journal"))[-1] == stored  # nothing added
    finally:
        kiosk.stop()
        client.loop_stop()
        client.disconnect()


class SntpServer:
    """Answers SNTP requests on 127.0.0.1 with the host's time (or stays silent)."""

    def __init__(self, answer: bool = True) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import struct

        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(64)
            except OSError:
                continue
            self.requests += 1
            if not self.answer or len(data) < 48:
                continue
            reply = bytearray(48)
            reply[0], reply[1] = 0x24, 2  # version 4, server; stratum 2
            reply[24:32] = data[40:48]
            reply[40:44] = struct.pack("!I", int(time.time()) + 2208988800)
            self.sock.sendto(bytes(reply), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_check_ins_before_the_clock_is_set_get_exact_or_estimated_times(
    tmp_path: Path, stack: tuple[Broker, ServiceProcess]
) -> None:
    broker, backend = stack
    silent = SntpServer(answer=False)
    codes = certificates(3, seed=67)
    kiosk = make_kiosk(tmp_path, broker.port, env={"KIOSK_RTC": "unset"})
    kiosk.config["ntp"] = [f"127.0.0.1:{silent.port}"]
    try:
        # Boot 1 never learns the time: its check-ins wait in the journal.
        kiosk.start()
        kiosk.wait_ready()
        scan_all(kiosk, codes[:2])
        wait_for(lambda: silent.requests >= 1, what="an SNTP request")
        assert backend_rows(backend.url) == []  # never sent with a bogus date
        kiosk.stop(kill=True)
        # Boot 2 gets an answer: boot 1's check-ins go out estimated, its own exact.
        server = SntpServer()
        kiosk.config["ntp"] = [f"127.0.0.1:{server.port}"]
        t0 = int(time.time())
        kiosk.start()
        kiosk.wait_ready()
        scan_all(kiosk, codes[2:])
        rows = wait_backend(backend.url, 3, timeout=30)
        t1 = int(time.time())
        by_id = {r["id"]: r for r in rows}
        for ident in (codes[0][1], codes[1][1]):
            assert by_id[ident]["clock"] == "estimated"
            assert t0 - 60 <= by_id[ident]["ts"] <= t1
        own = by_id[codes[2][1]]
        assert own.get("clock", "ntp") == "ntp" and t0 - 2 <= own["ts"] <= t1 + 2
        server.close()
    finally:
        kiosk.stop()
        silent.close()


def test_wifi_loss_reported_by_the_board_drops_the_session_at_once(
    tmp_path: Path, broker: Broker
) -> None:
    import paho.mqtt.client as mqtt

    from simulator.broker import BRIDGE_USER

    broker.add_account(DEVICE, PASSWORD)
    broker.restart()
    status: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="res-status")
    client.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    client.on_message = lambda c, u, m: status.append(m.payload)
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"kiosk/{DEVICE}/status", 1)
    client.loop_start()
    kiosk = make_kiosk(tmp_path, broker.port).start()
    try:
        kiosk.wait_ready()
        wait_for(lambda: status[-1:] == [b"online"], what="online")
        (kiosk.state_dir / "net.down").touch()  # the board says: no Wi-Fi
        wait_for(lambda: "mqtt: down: wifi lost" in kiosk.console(), what="drop noticed")
        wait_for(lambda: status[-1:] == [b"offline"], what="will published")  # not 1.5x keepalive
        code = certificates(1, seed=71)[0]
        before = len(kiosk.display.verdicts())
        assert kiosk.scanner is not None
        kiosk.scanner.scan(code[0])  # scanning goes on without a network
        wait_for(lambda: len(kiosk.display.verdicts()) > before, what="verdict offline")
        (kiosk.state_dir / "net.down").unlink()
        wait_for(lambda: status[-1:] == [b"online"], timeout=15, what="back online")
    finally:
        kiosk.stop()
        client.loop_stop()
        client.disconnect()


_LARGE_DOCUMENT_SCRIPT = """
import gc, sys
from kiosk import fleet
class Board:
    def path(self, name):
        return sys.argv[1] + "/" + name
f = fleet.Fleet(Board(), {"operator_key": sys.argv[2]})
with open(sys.argv[1] + "/large.jws", "rb") as fh:
    text = fh.read()
gc.collect()
ballast = bytearray(gc.mem_free() - int(sys.argv[3]) - 64)  # leaves the budget free
print("free", gc.mem_free())
print("result", f.apply("trust", text, 1764090000, store=False), len(f.trust or ()))
"""


def test_a_trust_list_near_the_16_kib_limit_is_taken_with_64_kb_of_heap_free(
        tmp_path: Path) -> None:
    """Fleet documents may be up to 16 KiB (docs/protocol.md). Verifying and
    taking one works on its bytes through memoryviews (kiosk/docs.py), so the
    largest trust list is taken with 64 KB of heap free beside the code, the
    verifier's own code
    included (loaded for the document, unloaded after it). It needed ~75 KB
    when every stage copied the text. The mpy-cross bundle, as deployed."""
    import subprocess

    from host_tools.build import build
    from simulator.codes import sample_signers, test_pki
    from simulator.kiosk import micropython_binary

    signers = list(sample_signers())
    text = test_pki().trust_document(signers, 1)
    n = 1
    while True:
        try:
            bigger = test_pki().trust_document(signers * (n + 1), 1)
        except ValueError:  # over the 16 KiB limit
            break
        text, n = bigger, n + 1
    assert len(text) > 12000
    (tmp_path / "large.jws").write_text(text)
    bundle = build().save(tmp_path / "bundle")
    out = subprocess.run(
        [micropython_binary(), "-c", _LARGE_DOCUMENT_SCRIPT, str(tmp_path),
         SampleFactory.operator_key_b64(), str(64 * 1024)],
        capture_output=True, text=True, timeout=120, cwd=bundle,
        env={"MICROPYPATH": f"{bundle}:.frozen"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"result None {len(signers) * n}" in out.stdout, out.stdout
