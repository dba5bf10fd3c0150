"""kioskctl against virtual devices, for real through mpremote.

A virtual device (simulator/device.py) is the MicroPython unix port behind a
pseudo-terminal, with a board's life cycle: the app runs at power-on, ctrl-C
drops to the REPL, a soft reset runs /main.py again. kioskctl deploys the
bundle, provisions the kiosk and runs its self-test over that serial port;
the kiosk then checks in through a real Mosquitto, the bridge spools it and
the backend emulator holds it. Batch mode drives several devices at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from conftest import BRIDGE_PASSWORD, wait_for
from fixtures_services import backend_checkins

from host_tools.build import MANIFEST
from simulator.broker import Broker
from simulator.codes import SampleFactory
from simulator.device import VirtualDevice
from simulator.stack import ServiceProcess, start_bridge

VENUE = "HCM-Q1-000777"
ROOT = Path(__file__).resolve().parent.parent


def kioskctl(*args: str, env: dict[str, str] | None = None,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def one_line_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with one line on stderr, naming the problem, and no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "fw"
    proc = kioskctl("build", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def device(tmp_path: Path) -> Iterator[VirtualDevice]:
    dev = VirtualDevice(tmp_path / "flash").start()
    try:
        yield dev
    finally:
        dev.stop()


def provision_args(dev: VirtualDevice, device_id: str, broker_port: int, fleet: Path,
                   *extra: str) -> list[str]:
    return ["provision", "--port", dev.port, "--device", device_id, "--gate", "A",
            "--venue", VENUE, "--broker", f"127.0.0.1:{broker_port}", "--no-tls", "--no-ntp",
            "--fleet", str(fleet), *extra]


def test_deploy_provision_selftest_then_the_kiosk_checks_in(
        tmp_path: Path, bundle: Path, device: VirtualDevice, broker: Broker,
        backend: ServiceProcess) -> None:
    device_id = "kiosk-vd-0001"
    password = "vd-secret-1"
    broker.add_account(device_id, password)
    broker.restart()
    bridge = start_bridge(tmp_path / "bridge", broker.port, BRIDGE_PASSWORD, backend.url)
    try:
        # A bare board: deploy copies every file, then the app starts and names what it lacks.
        first = kioskctl("deploy", "--port", device.port, "--bundle", str(bundle))
        assert first.returncode == 0, first.stderr
        manifest = json.loads((bundle / MANIFEST).read_text())
        count = len(manifest["files"])
        assert f"{count} files copied, 0 unchanged" in first.stdout
        assert "refuses its config" in first.stdout
        for name, meta in manifest["files"].items():
            on_device = (device.root / name).read_bytes()
            assert hashlib.sha256(on_device).hexdigest() == meta["sha256"], name

        # Again: nothing changed, nothing copied. One changed file: only that one.
        again = kioskctl("deploy", "--port", device.port, "--bundle", str(bundle))
        assert f"0 files copied, {count} unchanged" in again.stdout, again.stdout + again.stderr
        (device.root / "kiosk" / "ui.mpy").write_bytes(b"damaged")
        repair = kioskctl("deploy", "--port", device.port, "--bundle", str(bundle),
                          "--no-restart")
        assert f"1 files copied, {count - 1} unchanged" in repair.stdout, repair.stderr

        # Provision: identity and config onto the board, registered in the fleet registry.
        fleet = tmp_path / "fleet"
        prov = kioskctl(*provision_args(device, device_id, broker.port, fleet),
                        env={"KIOSKCTL_BROKER_PASSWORD": password})
        assert prov.returncode == 0, prov.stderr
        assert "app running" in prov.stdout, prov.stdout
        assert password not in prov.stdout + prov.stderr  # secrets never printed
        cfg = json.loads((device.root / "config.json").read_text())
        assert cfg["device"] == device_id and cfg["broker"]["port"] == broker.port
        registry = json.loads((fleet / "fleet.json").read_text())
        entry = registry["devices"][device_id]
        assert entry["venue"] == VENUE and entry["fw"] == manifest["version"]
        assert password not in (fleet / "fleet.json").read_text()
        salt = entry["mqtt_password_hash"].split("$")[3]
        import base64

        from host_tools.fleet import mosquitto_hash
        assert mosquitto_hash(password, base64.b64decode(salt)) == entry["mqtt_password_hash"]

        # Self-test through the REPL: a report a technician acts on, then the app runs again.
        test = kioskctl("selftest", "--port", device.port)
        table = test.stdout
        for check in ("config", "clock", "journal", "display", "scanner", "broker"):
            assert check in table
        assert "answers" in table, table  # the virtual GM65 answered its command protocol
        assert f"TCP connect to 127.0.0.1:{broker.port}" in table
        # No operator key was given: the one failing check, said plainly.
        failure = one_line_failure(test, "self-test FAILED", "operator_key")
        assert "broker" not in failure
        shown = [json.loads(line) for line in
                 (device.root / "display.jsonl").read_text().splitlines()]
        assert {"red", "green", "blue", "amber"} <= {s["led"] for s in shown}

        # The provisioned kiosk checks in: scanner -> Mosquitto -> bridge -> backend.
        wait_for(lambda: idle_after_selftest(device), timeout=20,
                 what="the app back at its idle screen after the self-test")
        sample = SampleFactory(seed=6).cccd(True)
        assert device.scanner is not None
        device.scanner.scan(sample.payload)
        stored = wait_for(lambda: backend_checkins(backend.url, venue=VENUE), timeout=30,
                          what=f"the check-in at the backend; console:\n{device.console()[-3000:]}")
        assert stored[0]["device"] == device_id and stored[0]["gate"] == "A"
    finally:
        bridge.stop()


def idle_after_selftest(dev: VirtualDevice) -> bool:
    """The kiosk shows its idle screen again after the self-test's last screen."""
    screens = [json.loads(line)["lines"][0] for line in
               (dev.root / "display.jsonl").read_text().splitlines()]
    done = [i for i, s in enumerate(screens) if s.startswith("TEST XONG")]
    return bool(done) and any(s.startswith("MOI QUET MA QR") for s in screens[done[-1]:])


def test_technician_failures_are_one_line(tmp_path: Path, bundle: Path,
                                          device: VirtualDevice) -> None:
    fleet = tmp_path / "fleet"
    # Missing config field: refused before anything is written.
    missing = kioskctl("provision", "--port", device.port, "--device", "kiosk-vd-0002",
                       "--gate", "A", "--broker", "127.0.0.1:1883", "--no-tls",
                       "--fleet", str(fleet))
    one_line_failure(missing, "venue")
    assert not (device.root / "config.json").exists()
    assert not (fleet / "fleet.json").exists()

    # Self-test on a board without the app: says to deploy first.
    bare = kioskctl("selftest", "--port", device.port, "--no-restart")
    one_line_failure(bare, "deploy")

    # Busy port: another program holds it.
    holder = serial.Serial(device.port, 115200, exclusive=True)
    try:
        one_line_failure(kioskctl("deploy", "--port", device.port, "--bundle", str(bundle)),
                         "busy")
    finally:
        holder.close()

    # Unplugged board: the port is gone.
    port = device.port
    device.stop()
    one_line_failure(kioskctl("deploy", "--port", port, "--bundle", str(bundle)),
                     "no device on", "plugged in")

    # A port where nothing answers (no MicroPython on the board).
    import os

    master, slave = os.openpty()
    try:
        silent = os.ttyname(slave)
        one_line_failure(kioskctl("deploy", "--port", silent, "--bundle", str(bundle)),
                         "no MicroPython REPL answered")
    finally:
        os.close(master)
        os.close(slave)

    # A bundle for another MicroPython (.mpy format) than the board's.
    old = tmp_path / "old-bundle"
    shutil.copytree(bundle, old)
    manifest = json.loads((old / MANIFEST).read_text())
    manifest["mpy"] = "5.0"
    (old / MANIFEST).write_text(json.dumps(manifest))
    other = VirtualDevice(tmp_path / "flash-other").start()
    try:
        one_line_failure(kioskctl("deploy", "--port", other.port, "--bundle", str(old)),
                         "the bundle is v5.0", "flash a current MicroPython")
        assert not (other.root / "main.py").exists()
    finally:
        other.stop()

    # No port at all, and a bundle that is not one.
    one_line_failure(kioskctl("deploy", "--bundle", str(bundle)), "no port given")
    one_line_failure(kioskctl("deploy", "--port", port, "--bundle", str(tmp_path)),
                     "not a bundle")


def test_batch_deploy_and_provision_in_parallel(tmp_path: Path, bundle: Path) -> None:
    devices = [VirtualDevice(tmp_path / f"flash{i}").start() for i in range(3)]
    try:
        ports = [arg for d in devices for arg in ("--port", d.port)]
        gone = devices[2].port
        devices[2].stop()  # one board unplugged: the others still get done
        deploy = kioskctl("deploy", *ports, "--bundle", str(bundle), "--no-restart")
        assert deploy.returncode == 1, deploy.stdout + deploy.stderr
        assert "2 of 3 boards ok" in deploy.stdout, deploy.stdout + deploy.stderr
        assert f"FAIL {gone}: no device on {gone}" in deploy.stdout
        assert deploy.stderr.strip() == "kioskctl deploy: 1 of 3 boards failed"
        assert "Traceback" not in deploy.stdout + deploy.stderr

        fleet = tmp_path / "fleet"
        live = [a for d in devices[:2] for a in ("--port", d.port)]
        prov = kioskctl("provision", *live, "--device", "kiosk-b-{n:03d}", "--first", "7",
                        "--gate", "B", "--venue", VENUE, "--broker", "127.0.0.1:1883",
                        "--no-tls", "--no-ntp", "--fleet", str(fleet), "--no-restart")
        assert prov.returncode == 0, prov.stdout + prov.stderr
        assert "2 of 2 boards ok" in prov.stdout
        registry = json.loads((fleet / "fleet.json").read_text())
        assert sorted(registry["devices"]) == ["kiosk-b-007", "kiosk-b-008"]
        ids = {json.loads((d.root / "config.json").read_text())["device"] for d in devices[:2]}
        assert ids == {"kiosk-b-007", "kiosk-b-008"}
    finally:
        for d in devices:
            d.stop()


def test_monitor_timestamps_and_decodes_levels(tmp_path: Path) -> None:
    from host_tools.monitor import decode

    assert decode("Traceback (most recent call last):")[0] == "ERROR"
    assert decode("hello")[0] == ""
    root = tmp_path / "flash"
    root.mkdir()
    # An app that logs at every level, as kiosk/log.py formats lines.
    (root / "main.py").write_text(
        "import time\nwhile True:\n    print('I app: tick')\n    print('W mqtt: down: x')\n"
        "    print('E config: venue: missing')\n    time.sleep(0.1)\n")
    with VirtualDevice(root) as dev:
        proc = kioskctl("monitor", "--port", dev.port, "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()[1:]
    assert lines, proc.stdout
    for line in lines:
        stamp, level = line[:12], line[13:18].strip()
        assert stamp[2] == ":" and stamp[5] == ":" and stamp[8] == ".", line
        assert level in ("INFO", "WARN", "ERROR"), line
    assert any("WARN  mqtt: down: x" in line for line in lines)
    assert any("ERROR config: venue: missing" in line for line in lines)


def _resets(dev: VirtualDevice) -> int:
    """Watchdog resets the device's console shows (an ESP32's ROM line)."""
    return dev.console().count("rst:0x7 (TG0WDT_SYS_RESET)")


def _kiosk_with_watchdog(tmp_path: Path, bundle: Path, device_id: str, wdt_ms: int,
                         maint_ms: int) -> VirtualDevice:
    """A virtual device with short watchdog and maintenance timers, deployed and
    provisioned, its app at the idle screen (so its watchdog is running). No broker
    listens on port 9: the app runs, and feeds its watchdog, without one."""
    dev = VirtualDevice(tmp_path / "flash", env={"KIOSK_SIM_WDT_MS": str(wdt_ms),
                                                 "KIOSK_SIM_MAINT_MS": str(maint_ms)}).start()
    try:
        assert kioskctl("deploy", "--port", dev.port, "--bundle", str(bundle),
                        "--no-restart").returncode == 0
        prov = kioskctl(*provision_args(dev, device_id, 9, tmp_path / "fleet"))
        assert "app running" in prov.stdout, prov.stdout + prov.stderr
        wait_for(lambda: "MOI QUET MA QR" in (dev.root / "display.jsonl").read_text(),
                 what="the app at its idle screen, its watchdog started")
    except BaseException:
        dev.stop()
        raise
    return dev


def test_a_technicians_session_outlasts_the_watchdog_and_a_forgotten_one_ends(
        tmp_path: Path, bundle: Path) -> None:
    """ctrl-C from kioskctl/mpremote opens a maintenance window: the board feeds the
    watchdog it cannot stop, a restart ends the window, and a kiosk left at the REPL
    is reset into the app by the watchdog when the window is over."""
    import time

    from host_tools.repl import Board
    from host_tools.selftest import run_selftest

    wdt_s, window_s = 1.5, 6.0  # the kiosk's are 8 s and 10 minutes
    dev = _kiosk_with_watchdog(tmp_path, bundle, "kiosk-wd-0001", wdt_ms=1500, maint_ms=6000)
    try:
        # A session much longer than the watchdog's timeout: self-test, commands, deploy.
        started = time.monotonic()
        test = kioskctl("selftest", "--port", dev.port, "--no-restart", timeout=30)
        assert "self-test" in test.stdout + test.stderr
        with Board.connect(dev.port) as board:
            assert run_selftest(board)["checks"]
            while time.monotonic() - started < 3 * wdt_s:
                assert board.exec("print(6 * 7)").strip() == "42"
        again = kioskctl("deploy", "--port", dev.port, "--bundle", str(bundle))
        assert "0 files copied" in again.stdout and "app running" in again.stdout, again.stdout
        assert _resets(dev) == 0, dev.console()[-2000:]
        shown = (dev.root / "display.jsonl").read_text()
        assert '"BAO TRI' in shown and "stopped (ctrl-C) for maintenance" in dev.console()

        # The restart ended the window; the app feeds the watchdog again.
        restarted = time.monotonic()
        assert not wait_until(lambda: _resets(dev) > 0, 3 * wdt_s), dev.console()[-2000:]
        assert time.monotonic() - restarted >= 3 * wdt_s

        # A technician who walks away from the REPL: the watchdog brings the app back.
        with Board.connect(dev.port) as board:
            interrupted = time.monotonic()
            assert board.exec("print(6 * 7)").strip() == "42"
        wait_for(lambda: _resets(dev) == 1, timeout=window_s + wdt_s + 15,
                 what="the watchdog reset after the maintenance window")
        assert time.monotonic() - interrupted >= window_s  # not before the window ended
        wait_for(lambda: "started after a maintenance reset" in dev.console(), timeout=15,
                 what="the app again, and why it restarted")
    finally:
        dev.stop()


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """True as soon as condition() is; False if it stayed false for `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _interpreter(dev: VirtualDevice) -> int:
    """The pid of the device's MicroPython process (the app, or the REPL)."""
    assert dev.proc is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == dev.proc.pid:
            return int(entry.name)
    raise AssertionError(f"no MicroPython process under the device {dev.proc.pid}")


def test_a_board_that_hangs_and_resets_mid_selftest_ends_it_with_one_line(
        tmp_path: Path, bundle: Path) -> None:
    """The board hangs in the middle of `kioskctl selftest` and its watchdog resets it
    (the console shows the ESP-ROM rst: line, then the app boots and keeps printing):
    kioskctl ends at once with one line saying so, never a traceback, never a hang."""
    import os
    import signal
    import time

    # Short timers: the watchdog resets 3 s after ctrl-C, the maintenance window over at once.
    dev = _kiosk_with_watchdog(tmp_path, bundle, "kiosk-rst-0001", wdt_ms=3000, maint_ms=1)
    try:
        display = dev.root / "display.jsonl"
        test = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "selftest", "--port",
                                 dev.port], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: "TEST HIEN THI" in display.read_text(), timeout=10,
                     what="the self-test's display pattern")
            os.kill(_interpreter(dev), signal.SIGSTOP)  # the board hangs mid-self-test
            hung = time.monotonic()
            stdout, stderr = test.communicate(timeout=30)
        finally:
            if test.poll() is None:
                test.kill()
                test.wait()
        ended = time.monotonic() - hung
        assert _resets(dev) == 1, dev.console()[-2000:]
        proc = subprocess.CompletedProcess(test.args, test.returncode, stdout, stderr)
        line = one_line_failure(proc, "the board reset during the self-test",
                                "check power and cable", "nothing was changed")
        assert line.startswith(f"kioskctl selftest: {dev.port}: "), line
        assert stdout.strip() == "", stdout  # no report table: there was no report
        assert ended < 3.0 + 5.0, ended  # the watchdog's 3 s, then the reset is seen at once
    finally:
        dev.stop()


def test_a_board_that_stops_answering_or_keeps_printing_meets_a_deadline(
        device: VirtualDevice) -> None:
    """A command's deadline is overall: a silent board and one that never stops
    printing both end the command with one line, in about the deadline."""
    import os
    import signal
    import time

    from host_tools.errors import Failure
    from host_tools.repl import Board

    with Board.connect(device.port) as board:
        started = time.monotonic()
        with pytest.raises(Failure) as busy:
            # A boot log that goes on for longer than the deadline (then ends, for the next
            # connection not to wait behind a backlog).
            board.exec("import time\nt = time.ticks_ms()\n"
                       "while time.ticks_diff(time.ticks_ms(), t) < 3500:\n"
                       "    print('boot log line')\n    time.sleep_ms(20)\n", timeout=2.0)
        assert time.monotonic() - started < 2.0 + 1.0
    assert "did not finish within 2 s (the board kept printing" in str(busy.value)

    with Board.connect(device.port) as board:
        os.kill(_interpreter(device), signal.SIGSTOP)  # the board hangs
        started = time.monotonic()
        with pytest.raises(Failure) as silent:
            board.exec("print(6 * 7)", timeout=2.0, what="the test", changes=False)
        assert time.monotonic() - started < 2.0 + 1.0
    assert str(silent.value) == (f"{device.port}: the board stopped answering during the test "
                                 "(check power and cable), nothing was changed")
