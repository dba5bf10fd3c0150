"""A virtual ESP32 in download mode on a pseudo-terminal, for `kioskctl flash` without a chip.

    chip = VirtualESP32().start()      # chip.port: "/dev/pts/N", hand it to esptool
    ...                                # esptool detects, erases, writes, verifies
    chip.flash[0x1000:...]             # what was written
    chip.stop()

It speaks esptool's serial protocol (SLIP frames, command/response packets,
docs.espressif.com "Serial Protocol") the way the flasher stub does once it
runs: SYNC answered with value 0, so esptool sees a stub already running and
uploads none; READ_REG answers the chip-detect magic of an ESP32; ERASE_FLASH,
FLASH_BEGIN/DATA/END and FLASH_DEFL_BEGIN/DATA/END (zlib) write a 4 MiB flash
held in memory; SPI_FLASH_MD5 lets esptool verify what it wrote. Commands it
does not know get the "invalid command" status a real stub gives. Only what
esptool asks during detect, erase, write and verify is modelled; no timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
import tty
import zlib

FLASH_SIZE = 4 * 1024 * 1024
ESP32_MAGIC = 0x00F01D83  # ESPLoader.CHIP_DETECT_MAGIC_REG_ADDR reads this on an ESP32
CHIP_DETECT_MAGIC_REG = 0x40001000
UART_CLKDIV_REG = 0x3FF40014  # esptool estimates the crystal from it: 40 MHz / 115200
END, ESC = 0xC0, 0xDB


def firmware_image(chip: str = "esp32", app_bytes: int = 2048) -> bytes:
    """A well-formed ESP image laid out like MicroPython's firmware .bin: bootloader at the
    chip's offset, app at 0x10000 (esptool's own image classes and merge_bin). Not a
    program: for the image checks and flashing of tests and benchmarks."""
    import tempfile
    from pathlib import Path

    from esptool.bin_image import ELFSection
    from esptool.cmds import merge_bin
    from esptool.targets import CHIP_DEFS

    from host_tools.flash import APP_OFFSET, firmware_offset, install_logger

    install_logger()
    cls = CHIP_DEFS[chip]

    def one(entry: int, size: int, folder: str) -> bytes:
        img = cls.BOOTLOADER_IMAGE()
        img.entrypoint = entry
        img.segments = [ELFSection(b".dram0.data", 0x3FFB0000, bytes(range(256)) * 2, 0),
                        ELFSection(b".iram0.text", 0x40080000, b"\x5a" * size, 0)]
        img.append_digest = True
        path = Path(folder) / f"{entry:x}.bin"
        img.save(str(path))
        return path.read_bytes()

    offset = firmware_offset(cls.CHIP_NAME)
    with tempfile.TemporaryDirectory() as folder:
        merged = merge_bin([(offset, one(0x40080000, 512, folder)),
                            (APP_OFFSET, one(0x40081000, app_bytes, folder))],
                           chip, output=None, target_offset=offset)
    assert merged is not None
    return bytes(merged)


def slip(data: bytes) -> bytes:
    return (bytes([END]) + data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
            + bytes([END]))


class VirtualESP32:
    def __init__(self, bad_flash: bool = False) -> None:
        self.bad_flash = bad_flash  # a worn-out flash: one bit of every write sticks
        self.flash = bytearray(b"\xff" * FLASH_SIZE)
        self.commands: list[int] = []  # opcodes received, in order
        self.erased = False
        self._write_at = 0
        self._inflate: zlib._Decompress | None = None
        self._stop = threading.Event()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, name=f"esp32 {self.port}",
                                        daemon=True)

    def start(self) -> VirtualESP32:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._thread.join(timeout=5)

    # -- the protocol --------------------------------------------------------

    def _serve(self) -> None:
        import select

        frame, in_frame, escaped = bytearray(), False, False
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self.master, 65536)
            except OSError:
                return
            for b in data:
                if b == END:
                    if in_frame and frame:
                        self._packet(bytes(frame))
                    frame, in_frame, escaped = bytearray(), True, False
                elif not in_frame:
                    continue
                elif escaped:
                    frame.append(END if b == 0xDC else ESC)
                    escaped = False
                elif b == ESC:
                    escaped = True
                else:
                    frame.append(b)

    def _reply(self, op: int, value: int = 0, data: bytes = b"", ok: bool = True) -> None:
        body = data + (b"\x00\x00" if ok else b"\x01\x05")  # status, error (stub: 2 bytes)
        packet = struct.pack("<BBHI", 1, op, len(body), value) + body
        with contextlib.suppress(OSError):
            os.write(self.master, slip(packet))

    def _packet(self, packet: bytes) -> None:
        if len(packet) < 8 or packet[0] != 0:
            return
        _, op, size, _chk = struct.unpack("<BBHI", packet[:8])
        data = packet[8:8 + size]
        self.commands.append(op)
        if op == 0x08:  # SYNC: a stub answers with value 0 (8 times, like the ROM)
            for _ in range(8):
                self._reply(op)
        elif op == 0x0A:  # READ_REG
            addr = struct.unpack("<I", data[:4])[0]
            value = {CHIP_DETECT_MAGIC_REG: ESP32_MAGIC,
                     UART_CLKDIV_REG: 40_000_000 // 115200}.get(addr, 0)
            self._reply(op, value)
        elif op in (0x09, 0x0B, 0x0D, 0x0F):  # WRITE_REG, SPI_SET_PARAMS, SPI_ATTACH, baud
            self._reply(op)
        elif op == 0xD0:  # ERASE_FLASH
            self.flash[:] = b"\xff" * FLASH_SIZE
            self.erased = True
            self._reply(op)
        elif op == 0xD1:  # ERASE_REGION
            addr, length = struct.unpack("<II", data[:8])
            self.flash[addr:addr + length] = b"\xff" * length
            self._reply(op)
        elif op in (0x02, 0x10):  # FLASH_BEGIN, FLASH_DEFL_BEGIN: size, blocks, block size, at
            self._write_at = struct.unpack("<IIII", data[:16])[3]
            self._inflate = zlib.decompressobj() if op == 0x10 else None
            self._reply(op)
        elif op in (0x03, 0x11):  # FLASH_DATA, FLASH_DEFL_DATA: size, seq, 0, 0, data
            length = struct.unpack("<I", data[:4])[0]
            chunk = data[16:16 + length]
            if self._inflate is not None:
                chunk = self._inflate.decompress(chunk)
            if self.bad_flash and chunk:
                chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
            self.flash[self._write_at:self._write_at + len(chunk)] = chunk
            self._write_at += len(chunk)
            self._reply(op)
        elif op in (0x04, 0x12):  # FLASH_END, FLASH_DEFL_END
            self._reply(op)
        elif op == 0x13:  # SPI_FLASH_MD5: address, size -> 16 raw bytes (stub)
            addr, length = struct.unpack("<II", data[:8])
            self._reply(op, 0, hashlib.md5(self.flash[addr:addr + length]).digest())
        else:  # GET_SECURITY_INFO and the rest: not supported, as on an ESP32 stub
            self._reply(op, ok=False)
