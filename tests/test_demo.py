"""`kiosk-sim demo` as a newcomer runs it: check-ins flow, and it leaves nothing behind."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for

pytestmark = pytest.mark.e2e


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


def test_demo_shows_checkins_flowing_and_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "demo", "--plain", "--duration", "8",
         "--interval", "0.3", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # Every kiosk answered scans, with every kind of answer somewhere in the stream.
    for device in ("kiosk-q1-0001", "kiosk-q3-0002", "kiosk-bus-0093"):
        assert re.search(rf"{device} +green +HOP LE - MOI VAO", out), device
    assert "KHONG DOC DUOC" in out or "KHONG HOP LE" in out
    received = int(re.search(r"The backend received (\d+) check-ins", out)[1])  # type: ignore[index]
    assert received > 0
    # Nothing it started is still running.
    assert processes_mentioning(str(state)) == []


def test_demo_rejects_a_bad_duration() -> None:
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "demo", "--duration", "-1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--duration must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def start_demo_until_first_checkin(state: Path) -> subprocess.Popen[str]:
    """Start the demo and return once it has shown a pass (everything is running)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "demo", "--plain", "--interval", "0.3",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "HOP LE" not in seen:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no check-in shown within 60 s:\n{seen}")
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"demo exited early:\n{seen}")
            seen += line
    assert processes_mentioning(str(state))  # broker, backend, bridge, kiosks running
    return proc


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM],
                         ids=["ctrl-c", "terminal-closed", "kill"])
def test_stopping_the_demo_stops_every_process_it_started(
    tmp_path: Path, how: signal.Signals
) -> None:
    state = tmp_path / "demo-state"
    proc = start_demo_until_first_checkin(state)
    try:
        proc.send_signal(how)
        # Generous: this asserts that everything stops, not how fast (see make bench).
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
        assert "stopped kiosks, bridge, backend and broker" in out
        assert processes_mentioning(str(state)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_even_a_killed_demo_leaves_nothing_behind(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    proc = start_demo_until_first_checkin(state)
    proc.kill()  # SIGKILL: no cleanup code runs in the demo itself
    proc.wait()
    wait_for(lambda: processes_mentioning(str(state)) == [], timeout=60,
             what="the demo's children to follow their parent")
