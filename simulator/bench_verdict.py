"""Scan-to-display figures for real verdicts (part of `make bench`, simulator/bench.py).

A virtual kiosk (the firmware under the MicroPython unix port) holding an
operator-signed trust list, with no network at all (its broker address
answers nothing), so every verdict is decided on the kiosk:

- scan_to_display_hc1_ps256_ms_p50 / _max: an HC1 vaccination certificate
  signed PS256 (RSA-2048, like Viet Nam's signer) written to the scanner line
  until its verdict is in the display log: frame, Base45, zlib, COSE, RSA-PSS
  verification, the city's rules, journal append, display;
- scan_to_display_identity_offline_ms_p50 / _max: a CCCD code, same path,
  decided by the offline rule (admitted unverified: the kiosk is offline).

    python -m simulator.bench_verdict
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulator.broker import free_port
from simulator.kiosk import VirtualKiosk, kiosk_config
from simulator.signers import TestPKI, dcc_payload, sign_hc1

N = 40

Results = dict[str, dict[str, float | str]]


def _report(results: Results, name: str, value: float, unit: str) -> None:
    results[name] = {"value": value, "unit": unit}
    print(f"bench: {name} = {value:.3f} {unit}", flush=True)


def _certificates(pki: TestPKI, n: int) -> list[str]:
    now = datetime.now(UTC)
    signer = pki.signer("vn")
    rng = random.Random(7)
    day = (now.date() - timedelta(days=30)).isoformat()
    iat = int((now - timedelta(days=10)).timestamp())
    return [sign_hc1(signer, dcc_payload("v", f"URN:UVCI:01:VN:BENCH{i:06d}#A", day=day),
                     iat=iat, exp=iat + 365 * 86400, rng=rng) for i in range(n)]


def _cccds(n: int) -> list[str]:
    return [f"0792010{i:05d}||Nguyễn Văn An|01011990|Nam|12 Lê Lợi, Q1|15082021"
            for i in range(n)]


def _time_scans(kiosk: VirtualKiosk, texts: list[str]) -> list[float]:
    assert kiosk.scanner is not None
    out = []
    for text in texts:
        before = len(kiosk.display.verdicts())
        t0 = time.perf_counter()
        kiosk.scanner.scan(text)
        deadline = t0 + 10
        while len(kiosk.display.verdicts()) <= before:
            if time.perf_counter() > deadline:
                raise TimeoutError("the kiosk did not answer a scan")
            time.sleep(0.0005)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_verdict(results: Results, work: Path) -> None:
    """The figures above, into `results` (and printed)."""
    pki = TestPKI()
    # No broker behind this port: the kiosk stays offline, the scan path must not care.
    cfg = kiosk_config("kiosk-bench-v", "HCM-Q1-000123", "A", free_port(), "unused",
                       operator_key=pki.operator_key_b64)
    kiosk = VirtualKiosk(work / "kiosk-verdict", cfg)
    kiosk.install_document("trust", pki.trust_document([pki.signer("vn")]))
    certs = _certificates(pki, N)
    cccds = _cccds(N)
    try:
        kiosk.start()
        kiosk.wait_ready()
        shown = kiosk.display.verdicts
        for name, texts, want in (("hc1_ps256", certs, "HOP LE - MOI VAO"),
                                  ("identity_offline", cccds, "MOI VAO-HAU KIEM")):
            ms = _time_scans(kiosk, texts)
            lines = {e["lines"][0] for e in shown()[-len(texts):]}
            if lines != {want}:
                raise RuntimeError(f"{name}: unexpected verdicts {lines}:\n"
                                   f"{kiosk.console()[-1500:]}")
            _report(results, f"scan_to_display_{name}_ms_p50", statistics.median(ms), "ms")
            _report(results, f"scan_to_display_{name}_ms_max", max(ms), "ms")
    finally:
        kiosk.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-verdict-") as tmp:
        bench_verdict({}, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
