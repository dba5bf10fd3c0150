"""Talk to a running MicroPython board over its serial REPL, with mpremote's transport.

    with Board.connect("/dev/ttyUSB0") as board:    # interrupts the app (ctrl-C), raw REPL
        board.exec("print(1)")                       # -> "1\\n"
        board.write_file("kiosk/app.mpy", data)
        board.restart()                              # soft reset: the app runs again

mpremote's SerialTransport does the protocol (raw REPL, raw-paste, file
transfer). What is added here: `resume` semantics (the board is never
soft-reset on connect: a soft reset would end the MicroPython unix port of a
virtual device, and an ESP32 does not need it), an overall deadline on every
device interaction (a port where nothing answers, or a board that keeps
printing a boot log after a reset, must not hang a technician's terminal; the
deadlines are set in one place below), a board that resets in the middle of a
command recognised as such (ESP-ROM `rst:` line, MicroPython banner, soft
reboot, the raw REPL prompt lost), and each way the link can fail turned into
a one-line Failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from host_tools.errors import Failure

BAUD = 115200
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n"

# Deadlines (seconds) for everything kioskctl asks of a board: the one place they are set.
CONNECT_S = 5.0  # interrupt the app, enter the raw REPL
COMMAND_S = 10.0  # a small command: stat, mkdir, rename, print a version
SELFTEST_S = 60.0  # the on-device self-test (display pattern, scanner, broker connect)
COPY_S = 5.0  # a file copy or read: this much, plus
COPY_PER_KB_S = 0.5  # this per KB (115200 baud, repr() of binary ~3x, a round trip per 512 B)
RESTART_S = 15.0  # after a soft reset, the app's first console line (deploy, provision)
SILENT_S = 3.0  # no byte from the board for this long at the deadline: it stopped answering
WRITE_S = 2.0  # a write the port does not take (a hung native-USB board)


def copy_deadline(size: int) -> float:
    """The deadline for copying `size` bytes to or from a board."""
    return COPY_S + COPY_PER_KB_S * size / 1024


# What a board prints when it resets under a command: the ESP-ROM boot lines, the
# MicroPython banner, a soft reboot ("MPY: soft reboot"), or its friendly REPL prompt
# (the raw REPL is gone). A command's output in the raw REPL never contains these.
# At connect, the banner and ">>> " are normal (the app ended on ctrl-C): only the ROM's count.
ROM_BOOT = rb"\nrst:0x[0-9a-fA-F]+ |ESP-ROM:"
RESET_SIGNS = re.compile(ROM_BOOT + rb"|MicroPython v\d+\.\d+[^\r\n]*; |soft reboot\r?\n|\n>>> ")
_TAIL = 160  # bytes of recent output kept to see a sign split across reads


class _Interrupted(Exception):
    """Raised from a serial read when the deadline passed or the board reset."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "deadline")
        self.reset = reset


class _Watched:
    """The transport's serial port, read with an overall deadline and a reset detector.

    mpremote's waits only time out after a silence, so a board that keeps printing
    (a boot log after a reset, a looping app) would hold them forever: every read
    and poll of the port goes through here while a command runs (armed).
    """

    def __init__(self, ser: serial.Serial) -> None:
        self._ser = ser
        self.deadline: float | None = None
        self.tail = b""
        self.last_data = 0.0  # monotonic time of the last byte read while armed

    def __getattr__(self, name: str) -> object:
        return getattr(self._ser, name)

    def arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.last_data = time.monotonic()
        self.tail = b""

    def disarm(self) -> None:
        self.deadline = None
        self.tail = b""

    def _check(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Interrupted(reset=False)

    def read(self, size: int = 1) -> bytes:
        self._check()
        data: bytes = self._ser.read(size)
        if data and self.deadline is not None:
            self.last_data = time.monotonic()
            self.tail = (self.tail + data)[-_TAIL:]
            if RESET_SIGNS.search(self.tail):
                raise _Interrupted(reset=True)
        return data

    def inWaiting(self) -> int:  # mpremote's name (pyserial 2)
        self._check()
        return int(self._ser.in_waiting)

    @property
    def in_waiting(self) -> int:
        self._check()
        return int(self._ser.in_waiting)


def port_problem(port: str, exc: BaseException | None = None) -> Failure:
    """Why `port` cannot be opened, in words a technician acts on."""
    if not os.path.exists(port):
        return Failure(f"no device on {port}: is the board plugged in (with a data cable)?")
    try:
        probe = serial.Serial(port, BAUD, exclusive=True, timeout=0)
    except serial.SerialException as e:
        text = str(e)
        if "exclusively lock" in text or isinstance(e.__context__, BlockingIOError):
            return Failure(f"port {port} is busy: another program (a serial monitor, another "
                           "kioskctl) has it open; close it and try again")
        if getattr(e, "errno", None) == errno.EACCES or "Permission denied" in text:
            return Failure(f"no permission to open {port}: add your user to the 'dialout' "
                           "group and log in again")
        return Failure(f"cannot open {port}: {text}")
    probe.close()
    return Failure(f"cannot open {port}: {exc}" if exc else f"cannot open {port}")


class Board:
    """An open raw-REPL session on a board (see module docstring)."""

    def __init__(self, port: str, transport: SerialTransport) -> None:
        self.port = port
        self.transport = transport
        self._watch = _Watched(transport.serial)
        transport.serial = self._watch

    @classmethod
    def connect(cls, port: str, timeout: float = CONNECT_S) -> Board:
        try:
            # timeout: serial reads return after this much silence, so every wait has a deadline.
            transport = SerialTransport(port, baudrate=BAUD, exclusive=True, timeout=0.2)
            transport.serial.write_timeout = WRITE_S
        except TransportError as e:
            raise port_problem(port, e) from None
        board = cls(port, transport)
        try:
            board._enter_raw_repl(timeout)
        except BaseException:
            board.close()
            raise
        return board

    def _enter_raw_repl(self, timeout: float) -> None:
        """mpremote's enter_raw_repl(soft_reset=False), quiet and with a deadline."""
        ser = self.transport.serial
        try:
            ser.write(b"\r\x03")  # interrupt the app (twice: once may land mid-statement)
            time.sleep(0.05)
            ser.write(b"\x03")
            ser.reset_input_buffer()
            ser.write(b"\r\x01")  # raw REPL
            data = self.transport.read_until(1, RAW_PROMPT, timeout=timeout,
                                             timeout_overall=timeout)
        except (OSError, serial.SerialException) as e:
            raise self._lost(e) from None
        if not data.endswith(RAW_PROMPT):
            if re.search(ROM_BOOT, data):
                raise Failure(f"{self.port}: the board reset while kioskctl connected (check "
                              "power and cable), nothing was changed")
            raise Failure(f"no MicroPython REPL answered on {self.port}: is MicroPython flashed "
                          "(kioskctl flash) and nothing else using the board's console?")
        self.transport.in_raw_repl = True

    def _lost(self, exc: BaseException) -> Failure:
        if not os.path.exists(self.port):
            return Failure(f"device on {self.port} disconnected (unplugged or reset)")
        return Failure(f"serial link to {self.port} failed: {exc}")

    @contextlib.contextmanager
    def _deadline(self, what: str, seconds: float, changes: bool) -> Iterator[None]:
        """Everything inside ends within `seconds`, or with a one-line Failure saying why:
        the board reset, stopped answering, or kept printing past the deadline."""
        after = ("nothing was changed" if not changes
                 else "run the command again (it finishes what was started)")
        self._watch.arm(seconds)
        try:
            yield
        except _Interrupted as e:
            silent = time.monotonic() - self._watch.last_data >= min(SILENT_S, seconds)
            if e.reset:
                msg = f"the board reset during {what} (check power and cable), {after}"
            elif silent:
                msg = f"the board stopped answering during {what} (check power and cable), {after}"
            else:
                msg = (f"{what} did not finish within {seconds:.0f} s (the board kept printing: "
                       "see kioskctl monitor), " + after)
            raise Failure(f"{self.port}: {msg}") from None
        except serial.SerialTimeoutException:
            raise Failure(f"{self.port}: the board stopped taking data during {what} (check "
                          f"power and cable), {after}") from None
        except TransportError as e:
            raise Failure(f"{self.port}: the board stopped answering during {what} ({e}), "
                          f"{after}") from None
        except (OSError, serial.SerialException) as e:
            raise self._lost(e) from None
        finally:
            self._watch.disarm()

    # -- commands ------------------------------------------------------------

    def exec(self, code: str, timeout: float = COMMAND_S, what: str = "a command",
             changes: bool = True) -> str:
        """Run code on the board; its printed output. Raises Failure on an exception there,
        and when it does not end within `timeout` (see _deadline)."""
        with self._deadline(what, timeout, changes):
            try:
                self.transport.exec_raw_no_follow(code)
            except TransportExecError as e:  # pragma: no cover - it does not raise this
                raise Failure(f"{self.port}: {e.error_output.strip().splitlines()[-1]}") \
                    from None
            out, err = self.transport.follow(timeout)
        if err:
            last = err.decode(errors="replace").strip().splitlines()[-1]
            raise Failure(f"{self.port}: the board reported {last}")
        return out.decode(errors="replace")

    def eval_json(self, code: str, timeout: float = COMMAND_S, what: str = "a command",
                  changes: bool = False) -> object:
        """Run code that prints one JSON value as its last line; that value."""
        import json

        out = self.exec(code, timeout, what, changes).strip().splitlines()
        if not out:
            raise Failure(f"{self.port}: the board printed nothing")
        try:
            return json.loads(out[-1])
        except ValueError:
            raise Failure(f"{self.port}: unexpected answer from the board: {out[-1][:80]}") \
                from None

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file on the board: to path + '.new' first, then renamed over it."""
        tmp = path + ".new"
        with self._deadline(f"copying {path}", copy_deadline(len(data)), changes=True):
            try:
                self.transport.fs_writefile(tmp, data, chunk_size=512)
            except (TransportExecError, OSError) as e:
                if isinstance(e, OSError) and not os.path.exists(self.port):
                    raise self._lost(e) from None
                raise Failure(f"{self.port}: cannot write {path} on the board ({e}): "
                              "flash full or file system damaged?") from None
        self.exec(f"import os\nos.rename({tmp!r}, {path!r})", what=f"copying {path}")

    def read_file(self, path: str, size_hint: int = 16384) -> bytes | None:
        """A file's bytes, or None when it does not exist (deadline: a file of size_hint)."""
        with self._deadline(f"reading {path}", copy_deadline(size_hint), changes=False):
            try:
                return bytes(self.transport.fs_readfile(path, chunk_size=512))
            except FileNotFoundError:
                return None
            except (TransportExecError, OSError) as e:
                if isinstance(e, OSError) and not os.path.exists(self.port):
                    raise self._lost(e) from None
                raise Failure(f"{self.port}: cannot read {path} on the board ({e})") from None

    def makedirs(self, dirs: list[str]) -> None:
        """Create folders (parents first) that do not exist yet."""
        if dirs:
            self.exec(f"import os\nfor d in {sorted(set(dirs))!r}:\n    try:\n        os.mkdir(d)\n"
                      "    except OSError:\n        pass\n", what="making folders")

    def restart(self) -> None:
        """Soft reset from the friendly REPL: the board runs /main.py again."""
        ser = self.transport.serial
        try:
            self.transport.exit_raw_repl()
            time.sleep(0.05)
            ser.write(b"\x04")
            ser.flush()
        except (OSError, serial.SerialException) as e:
            raise self._lost(e) from None

    def read_console(self, done: Callable[[bytes], bool], timeout: float) -> bytes:
        """Console output until done(output so far) is true, or the deadline passes."""
        ser = self.transport.serial
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = ser.read(ser.in_waiting or 1)
            except (OSError, serial.SerialException):
                break
            data += chunk
            if chunk and done(data):
                break
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self.transport.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.transport.in_raw_repl and exc_type is None:
            with contextlib.suppress(OSError, serial.SerialException):
                self.transport.exit_raw_repl()
        self.close()
