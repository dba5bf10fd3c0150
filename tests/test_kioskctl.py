"""`kioskctl` (technicians' tool): clear answers, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from host_tools.cli import describe


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_esp32_usb_serial_bridges_are_recognised() -> None:
    assert "CP210x" in describe(0x10C4, 0xEA60)
    assert "CH340" in describe(0x1A86, 0x7523)
    assert "native USB" in describe(0x303A, 0x1001)
    assert describe(0x1234, 0x5678) == ""
    assert describe(None, None) == ""


def test_ports_without_a_board_says_so_plainly() -> None:
    # This machine has no ESP32 attached.
    proc = run("ports")
    assert proc.returncode == 1
    assert "no ESP32 USB-serial bridge found" in proc.stdout or "no serial ports" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
