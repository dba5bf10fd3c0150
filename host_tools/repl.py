"""Talk to a running MicroPython board over its serial REPL, with mpremote's transport.

    with Board.connect("/dev/ttyUSB0") as board:    # interrupts the app (ctrl-C), raw REPL
        board.exec("print(1)")                       # -> "1\\n"
        board.write_file("kiosk/app.mpy", data)
        board.restart()                              # soft reset: the app runs again

mpremote's SerialTransport does the protocol (raw REPL, raw-paste, file
transfer). What is added here: `resume` semantics (the board is never
soft-reset on connect: a soft reset would end the MicroPython unix port of a
virtual device, and an ESP32 does not need it), deadlines on every wait (a port
where nothing answers must not hang a technician's terminal), and each way
the link can fail turned into a one-line Failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from types import TracebackType

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from host_tools.errors import Failure

BAUD = 115200
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n"


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

    @classmethod
    def connect(cls, port: str, timeout: float = 5.0) -> Board:
        try:
            # timeout: serial reads return after this much silence, so every wait has a deadline.
            transport = SerialTransport(port, baudrate=BAUD, exclusive=True, timeout=0.2)
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
            raise Failure(f"no MicroPython REPL answered on {self.port}: is MicroPython flashed "
                          "(kioskctl flash) and nothing else using the board's console?")
        self.transport.in_raw_repl = True

    def _lost(self, exc: BaseException) -> Failure:
        if not os.path.exists(self.port):
            return Failure(f"device on {self.port} disconnected (unplugged or reset)")
        return Failure(f"serial link to {self.port} failed: {exc}")

    # -- commands ------------------------------------------------------------

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run code on the board; its printed output. Raises Failure on an exception there."""
        try:
            self.transport.exec_raw_no_follow(code)
            out, err = self.transport.follow(timeout)
        except TransportExecError as e:  # pragma: no cover - exec_raw_no_follow does not raise it
            raise Failure(f"{self.port}: {e.error_output.strip().splitlines()[-1]}") from None
        except TransportError as e:
            raise Failure(f"{self.port}: no answer from the board ({e})") from None
        except (OSError, serial.SerialException) as e:
            raise self._lost(e) from None
        if err:
            last = err.decode(errors="replace").strip().splitlines()[-1]
            raise Failure(f"{self.port}: the board reported {last}")
        return out.decode(errors="replace")

    def eval_json(self, code: str, timeout: float = 10.0) -> object:
        """Run code that prints one JSON value as its last line; that value."""
        import json

        out = self.exec(code, timeout).strip().splitlines()
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
        try:
            self.transport.fs_writefile(tmp, data, chunk_size=512)
        except (TransportError, OSError) as e:
            if isinstance(e, OSError) and not os.path.exists(self.port):
                raise self._lost(e) from None
            raise Failure(f"{self.port}: cannot write {path} on the board ({e}): "
                          "flash full or file system damaged?") from None
        self.exec(f"import os\nos.rename({tmp!r}, {path!r})")

    def read_file(self, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        try:
            return bytes(self.transport.fs_readfile(path, chunk_size=512))
        except FileNotFoundError:
            return None
        except (TransportError, OSError) as e:
            raise Failure(f"{self.port}: cannot read {path} on the board ({e})") from None

    def makedirs(self, dirs: list[str]) -> None:
        """Create folders (parents first) that do not exist yet."""
        if dirs:
            self.exec(f"import os\nfor d in {sorted(set(dirs))!r}:\n    try:\n        os.mkdir(d)\n"
                      "    except OSError:\n        pass\n")

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
