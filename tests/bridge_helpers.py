"""Helpers of the bridge's scale and feature tests (tests/test_bridge_*.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
from conftest import BRIDGE_PASSWORD, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.broker import BRIDGE_USER, Broker
from simulator.fleetload import LoadResult, kiosk_password, run_load
from simulator.stack import ServiceProcess

METRIC_LINE = re.compile(r"^(kiosk_bridge_[a-z_]+?)(?:_total)? ([-0-9.e+]+)$", re.M)


def fleet_broker(state: Path, devices: list[str]) -> Broker:
    """A running Mosquitto (the project's config and ACL) with the bridge and every kiosk."""
    broker = Broker(state)
    broker.add_account(BRIDGE_USER, BRIDGE_PASSWORD)
    for device in devices:
        broker.add_account(device, kiosk_password(device))
    return broker.start()


def backend_identities(backend: ServiceProcess) -> list[tuple[str, int]]:
    """Every (device, seq) the backend holds, read from its database file."""
    assert backend.db_path is not None
    db = sqlite3.connect(f"file:{backend.db_path}?mode=ro", uri=True)
    try:
        return [(str(d), int(s)) for d, s in db.execute("SELECT device, seq FROM checkins")]
    finally:
        db.close()


def backend_total(backend: ServiceProcess) -> int:
    response = httpx.get(f"{backend.url}/api/v1/stats", timeout=10)
    response.raise_for_status()
    return int(response.json()["total"])


def metrics_port(bridge: ServiceProcess) -> int:
    """The /metrics port this run of the bridge logged (it was started with port 0)."""
    match = wait_for(
        lambda: re.search(r"metrics on http://127.0.0.1:(\d+)/metrics", bridge.log_text()),
        timeout=20,
        what="metrics",
    )
    return int(match.group(1))


def scrape(port: int) -> dict[str, float]:
    """kiosk_bridge_* samples of /metrics (counters without their _total suffix)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {name: float(value) for name, value in METRIC_LINE.findall(text)}


class BackgroundLoad:
    """simulator.fleetload in a thread; `join()` returns its result or raises its error."""

    def __init__(self, port: int, devices: list[str], per_kiosk: int, **kwargs: Any) -> None:
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = run_load(port, devices, per_kiosk, **kwargs)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="fleetload", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> LoadResult:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("the load generator did not finish")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _cn(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def tls_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    """A test certificate (EC), valid since yesterday for 30 days; SAN 127.0.0.1 if server."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_cn(subject))
        .issuer_name(_cn(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """<path>.crt and <path>.key, PEM."""
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
