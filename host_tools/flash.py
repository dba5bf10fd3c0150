"""`kioskctl flash`: a MicroPython firmware image onto an ESP32, with esptool's Python API.

    chip = detect the chip on the port (esptool.cmds.detect_chip), run the stub
    check the image with esptool's own image loader: magic, chip id, segments,
    checksum and SHA-256 digest of the bootloader, and the app at 0x10000
    offset 0x1000 on ESP32 / ESP32-S2, 0x0 on S3 / C3 / C6 (MicroPython's images
    start with the bootloader, which sits there)
    erase the whole flash when asked, write (esptool verifies the written data
    by its MD5), optionally the LittleFS image at the vfs partition, hard reset

esptool's console output is routed to a progress callback (one per thread, so
batch mode can flash many boards at once) and its errors become one-line
Failures.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esptool.bin_image import LoadFirmwareImage
from esptool.logger import TemplateLogger, log
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError

from host_tools.errors import Failure
from host_tools.repl import port_problem

Progress = Callable[[float, str], None]

# Where MicroPython's firmware image goes, by chip (esptool's CHIP_NAME).
FIRMWARE_OFFSET = {
    "ESP32": 0x1000,
    "ESP32-S2": 0x1000,
    "ESP32-S3": 0x0,
    "ESP32-C3": 0x0,
    "ESP32-C6": 0x0,
}
APP_OFFSET = 0x10000  # the app partition in MicroPython's partition tables
FS_OFFSET = 0x200000  # MicroPython >= 1.26, 4 MiB board: the vfs partition after the app


def chip_key(chip: str) -> str:
    """esptool's chip argument for a CHIP_NAME: "ESP32-S3" -> "esp32s3"."""
    return chip.lower().replace("-", "")


def firmware_offset(chip: str) -> int:
    try:
        return FIRMWARE_OFFSET[chip]
    except KeyError:
        raise Failure(f"{chip} is not a supported kiosk chip (supported: "
                      f"{', '.join(FIRMWARE_OFFSET)})") from None


def image_chip(data: bytes, name: str = "firmware") -> str:
    """The chip an ESP image is built for (CHIP_NAME), from its extended header."""
    if len(data) < 24 or data[0] != 0xE9:
        raise Failure(f"{name} is not an ESP32 firmware image (no image header): take the "
                      ".bin for your board from micropython.org/download")
    chip_id = int.from_bytes(data[12:14], "little")
    for cls in CHIP_DEFS.values():
        if getattr(cls, "IMAGE_CHIP_ID", None) == chip_id:
            return str(cls.CHIP_NAME)
    raise Failure(f"{name}: unknown chip id {chip_id} in the image header")


def _check_one(data: bytes, chip: str, what: str, name: str) -> None:
    try:
        image = LoadFirmwareImage(chip_key(chip), data)
    except (FatalError, ValueError, IndexError, KeyError) as e:
        raise Failure(f"{name}: the {what} image is damaged ({e})") from None
    if image.checksum != image.calculate_checksum():
        raise Failure(f"{name}: the {what} image checksum is wrong (file damaged or cut short)")
    stored, calc = getattr(image, "stored_digest", None), getattr(image, "calc_digest", None)
    if stored is not None and stored != calc:
        raise Failure(f"{name}: the {what} image SHA-256 digest is wrong (file damaged)")


def check_firmware(data: bytes, name: str, chip: str | None = None) -> str:
    """Check a MicroPython image with esptool's image loader; the chip it is for.

    `chip`: the chip on the board; an image for another chip is refused.
    """
    image_for = image_chip(data, name)
    if chip is not None and image_for != chip:
        raise Failure(f"{name} is for {image_for} but the board is {chip}: take the "
                      f"MicroPython image for {chip}")
    offset = firmware_offset(image_for)
    _check_one(data, image_for, "bootloader", name)
    app_at = APP_OFFSET - offset
    if len(data) <= app_at:
        raise Failure(f"{name} holds a bootloader but no app at {APP_OFFSET:#x}: use the "
                      "complete MicroPython .bin (bootloader, partition table and app)")
    if data[app_at] != 0xE9:
        raise Failure(f"{name}: no app image at {APP_OFFSET:#x}: not a MicroPython firmware .bin")
    _check_one(data[app_at:], image_for, "app", name)
    return image_for


def read_firmware(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise Failure(f"cannot read firmware {path}: {e.strerror or e}") from None


# -- esptool's output, routed per thread ---------------------------------------


class _Route(threading.local):
    progress: Progress | None = None
    lines: list[str]

    def __init__(self) -> None:
        self.lines = []


_route = _Route()


class _Logger(TemplateLogger):
    """esptool's output: progress bars to the thread's callback, text kept for errors."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        _route.lines.append(" ".join(str(a) for a in args))

    def note(self, message: str) -> None:
        _route.lines.append(message)

    def warning(self, message: str) -> None:
        _route.lines.append(message)

    def error(self, message: str) -> None:
        _route.lines.append(message)

    def stage(self, finish: bool = False) -> None:
        pass

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                     bar_length: int = 30) -> None:
        if _route.progress is not None and total_iters:
            _route.progress(cur_iter / total_iters, prefix.strip() or "writing")

    def set_verbosity(self, verbosity: str) -> None:
        pass


def _route_line(text: str) -> None:
    _route.lines.append(text)


_installed = threading.Lock()
_logger_set = False


def install_logger() -> None:
    global _logger_set
    with _installed:
        if not _logger_set:
            log.set_logger(_Logger())
            # ResetStrategy bound esptool's own logger at import: route its warning too.
            import esptool.reset
            from esptool.util import PrintOnce

            esptool.reset.ResetStrategy.print_once = PrintOnce(_route_line)
            _logger_set = True


def _esptool_failure(port: str, e: BaseException) -> Failure:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "No serial data received" in text or "Failed to connect" in text:
        return Failure(f"no chip answered on {port}: hold BOOT, tap EN/RESET, release BOOT "
                       "and try again (or check the cable)")
    lowered = text.lower()
    if "md5" in lowered and "match" in lowered:
        return Failure(f"{port}: what was written did not verify (MD5 differs): flash again; "
                       "if it repeats, the board's flash or the cable is failing")
    if ("could not open" in lowered or "exclusively lock" in lowered or "busy" in lowered
            or "no such file" in lowered or "errno" in lowered):
        return port_problem(port, e)
    return Failure(f"esptool on {port}: {text}")


def connect(port: str, baud: int, attempts: int, before: str) -> Any:
    """detect_chip + stub, or a Failure saying why no chip answered."""
    from esptool.cmds import detect_chip, run_stub

    install_logger()
    try:
        esp = detect_chip(port, 115200, before, connect_attempts=attempts)
        esp = run_stub(esp)
        if baud != 115200:
            esp.change_baud(baud)
        return esp
    except (FatalError, OSError) as e:
        raise _esptool_failure(port, e) from None
    except Exception as e:  # pyserial raises its own types from deep in esptool
        raise _esptool_failure(port, e) from None


def flash(port: str, firmware: bytes, name: str, *, erase: bool = False,
          fs_image: bytes | None = None, fs_offset: int = FS_OFFSET, baud: int = 460800,
          attempts: int = 3, before: str = "default-reset",
          progress: Progress = lambda f, s: None) -> str:
    """Flash one board; a one-line summary."""
    from esptool.cmds import erase_flash, reset_chip, write_flash

    image_for = image_chip(firmware, name)  # refuse a wrong file before touching the board
    _route.progress = progress
    _route.lines = []
    progress(0.01, "connecting")
    esp = connect(port, baud, attempts, before)
    try:
        chip = str(esp.CHIP_NAME)
        offset = firmware_offset(chip)
        check_firmware(firmware, name, chip)
        if image_for != chip:  # pragma: no cover - check_firmware refused it already
            raise Failure(f"{name} is for {image_for}, board is {chip}")
        if erase:
            progress(0.05, "erasing the flash")
            erase_flash(esp)
        parts = [(offset, firmware)]
        if fs_image is not None:
            parts.append((fs_offset, fs_image))
        progress(0.1, f"writing {len(firmware) // 1024} KB at {offset:#x}")
        write_flash(esp, parts, flash_size="keep")
        reset_chip(esp, "hard-reset")
    except (FatalError, OSError) as e:
        raise _esptool_failure(port, e) from None
    finally:
        _route.progress = None
        with contextlib.suppress(Exception):
            esp._port.close()
    progress(1.0, "done")
    extra = f" + filesystem at {fs_offset:#x}" if fs_image is not None else ""
    return f"{chip}: {name} written at {offset:#x}{extra}, verified, board reset"
