"""The firmware's unit tests, run under the real MicroPython interpreter (unix port).

The same test modules in tests/firmware/ also run under CPython through pytest;
here each one runs in `micropython` with the firmware on its path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "firmware"
FIRMWARE = HERE.parent.parent / "firmware"
MODULES = sorted(p.stem for p in HERE.glob("test_fw_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_under_micropython(module: str, micropython_bin: str, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MICROPYPATH": f"{HERE}:{FIRMWARE}:.frozen",
        "KIOSK_TEST_SAMPLES": os.environ["KIOSK_TEST_SAMPLES"],
        "KIOSK_TEST_TMP": str(tmp_path),
    }
    proc = subprocess.run(
        [micropython_bin, str(HERE / "run_mpy.py"), module],
        env=env, cwd=HERE, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout
