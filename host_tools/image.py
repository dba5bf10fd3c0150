"""`kioskctl image`: a LittleFS image of one kiosk's flash, and optionally a merged image.

The filesystem image holds the compiled bundle and one device's provisioning
(config.json, certificates), laid out exactly as deploy + provision would
leave the board. Its geometry is MicroPython's on the ESP32: LittleFS v2,
4096-byte blocks, `VfsLfs2` defaults (read and prog size 32, lookahead 32),
block count from the vfs partition size (2 MiB at 0x200000 on a 4 MiB board
since MicroPython 1.26). The merged image (esptool merge_bin) puts the
MicroPython firmware at its offset and the filesystem at the partition's, so
one `esptool write_flash 0x0 merged.bin` (or `kioskctl flash --merged`)
provisions a device.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from littlefs import LittleFS, LittleFSError

from host_tools.errors import Failure
from host_tools.flash import FS_OFFSET, check_firmware, chip_key, firmware_offset, install_logger

BLOCK_SIZE = 4096
READ_SIZE = 32  # VfsLfs2(readsize=32)
PROG_SIZE = 32  # VfsLfs2(progsize=32)
LOOKAHEAD = 32  # VfsLfs2(lookahead=32)
FS_SIZE = 2 * 1024 * 1024
DISK_VERSION = 0x00020000  # littlefs 2.0 on-disk format: every MicroPython 1.x mounts it


def _lfs(size: int, *, mount: bool = True, disk_version: int = DISK_VERSION) -> LittleFS:
    """A LittleFS with MicroPython's geometry; disk_version 0 = whatever the image has."""
    return LittleFS(mount=mount, block_size=BLOCK_SIZE, block_count=size // BLOCK_SIZE,
                    read_size=READ_SIZE, prog_size=PROG_SIZE, lookahead_size=LOOKAHEAD,
                    disk_version=disk_version)


def build_fs_image(files: dict[str, bytes], size: int = FS_SIZE) -> bytes:
    """A LittleFS image holding `files` (path -> bytes, '/'-separated, no leading '/')."""
    if size % BLOCK_SIZE or size < 16 * BLOCK_SIZE:
        raise Failure(f"filesystem size {size} must be a multiple of {BLOCK_SIZE}, "
                      f"at least {16 * BLOCK_SIZE}")
    fs = _lfs(size)
    try:
        for name in sorted(files):
            parent = ""
            for part in name.split("/")[:-1]:
                parent = f"{parent}/{part}" if parent else part
                with contextlib.suppress(FileExistsError):
                    fs.mkdir(parent)
            with fs.open(name, "wb") as f:
                f.write(files[name])
    except LittleFSError as e:
        if e.code == LittleFSError.Error.LFS_ERR_NOSPC:
            raise Failure(f"the files do not fit in a {size // 1024} KB filesystem") from None
        raise Failure(f"cannot build the filesystem image: {e}") from None
    return bytes(fs.context.buffer)


def read_fs_image(data: bytes) -> dict[str, bytes]:
    """Every file in a LittleFS image made with this geometry (tests, `kioskctl image --list`)."""
    # disk_version 0: MicroPython may have moved the image to littlefs 2.1 when writing it.
    fs = _lfs(len(data), mount=False, disk_version=0)
    fs.context.buffer[:] = data
    fs.mount()
    out: dict[str, bytes] = {}
    for root, _dirs, names in fs.walk("/"):
        for n in names:
            path = f"{root.rstrip('/')}/{n}".lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out


def merged_image(firmware: bytes, name: str, fs: bytes, fs_offset: int = FS_OFFSET,
                 flash_size: str = "keep") -> tuple[bytes, str]:
    """Firmware + filesystem in one image starting at flash address 0; (image, chip)."""
    from esptool.cmds import merge_bin
    from esptool.util import FatalError

    chip = check_firmware(firmware, name)
    offset = firmware_offset(chip)
    install_logger()  # esptool's messages are not the technician's
    if offset + len(firmware) > fs_offset:
        raise Failure(f"{name} ({len(firmware) // 1024} KB) overlaps the filesystem at "
                      f"{fs_offset:#x}")
    try:
        data = merge_bin([(offset, firmware), (fs_offset, fs)], chip_key(chip), output=None,
                         flash_size=flash_size)
    except FatalError as e:
        raise Failure(f"esptool merge_bin: {e}") from None
    assert data is not None
    return bytes(data), chip


def write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as e:
        raise Failure(f"cannot write {path}: {e.strerror or e}") from None
