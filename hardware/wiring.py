"""Draw the reference wiring diagram (wiring.svg) from the pin map (pinmap.json).

    python hardware/wiring.py           # rewrite hardware/wiring.svg
    python hardware/wiring.py --check   # exit 1 if wiring.svg is not what pinmap.json gives

Standard library only. The output is deterministic (no dates, stable order), so
the committed SVG can be checked against the pin map by a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PINMAP = HERE / "pinmap.json"
SVG = HERE / "wiring.svg"

WIDTH = 980
ROW = 30  # vertical pitch of pins
ESP_X, ESP_W = 40, 250
DEV_X, DEV_W = 640, 300
TOP = 90


@dataclass(frozen=True)
class Signal:
    """One wire: an ESP32 GPIO to a pin of a peripheral."""

    gpio: int
    function: str  # what the GPIO does, e.g. "UART2 TX"
    device: str  # key of the peripheral box
    pin: str  # the peripheral's pin name
    colour: str


@dataclass(frozen=True)
class Device:
    key: str
    title: str
    lines: tuple[str, ...]  # details printed in the box (model, power)


def _signals(pm: dict[str, Any]) -> list[Signal]:
    s, i2c, led, bz = pm["scanner"], pm["i2c"], pm["rgb_led"], pm["buzzer"]
    out = [
        Signal(s["tx"], f"UART{s['uart']} TX", "scanner", "RX", "#1f77b4"),
        Signal(s["rx"], f"UART{s['uart']} RX", "scanner", "TX", "#1f77b4"),
        Signal(i2c["sda"], f"I2C{i2c['id']} SDA", "lcd", "SDA", "#2ca02c"),
        Signal(i2c["scl"], f"I2C{i2c['id']} SCL", "lcd", "SCL", "#2ca02c"),
        Signal(led["r"], "PWM red", "led", "R (via resistor)", "#d62728"),
        Signal(led["g"], "PWM green", "led", "G (via resistor)", "#17a34a"),
        Signal(led["b"], "PWM blue", "led", "B (via resistor)", "#1d4ed8"),
        Signal(bz["pin"], f"PWM {bz['freq']} Hz", "buzzer", "NPN base (1 kohm)", "#9467bd"),
    ]
    st = pm.get("status_led")
    if st and st.get("pin") is not None:
        end = "anode" if st.get("active_high", True) else "cathode"
        out.append(Signal(st["pin"], "status", "status", f"{end} (via 330 ohm)", "#ff7f0e"))
    return out


def _devices(pm: dict[str, Any]) -> list[Device]:
    s, i2c, lcd, led, bz = pm["scanner"], pm["i2c"], pm["lcd"], pm["rgb_led"], pm["buzzer"]
    addrs = " or ".join(f"0x{a:02X}" for a in lcd["addrs"])
    common = "common cathode -> GND" if led["common_cathode"] else "common anode -> 3V3"
    out = [
        Device("scanner", "QR scanner GM65 / GM805",
               (f"TTL UART {s['baud']} 8N1, 3.3 V logic", "VCC 5 V (~160 mA), GND")),
        _display(pm, lcd, addrs, i2c),
        Device("led", "RGB LED", (common, f"PWM {led['pwm_freq']} Hz")),
        Device("buzzer", "Passive buzzer + NPN",
               (f"driven at {bz['freq']} Hz", "buzzer + to 5 V, emitter to GND")),
    ]
    st = pm.get("status_led")
    if st and st.get("pin") is not None:
        other = "cathode to GND" if st.get("active_high", True) else "anode to 3V3"
        out.append(Device("status", "Status LED (optional)", ("lit while Wi-Fi is up", other)))
    return out


def _display(pm: dict[str, Any], lcd: dict[str, Any], addrs: str, i2c: dict[str, Any]) -> Device:
    """The display box: the HD44780 LCD, or the SSD1306 OLED when the pin map selects it."""
    if pm.get("display") == "ssd1306" and pm.get("oled"):
        oled_addrs = " or ".join(f"0x{a:02X}" for a in pm["oled"]["addrs"])
        return Device("lcd", "OLED 128x64 SSD1306",
                      (f"I2C {oled_addrs}, {i2c['freq'] // 1000} kHz", "VCC 3.3 V, GND"))
    return Device("lcd", f"LCD {lcd['cols']}x{lcd['rows']} + PCF8574 backpack",
                  (f"I2C {addrs}, {i2c['freq'] // 1000} kHz", "VCC 5 V, GND"))


def _text(x: float, y: float, s: str, size: int = 13, anchor: str = "start",
          weight: str = "normal", fill: str = "#111") -> str:
    return (f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def render(pm: dict[str, Any]) -> str:
    """The SVG text for a pin map (the parsed pinmap.json)."""
    signals = _signals(pm)
    devices = _devices(pm)

    # ESP32 pins, top to bottom, in signal order; then the power pins.
    esp_pin_y = {i: TOP + 50 + i * ROW for i in range(len(signals))}
    esp_h = 50 + len(signals) * ROW + 3 * ROW + 10

    # Peripheral boxes stacked on the right; each pin gets a row, plus its text lines.
    dev_pin_y: dict[int, float] = {}
    boxes: list[tuple[Device, float, float]] = []
    y = TOP - 30
    for dev in devices:
        mine = [i for i, sig in enumerate(signals) if sig.device == dev.key]
        h = 28 + len(dev.lines) * 17 + len(mine) * ROW + 8
        for k, i in enumerate(mine):
            dev_pin_y[i] = y + 28 + len(dev.lines) * 17 + k * ROW + ROW / 2
        boxes.append((dev, y, h))
        y += h + 16
    height = int(max(TOP + esp_h, y) + 60)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        "<!-- Generated by hardware/wiring.py from hardware/pinmap.json: do not edit. -->",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        _text(ESP_X, 32, f"QR check-in kiosk: reference wiring (pin map v{pm['version']})",
              size=18, weight="bold"),
        _text(ESP_X, 54, pm.get("board", "ESP32"), size=13, fill="#444"),
    ]

    # The ESP32 module.
    out.append(f'<rect x="{ESP_X}" y="{TOP}" width="{ESP_W}" height="{esp_h}" rx="8" '
               'fill="#f1f5f9" stroke="#334155" stroke-width="2"/>')
    out.append(_text(ESP_X + 14, TOP + 26, "ESP32 DevKitC", size=15, weight="bold"))
    right = ESP_X + ESP_W
    for i, sig in enumerate(signals):
        py = esp_pin_y[i]
        out.append(_text(right - 12, py + 4, f"GPIO{sig.gpio}", anchor="end", weight="bold"))
        out.append(_text(ESP_X + 14, py + 4, sig.function, size=12, fill="#475569"))
        out.append(f'<circle cx="{right}" cy="{py}" r="4" fill="{sig.colour}"/>')
    py = TOP + 50 + len(signals) * ROW
    power = ("5V  <- 5 V 2 A supply", "GND -> common ground", "3V3 (LED anode if common-anode)")
    for label in power:
        out.append(_text(ESP_X + 14, py + 4, label, size=12, fill="#475569"))
        py += ROW

    # Peripherals.
    for dev, by, bh in boxes:
        out.append(f'<rect x="{DEV_X}" y="{by:g}" width="{DEV_W}" height="{bh:g}" rx="8" '
                   'fill="#fefce8" stroke="#854d0e" stroke-width="2"/>')
        out.append(_text(DEV_X + 14, by + 21, dev.title, size=14, weight="bold"))
        for k, line in enumerate(dev.lines):
            out.append(_text(DEV_X + 14, by + 40 + k * 17, line, size=12, fill="#57534e"))
    for i, sig in enumerate(signals):
        out.append(_text(DEV_X + 14, dev_pin_y[i] + 4, sig.pin, weight="bold"))
        out.append(f'<circle cx="{DEV_X}" cy="{dev_pin_y[i]:g}" r="4" fill="{sig.colour}"/>')

    # Wires: out of the ESP32, down or up in a lane of their own, into the
    # peripheral. Higher pins take lanes further right, so no two wires cross.
    for i, sig in enumerate(signals):
        lane = right + 40 + (len(signals) - 1 - i) * 26
        y0, y1 = esp_pin_y[i], dev_pin_y[i]
        out.append(f'<polyline points="{right},{y0} {lane},{y0} {lane},{y1:g} {DEV_X},{y1:g}" '
                   f'fill="none" stroke="{sig.colour}" stroke-width="2"/>')

    notes = [
        "All grounds common. Logic is 3.3 V: ESP32 pins are not 5 V tolerant (level-shift"
        " a 5 V scanner TX",
        "and keep the LCD backpack's I2C pull-ups at 3.3 V). Keep scanner and LCD leads"
        " under 30 cm.",
    ]
    for k, line in enumerate(notes):
        out.append(_text(ESP_X, height - 38 + k * 17, line, size=12, fill="#444"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def load(path: Path = PINMAP) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError(f'{path}: expected a JSON object with "version": 1')
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pinmap", type=Path, default=PINMAP)
    ap.add_argument("--out", type=Path, default=SVG)
    ap.add_argument("--check", action="store_true", help="only compare, exit 1 if out of date")
    args = ap.parse_args(argv)
    svg = render(load(args.pinmap))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != svg:
            print(f"{args.out} is out of date: run python hardware/wiring.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(svg, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
