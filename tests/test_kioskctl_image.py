"""kioskctl image, flash and build, as far as a host goes without an ESP32.

- The LittleFS image `kioskctl image` builds is mounted by the real MicroPython
  interpreter (`vfs.VfsLfs2` on a block device backed by the image file) and
  the kiosk app boots from it: reads its config there, connects to a real
  Mosquitto, and writes its own files into the image.
- Firmware images are checked with esptool's own image loader; ESP32 images
  for the tests are made with esptool's image classes and merge_bin (same
  layout as MicroPython's: bootloader at the chip's offset, app at 0x10000).
- `kioskctl flash` drives esptool against virtual ESP32s (simulator/esp_rom.py:
  esptool's serial protocol on a pty), three in parallel: detect, erase, write,
  verify; a flash that does not keep what was written fails the verification.
- A port where no chip answers, a wrong or damaged firmware file, code that
  is not MicroPython: one line and a non-zero exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_for
from test_kioskctl_device import kioskctl, one_line_failure

from host_tools.errors import Failure
from host_tools.flash import APP_OFFSET, FS_OFFSET, check_firmware, firmware_offset
from host_tools.image import BLOCK_SIZE, read_fs_image
from simulator.broker import Broker
from simulator.esp_rom import firmware_image

ROOT = Path(__file__).resolve().parent.parent

# Mounts the image and runs /main.py from it, as an ESP32 boots from its vfs partition.
BOOT_FROM_IMAGE = """
import os, sys, vfs
class ImageFile:
    def __init__(self, path):
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        self.blocks = self.f.tell() // 4096
    def readblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)
    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.write(buf)
        self.f.flush()
    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 4096
        if op == 6:
            self.f.seek(arg * 4096)
            self.f.write(b"\\xff" * 4096)
        return 0
vfs.mount(vfs.VfsLfs2(ImageFile(sys.argv[1]), readsize=32, progsize=32, lookahead=32), "/flash")
os.chdir("/flash")
sys.path.insert(0, "/flash")
print("mounted", sorted(os.listdir("/flash")))
exec(open("main.py").read())
"""


def esp_image(chip: str) -> bytes:
    return firmware_image(chip)


@pytest.fixture(scope="module")
def esp32_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fw") / "ESP32_GENERIC-test.bin"
    path.write_bytes(esp_image("esp32"))
    return path


def test_image_boots_in_real_micropython(tmp_path: Path, broker: Broker,
                                          micropython_bin: str, esp32_bin: Path) -> None:
    device = "kiosk-img-0001"
    broker.add_account(device, "img-secret")
    broker.restart()
    fs = tmp_path / "fs.img"
    made = kioskctl("image", "--device", device, "--gate", "B", "--venue", "HCM-Q3-000001",
                    "--broker", f"127.0.0.1:{broker.port}", "--no-tls", "--no-ntp",
                    "--no-wifi", "--fleet", str(tmp_path / "fleet"), "--out", str(fs),
                    "--merge-with", str(esp32_bin), env={"KIOSKCTL_BROKER_PASSWORD": "img-secret"})
    assert made.returncode == 0, made.stderr
    assert "img-secret" not in made.stdout
    data = fs.read_bytes()
    assert len(data) == 2 * 1024 * 1024 and len(data) % BLOCK_SIZE == 0
    files = read_fs_image(data)
    assert {"main.py", "config.json", "app-manifest.json", "kiosk/app.mpy"} <= set(files)

    # The merged image: firmware at 0x1000 and the filesystem at 0x200000, one write at 0x0.
    merged = (tmp_path / f"{device}-merged.bin").read_bytes()
    firmware = esp32_bin.read_bytes()
    assert merged[0x1000:0x1000 + len(firmware)] == firmware
    assert merged[FS_OFFSET:FS_OFFSET + len(data)] == data
    assert "write-flash 0x0" in made.stdout

    # Boot: the real MicroPython mounts the image with VfsLfs2 and runs the app from it.
    online = threading.Event()
    watcher = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    from conftest import BRIDGE_PASSWORD

    from simulator.broker import BRIDGE_USER

    watcher.username_pw_set(BRIDGE_USER, BRIDGE_PASSWORD)
    watcher.on_connect = lambda c, *a: c.subscribe(f"kiosk/{device}/status", 1)
    watcher.on_message = lambda c, u, m: m.payload == b"online" and online.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT_FROM_IMAGE)
    log = tmp_path / "console.log"
    with open(log, "wb") as console:
        proc = subprocess.Popen([micropython_bin, str(boot), str(fs)], stdout=console,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={"KIOSK_STATE": "/flash", "MICROPYPATH": ".frozen",
                                     "PATH": os.environ.get("PATH", "")})
    try:
        wait_for(online.is_set, timeout=20,
                 what=f"the kiosk booted from the image online; console:\n{log.read_text()}")
        text = log.read_text()
        assert "mounted" in text and f"I app: kiosk {device}" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        watcher.loop_stop()
        watcher.disconnect()
    # What the app wrote went into the image, through MicroPython's LittleFS.
    after = read_fs_image(fs.read_bytes())
    assert "display.jsonl" in after and b"KHOI DONG" in after["display.jsonl"]


def test_firmware_images_checked_with_esptool(tmp_path: Path, esp32_bin: Path) -> None:
    ok = kioskctl("flash", str(esp32_bin), "--check-only")
    assert ok.returncode == 0, ok.stderr
    assert "for ESP32, goes at 0x1000" in ok.stdout
    s3 = tmp_path / "s3.bin"
    s3.write_bytes(esp_image("esp32s3"))
    ok_s3 = kioskctl("flash", str(s3), "--check-only")
    assert "for ESP32-S3, goes at 0x0" in ok_s3.stdout, ok_s3.stderr
    assert firmware_offset("ESP32-S2") == 0x1000 and firmware_offset("ESP32-C6") == 0x0
    # An image for another chip than the one on the board (flash checks this once connected).
    with pytest.raises(Failure, match="is for ESP32-S3 but the board is ESP32"):
        check_firmware(s3.read_bytes(), "s3.bin", chip="ESP32")

    wrong = tmp_path / "firmware.zip"
    shutil.make_archive(str(wrong.with_suffix("")), "zip", ROOT / "hardware")
    one_line_failure(kioskctl("flash", str(wrong), "--check-only"),
                     "not an ESP32 firmware image")
    damaged = bytearray(esp32_bin.read_bytes())
    damaged[APP_OFFSET - 0x1000 + 64] ^= 0xFF
    bad = tmp_path / "damaged.bin"
    bad.write_bytes(bytes(damaged))
    one_line_failure(kioskctl("flash", str(bad), "--check-only"), "damaged")
    short = tmp_path / "bootloader-only.bin"
    short.write_bytes(esp32_bin.read_bytes()[:4096])
    one_line_failure(kioskctl("flash", str(short), "--check-only"), "no app")
    one_line_failure(kioskctl("flash", str(tmp_path / "nope.bin"), "--port", "/dev/null"),
                     "cannot read firmware")
    one_line_failure(kioskctl("flash", str(esp32_bin)), "no port given")


def test_flash_without_a_chip_fails_plainly(esp32_bin: Path) -> None:
    master, slave = os.openpty()  # a serial port where nothing answers
    try:
        port = os.ttyname(slave)
        silent = kioskctl("flash", str(esp32_bin), "--port", port, "--connect-attempts", "1",
                          "--before", "no-reset")
        one_line_failure(silent, "no chip answered on", "BOOT")
    finally:
        os.close(master)
        os.close(slave)
    one_line_failure(kioskctl("flash", str(esp32_bin), "--port", "/dev/ttyUSB-unplugged",
                              "--connect-attempts", "1"), "no device on")


def test_build_refuses_code_that_is_not_micropython(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    shutil.copytree(ROOT / "firmware", firmware,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (firmware / "kiosk" / "bad.py").write_text("x = 1\nmatch x:\n    case 1:\n        pass\n")
    out = tmp_path / "bundle"
    line = one_line_failure(kioskctl("build", "--firmware", str(firmware), "--out", str(out)),
                            "bad.py line 2", "not valid MicroPython")
    assert "SyntaxError" in line
    assert not out.exists()


def test_provisioning_an_image_needs_wifi_for_an_esp32(tmp_path: Path) -> None:
    proc = kioskctl("image", "--device", "kiosk-img-0002", "--gate", "A", "--venue", "V",
                    "--broker", "10.0.0.2", "--fleet", str(tmp_path / "fleet"),
                    "--out", str(tmp_path / "x.img"))
    one_line_failure(proc, "wifi.ssid")
    assert not (tmp_path / "x.img").exists()


def test_tls_material_from_the_fleet_ca(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from mqtt_bridge.documents import generate_operator_key, operator_key_b64

    fleet = tmp_path / "fleet"
    operator = tmp_path / "operator.pub"
    operator.write_text(operator_key_b64(generate_operator_key().public_key()))
    proc = kioskctl("image", "--device", "kiosk-tls-0001", "--gate", "A", "--venue", "V1",
                    "--broker", "mqtt.example.vn", "--wifi-ssid", "venue-wifi",
                    "--operator-key", str(operator), "--fleet", str(fleet),
                    "--out", str(tmp_path / "fs.img"),
                    env={"KIOSKCTL_WIFI_PASSWORD": "wifi-secret-1"})
    assert proc.returncode == 0, proc.stderr
    assert "wifi-secret-1" not in proc.stdout + proc.stderr
    files = read_fs_image((tmp_path / "fs.img").read_bytes())
    import json

    cfg = json.loads(files["config.json"])
    assert cfg["broker"]["port"] == 8883 and cfg["wifi"]["password"] == "wifi-secret-1"
    assert cfg["operator_key"] == operator.read_text()
    tls = cfg["broker"]["tls"]
    ca = x509.load_pem_x509_certificate(files[tls["ca"][1:]])
    cert = x509.load_pem_x509_certificate(files[tls["cert"][1:]])
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert cert.subject.rfc4514_string() == "CN=kiosk-tls-0001"
    assert b"PRIVATE KEY" in files[tls["key"][1:]]
    for secret in (fleet / "ca.key", fleet / "devices" / "kiosk-tls-0001" / "kiosk.key",
                   fleet / "devices" / "kiosk-tls-0001" / "broker-password"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    registry = json.loads((fleet / "fleet.json").read_text())["devices"]["kiosk-tls-0001"]
    assert registry["tls"] and registry["via"] == "image"
    passwd = kioskctl("fleet", "passwd", "--fleet", str(fleet))
    assert passwd.stdout.startswith("kiosk-tls-0001:$7$101$")


class FakeESP:
    """What esptool's detect_chip returns, for a chip that is not there."""

    def __init__(self, chip: str) -> None:
        self.CHIP_NAME = chip
        self.IS_STUB = False
        self.closed = False
        self._port = self

    def change_baud(self, baud: int) -> None:
        self.baud = baud

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("chip,image_chip,offset", [("ESP32", "esp32", 0x1000),
                                                    ("ESP32-S3", "esp32s3", 0x0)])
def test_flash_drives_esptool_with_the_right_offset(monkeypatch: pytest.MonkeyPatch, chip: str,
                                                    image_chip: str, offset: int) -> None:
    import esptool.cmds

    from host_tools import flash

    calls: list[tuple[str, object]] = []
    esp = FakeESP(chip)

    def write_flash(e: FakeESP, parts: list[tuple[int, bytes]], **kw: object) -> None:
        from esptool.logger import log

        log.progress_bar(1, 2, prefix="Writing")  # esptool's own progress reaches ours
        calls.append(("write", [(a, len(d)) for a, d in parts]))

    monkeypatch.setattr(esptool.cmds, "detect_chip",
                        lambda port, baud, mode, connect_attempts: calls.append(
                            ("detect", (port, mode, connect_attempts))) or esp)
    monkeypatch.setattr(esptool.cmds, "run_stub", lambda e: calls.append(("stub", None)) or e)
    monkeypatch.setattr(esptool.cmds, "erase_flash", lambda e: calls.append(("erase", None)))
    monkeypatch.setattr(esptool.cmds, "write_flash", write_flash)
    monkeypatch.setattr(esptool.cmds, "reset_chip", lambda e, mode: calls.append(("reset", mode)))
    image = esp_image(image_chip)
    seen: list[str] = []
    summary = flash.flash("/dev/ttyFAKE0", image, "fw.bin", erase=True, fs_image=b"\xff" * 8192,
                          attempts=2, progress=lambda f, what: seen.append(what))
    assert calls == [("detect", ("/dev/ttyFAKE0", "default-reset", 2)), ("stub", None),
                     ("erase", None), ("write", [(offset, len(image)), (FS_OFFSET, 8192)]),
                     ("reset", "hard-reset")]
    assert esp.closed and esp.baud == 460800
    assert "Writing" in seen and "erasing the flash" in seen
    assert f"written at {offset:#x} + filesystem at {FS_OFFSET:#x}" in summary

    # The board turns out to be another chip than the image's: refused before writing.
    calls.clear()
    other = FakeESP("ESP32-C3")
    monkeypatch.setattr(esptool.cmds, "detect_chip", lambda *a, **k: other)
    with pytest.raises(Failure, match="but the board is ESP32-C3"):
        flash.flash("/dev/ttyFAKE0", image, "fw.bin")
    assert not [c for c in calls if c[0] in ("erase", "write")] and other.closed


def test_flash_three_virtual_esp32s_in_parallel(tmp_path: Path, esp32_bin: Path) -> None:
    from simulator.esp_rom import VirtualESP32

    fs = tmp_path / "fs.img"
    fs.write_bytes(b"\x5a" * (64 * 1024))
    chips = [VirtualESP32().start() for _ in range(3)]
    try:
        ports = [a for c in chips for a in ("--port", c.port)]
        proc = kioskctl("flash", str(esp32_bin), *ports, "--erase", "--fs-image", str(fs),
                        "--before", "no-reset", "--connect-attempts", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "3 of 3 boards ok" in proc.stdout
        assert proc.stderr == ""  # esptool's own chatter stays out of the technician's way
        firmware = esp32_bin.read_bytes()
        for chip in chips:
            assert chip.erased
            assert chip.flash[0x1000:0x1000 + len(firmware)] == firmware
            assert chip.flash[FS_OFFSET:FS_OFFSET + 64 * 1024] == fs.read_bytes()
            assert 0x13 in chip.commands  # esptool verified what it wrote (SPI_FLASH_MD5)
    finally:
        for chip in chips:
            chip.stop()

    # A flash that does not keep what was written: the verification says so, in one line.
    bad = VirtualESP32(bad_flash=True).start()
    try:
        one_line_failure(kioskctl("flash", str(esp32_bin), "--port", bad.port,
                                  "--before", "no-reset", "--connect-attempts", "1"),
                         bad.port, "did not verify")
    finally:
        bad.stop()
