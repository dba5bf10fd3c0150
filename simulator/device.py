"""A virtual device: a MicroPython board on a serial port, as `mpremote` and `kioskctl` see one.

    python -m simulator.device ROOT [--console-log FILE] [--link PATH]
        prints {"port": "/dev/pts/N" (or PATH, a symlink to it), "scanner": "/dev/pts/M"}
        on one line, then serves until SIGTERM. ROOT is the board's flash: its files
        are the device's "/".

    dev = VirtualDevice(tmp / "flash").start()     # the same, from Python (tests, bench)
    dev.port                                       # hand it to kioskctl / mpremote
                                                   # (a symlink beside ROOT: a stable name)
    dev.stop()                                     # "unplug" the board

The MicroPython unix port's REPL speaks everything mpremote needs (raw REPL
ctrl-A, raw-paste ctrl-E, ctrl-D to run) on a terminal; what it lacks is a
board's life cycle, which this process adds and nothing more:

- power on: if /main.py exists the app runs (`micropython main.py` in ROOT),
  its console output goes to the serial port;
- ctrl-C on the serial port while the app runs: the app gets SIGINT, which the
  unix port raises as KeyboardInterrupt, exactly as the UART driver of an ESP32
  does on ctrl-C; the board then shows the REPL (a `micropython` REPL process
  in ROOT, on the same serial port);
- soft reset (ctrl-D at the REPL, which ends the unix port's REPL): the board
  prints "soft reboot" and runs /main.py again; when the app ends by itself
  the board drops to the REPL.

- the hardware watchdog: the app's board (firmware/boards/sim.py) starts and
  feeds it through a pipe (KIOSK_WDT_FD); like an ESP32's it outlives the app
  and a soft reset, and when nobody fed it for its timeout the board resets
  (the console shows "rst:0x7 (TG0WDT_SYS_RESET)") and runs /main.py. A
  maintenance window (the app interrupted by ctrl-C, kiosk/health.py) feeds
  it by itself until the window ends or a soft reset, as the app's
  machine.Timer does on a chip. Reset causes are noted in ROOT/reset.cause.

Because the unix port cannot soft-reset *into* the raw REPL as a board does,
mpremote must be told `resume` (kioskctl always does). The kiosk's scanner
UART is a second pseudo-terminal (`scanner`), driven like a GM65 module with
simulator.kiosk.VirtualScanner. The serial side is a pty pair this process
keeps open, so a technician's tool can connect and disconnect at will; what
the device prints while nobody listens is dropped, as a UART does.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from simulator.kiosk import VirtualScanner, micropython_binary
from simulator.process import die_with_parent

CTRL_C = 0x03
_OUT_CAP = 8192  # console bytes kept while nobody reads the port (then the oldest are dropped)
_REPL_OUT_CAP = 1 << 20  # while the REPL talks to a tool, nothing is dropped up to this much
_STOP_GRACE_S = 3.0  # an app that ignores ctrl-C this long is killed
RESET_NOTE = "reset.cause"  # == firmware/boards/sim.py RESET_NOTE
WDT_RESET_BANNER = b"\r\nets Jul 29 2019 12:21:46\r\n\r\nrst:0x7 (TG0WDT_SYS_RESET),boot:0x13\r\n"


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def _raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    _nonblocking(master)
    return master, slave


class Board:
    """The device process: serial port, console, app / REPL life cycle."""

    def __init__(self, root: Path, micropython: str, console_log: Path | None = None,
                 heapsize: str | None = None, env: dict[str, str] | None = None) -> None:
        self.root = root.resolve()
        self.micropython = micropython
        self.heapsize = heapsize
        self.env = dict(env or {})  # more environment for the interpreter (tests: short timers)
        self.console_log = open(console_log, "ab") if console_log else None  # noqa: SIM115
        self.ser_m, self.ser_s = _raw_pty()  # the "USB serial port": tools open ser_s's name
        self.con_m, self.con_s = _raw_pty()  # the interpreter's terminal
        self.scan_m, self.scan_s = _raw_pty()  # the scanner UART: the kiosk holds scan_m
        self.child: subprocess.Popen[bytes] | None = None
        self.mode = "off"  # app | stopping | repl
        self.stop_deadline = 0.0
        self.out = bytearray()  # to the serial port
        self.into = bytearray()  # from the serial port to the REPL
        self.held = bytearray()  # typed after ctrl-C, before the REPL is up
        # The unix port sets its terminal raw with TCSAFLUSH when its REPL starts, which
        # drops input typed before: hold it until the REPL has shown its first prompt.
        self.repl_ready = False
        self.ready_at = 0.0
        self.tail = b""  # last bytes of console output, to see a prompt split across reads
        # The watchdog: the app writes "start MS", "feed", "maint MS" lines on wdt_w.
        self.wdt_r, self.wdt_w = os.pipe()
        _nonblocking(self.wdt_r)
        self.wdt_lines = b""
        self.wdt_ms: int | None = None  # running with this timeout (it cannot be stopped)
        self.wdt_fed = 0.0  # monotonic time of the last feed
        self.maint_end: float | None = None  # a maintenance window feeds it until then

    @property
    def port(self) -> str:
        return os.ttyname(self.ser_s)

    @property
    def scanner(self) -> str:
        return os.ttyname(self.scan_s)

    # -- the interpreter -----------------------------------------------------

    def _spawn(self, script: str | None) -> None:
        cmd = [self.micropython]
        if self.heapsize:
            cmd += ["-X", f"heapsize={self.heapsize}"]
        if script:
            cmd.append(script)
        env = {
            **self.env,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KIOSK_STATE": str(self.root),
            "KIOSK_SCANNER_FD": str(self.scan_m),
            "KIOSK_WDT_FD": str(self.wdt_w),
            # '' = the current folder = the device's "/", as sys.path[0] on an ESP32.
            "MICROPYPATH": ":.frozen:lib",
        }
        self.child = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdin=self.con_s, stdout=self.con_s,
            stderr=self.con_s, pass_fds=[self.scan_m, self.wdt_w], start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def boot(self) -> None:
        """Power on / soft reset: run /main.py if there is one, else the REPL."""
        if (self.root / "main.py").exists():
            self.mode = "app"
            self._spawn("main.py")
        else:
            self._repl()

    def _repl(self) -> None:
        self.mode = "repl"
        self.repl_ready = False
        self.tail = b""
        self._spawn(None)
        self.into += self.held
        self.held.clear()

    def _child_ended(self) -> None:
        self._drain_console()
        was = self.mode
        self.child = None
        if was == "repl":  # ctrl-D at the REPL: soft reset
            self._emit(b"soft reboot\r\n")
            self.into.clear()
            self.maint_end = None  # machine.Timer objects end; the watchdog runs on
            self.boot()
        else:  # interrupted, or the app ended: the board shows its REPL
            self._repl()

    # -- the watchdog --------------------------------------------------------

    def _read_wdt(self) -> None:
        while True:
            try:
                data = os.read(self.wdt_r, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            self.wdt_lines += data
        *lines, self.wdt_lines = self.wdt_lines.split(b"\n")
        now = time.monotonic()
        for line in lines:
            word, _, arg = line.decode(errors="replace").partition(" ")
            if word == "start":
                self.wdt_ms = int(arg)
            elif word == "maint" and self.wdt_ms is not None:
                self.maint_end = now + int(arg) / 1000
            if word in ("start", "feed", "maint"):
                self.wdt_fed = now

    def _check_wdt(self) -> None:
        """Reset the board if the running watchdog was not fed in time."""
        if self.wdt_ms is None:
            return
        now = time.monotonic()
        if self.maint_end is not None:  # the window's timer feeds it, until the end
            self.wdt_fed = max(self.wdt_fed, min(now, self.maint_end))
        if now - self.wdt_fed < self.wdt_ms / 1000:
            return
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        self._drain_console()
        note = self.root / RESET_NOTE
        if not note.exists():  # "maintenance" when a window ended, noted by the app
            note.write_text("watchdog")
        self._emit(WDT_RESET_BANNER)
        self.wdt_ms = self.maint_end = None  # a hardware reset stops it
        self.wdt_lines = b""
        self.into.clear()
        self.held.clear()
        self.boot()

    # -- bytes ---------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        if self.console_log is not None:
            self.console_log.write(data)
            self.console_log.flush()
        self.out += data
        cap = _REPL_OUT_CAP if self.mode == "repl" else _OUT_CAP
        if len(self.out) > cap:
            del self.out[: len(self.out) - cap]

    def _drain_console(self) -> None:
        while True:
            try:
                data = os.read(self.con_m, 4096)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            if self.mode == "repl" and not self.repl_ready:
                self.tail = (self.tail + data)[-16:]
                if b">>> " in self.tail:
                    self.repl_ready = True
                    self.ready_at = time.monotonic() + 0.03  # its raw mode is set after the prompt
            self._emit(data)

    def _from_port(self, data: bytes) -> None:
        if self.mode == "repl":
            self.into += data
        elif self.mode == "stopping":
            self.held += data
        elif self.mode == "app":
            at = data.rfind(bytes([CTRL_C]))
            if at >= 0 and self.child is not None:
                self.held += data[at + 1 :]
                self.mode = "stopping"
                self.stop_deadline = time.monotonic() + _STOP_GRACE_S
                with contextlib.suppress(ProcessLookupError):
                    self.child.send_signal(signal.SIGINT)
            # anything else typed while the app runs is not read by anyone

    def _write_port(self) -> None:
        try:
            n = os.write(self.ser_m, self.out)
            del self.out[:n]
        except BlockingIOError:
            if self.mode != "repl":
                # Nobody reads the port: drop what waits there, as a UART would.
                termios.tcflush(self.ser_s, termios.TCIFLUSH)

    # -- the loop ------------------------------------------------------------

    def serve(self) -> None:
        self.boot()
        poll = select.poll()
        while True:
            poll.register(self.ser_m, select.POLLIN | (select.POLLOUT if self.out else 0))
            wants_in = (self.into and self.mode == "repl" and self.repl_ready
                        and time.monotonic() >= self.ready_at)
            poll.register(self.con_m, select.POLLIN | (select.POLLOUT if wants_in else 0))
            poll.register(self.wdt_r, select.POLLIN)
            for fd, ev in poll.poll(10 if self.into else 50):
                if fd == self.ser_m and ev & select.POLLIN:
                    with contextlib.suppress(BlockingIOError):
                        self._from_port(os.read(self.ser_m, 4096))
                if fd == self.ser_m and ev & select.POLLOUT:
                    self._write_port()
                if fd == self.con_m and ev & select.POLLIN:
                    self._drain_console()
                if fd == self.con_m and ev & select.POLLOUT and wants_in:
                    with contextlib.suppress(BlockingIOError):
                        del self.into[: os.write(self.con_m, self.into)]
                if fd == self.wdt_r:
                    self._read_wdt()
            self._check_wdt()
            if self.out and len(self.out) >= _OUT_CAP and self.mode != "repl":
                self._write_port()
            child = self.child
            if child is not None and child.poll() is not None:
                self._child_ended()
            elif (child is not None and self.mode == "stopping"
                  and time.monotonic() > self.stop_deadline):
                child.kill()

    def close(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        for fd in (self.ser_m, self.ser_s, self.con_m, self.con_s, self.scan_m, self.scan_s,
                   self.wdt_r, self.wdt_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.device",
                                     description="a virtual MicroPython board on a pty")
    parser.add_argument("root", type=Path, help="the board's flash (its files are '/')")
    parser.add_argument("--console-log", type=Path, help="append all console output here")
    parser.add_argument("--heapsize", help="MicroPython heap, e.g. 128k (an ESP32 has ~100k)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the interpreter, e.g. KIOSK_SIM_WDT_MS=1500")
    parser.add_argument("--link", type=Path,
                        help="also name the port by this symlink while the device runs, as "
                        "/dev/serial/by-id/... names a real board (pty numbers get reused)")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, _, value in (item.partition("=") for item in args.env)}
    board = Board(args.root, micropython_binary(), args.console_log, args.heapsize, env)

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    port = board.port
    if args.link:
        with contextlib.suppress(FileNotFoundError):
            args.link.unlink()
        args.link.symlink_to(port)
        port = str(args.link)
    print(json.dumps({"port": port, "scanner": board.scanner}), flush=True)
    try:
        board.serve()
    except KeyboardInterrupt:
        pass
    finally:
        if args.link:
            with contextlib.suppress(FileNotFoundError):
                args.link.unlink()
        board.close()
    return 0


@dataclass
class VirtualDevice:
    """A virtual device process started from Python; `port` is its serial port."""

    root: Path
    heapsize: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. {"KIOSK_SIM_WDT_MS": "1500"}
    port: str = ""
    scanner_port: str = ""
    scanner: VirtualScanner | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def console_path(self) -> Path:
        return self.root.parent / f"{self.root.name}.console.log"

    @property
    def link_path(self) -> Path:
        """The device's port by a stable name (a symlink to its pty, gone when unplugged)."""
        return self.root.parent / f"{self.root.name}.tty"

    def console(self) -> str:
        """Everything the device printed on its serial console so far."""
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 10.0) -> VirtualDevice:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "simulator.device", str(self.root),
               "--console-log", str(self.console_path), "--link", str(self.link_path)]
        if self.heapsize:
            cmd += ["--heapsize", self.heapsize]
        for name, value in self.env.items():
            cmd += ["--env", f"{name}={value}"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
            preexec_fn=die_with_parent, cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"virtual device in {self.root} did not start")
        info = json.loads(line)
        self.port, self.scanner_port = info["port"], info["scanner"]
        # The GM65 module on the scanner UART: answers the kiosk's commands, sends codes.
        self.scanner = VirtualScanner(self.scanner_port)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Unplug: the device process ends and its serial port disappears."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.scanner is not None:
            self.scanner.close()
            self.scanner = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with contextlib.suppress(OSError):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        sys.exit(main())
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
