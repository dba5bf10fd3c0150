"""`kioskctl`: the technicians' tool.

    kioskctl ports      serial ports, with the USB-serial bridges ESP32 boards use recognised

Flashing, provisioning, deployment and self-test come with the technicians'
tools issue; this version lists ports so a technician can find the board.
"""

from __future__ import annotations

import argparse
import sys

from serial.tools import list_ports

from host_tools import __version__

# USB VID:PID of the USB-serial bridges found on ESP32 boards.
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


def cmd_ports(args: argparse.Namespace) -> int:
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        print("no serial ports found: is the board plugged in with a data (not charge-only) cable?")
        return 1
    for p in ports:
        ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "-"
        known = describe(p.vid, p.pid)
        if args.all or known:
            print(f"{p.device:20} {ids:10} {known or p.description}")
    if not args.all and not any(describe(p.vid, p.pid) for p in ports):
        print("no ESP32 USB-serial bridge found (use --all to list every port)")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kioskctl", description="QR kiosk technicians' tool")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ports = sub.add_parser("ports", help="list serial ports with ESP32 boards recognised")
    ports.add_argument("--all", action="store_true", help="also list ports that are not ESP32s")
    ports.set_defaults(func=cmd_ports)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
