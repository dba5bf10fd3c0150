"""`kioskctl monitor`: the board's serial console, each line timestamped and its log level decoded.

Log lines are "<level> <tag>: <message>" (firmware/kiosk/log.py): I info, W warning,
E error; a Python traceback is shown as an error. Ctrl-C ends the monitor.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable

import serial

from host_tools.errors import Failure
from host_tools.repl import BAUD, port_problem

LEVELS = {"I": ("INFO", "green"), "W": ("WARN", "yellow"), "E": ("ERROR", "bold red")}
_LOG_LINE = re.compile(r"^([IWE]) ([A-Za-z0-9_.-]+): (.*)$")


def decode(line: str) -> tuple[str, str, str]:
    """(level, style, text) for one console line; level '' when it is not a log line."""
    m = _LOG_LINE.match(line)
    if m:
        name, style = LEVELS[m[1]]
        return name, style, f"{m[2]}: {m[3]}"
    if line.startswith(("Traceback", "  File ")) or re.match(r"^[A-Za-z]+Error\b", line):
        return "ERROR", "bold red", line
    return "", "", line


def format_line(line: str, now: datetime.datetime | None = None) -> tuple[str, str]:
    """The monitor's rendering of one line (text, rich style)."""
    stamp = (now or datetime.datetime.now()).strftime("%H:%M:%S.%f")[:-3]
    level, style, text = decode(line)
    return f"{stamp} {level or '':5} {text}", style


def monitor(port: str, emit: Callable[[str, str], None], duration: float | None = None,
            baud: int = BAUD) -> int:
    """Follow the console until Ctrl-C or `duration` seconds; the number of lines shown."""
    try:
        ser = serial.Serial(port, baud, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as e:
        raise port_problem(port, e) from None
    shown = 0
    partial = b""
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                chunk = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError):
                raise Failure(f"device on {port} disconnected (unplugged or reset)") from None
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace").rstrip("\r")
                if text.strip():
                    emit(*format_line(text))
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        ser.close()
    return shown
