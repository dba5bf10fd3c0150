"""Serial ports: which ones have an ESP32 board behind them, and which to work on."""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass

from serial.tools import list_ports

from host_tools.errors import Failure

# USB VID:PID of the USB-serial bridges found on ESP32 boards, and the chip
# family when the id tells it (the native USB ids are the chip's own).
KNOWN_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "CP210x (ESP32 DevKitC and most ESP32 boards)",
    (0x1A86, 0x7523): "CH340 (ESP32 boards)",
    (0x1A86, 0x55D4): "CH9102 (ESP32 boards)",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232 (ESP-Prog, ESP-WROVER-KIT)",
    (0x303A, 0x1001): "ESP32-S3/C3/C6 native USB (USB-Serial/JTAG)",
    (0x303A, 0x0002): "ESP32-S2 native USB",
}


def describe(vid: int | None, pid: int | None) -> str:
    """What a port's USB ids say about the board behind it ('' if nothing)."""
    if vid is None or pid is None:
        return ""
    return KNOWN_BRIDGES.get((vid, pid), "")


@dataclass(frozen=True)
class Port:
    device: str
    ids: str  # "vid:pid" or "-"
    description: str
    known: str  # the ESP32 bridge recognised, or ""


def list_serial_ports() -> list[Port]:
    found = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "-"
        found.append(Port(p.device, ids, p.description or "", describe(p.vid, p.pid)))
    return found


def select_ports(ports: list[str] | None, all_boards: bool, match: str | None) -> list[str]:
    """The ports a command works on: given ones, every ESP32 board (--all), or a glob (--match).

    At least one port, else a Failure saying how to find one.
    """
    chosen: list[str] = list(ports or [])
    if match:
        hits = sorted(set(glob.glob(match)) | {
            p.device for p in list_serial_ports() if fnmatch.fnmatch(p.device, match)})
        if not hits:
            raise Failure(f"no serial port matches {match!r}")
        chosen += hits
    if all_boards:
        boards = [p.device for p in list_serial_ports() if p.known]
        if not boards:
            raise Failure("no ESP32 board found on any serial port: check the USB cable "
                          "(a charge-only cable shows no port); `kioskctl ports --all` lists all")
        chosen += boards
    if not chosen:
        raise Failure("no port given: use --port PORT (see `kioskctl ports`) or --all")
    return list(dict.fromkeys(chosen))  # order kept, duplicates dropped
