"""Signature verification figures (part of `make bench`, simulator/bench.py).

- hc1_verify_ps256_2048_ms, hc1_verify_es256_ms: one HC1 certificate read and
  verified (Base45, zlib, COSE, CWT, trust list lookup, signature, key usage,
  dates) by the firmware under the MicroPython unix port; _alloc_bytes: what
  one such verification allocates in all (no collection meanwhile).
- hc1_verify_min_heapsize_bytes: the smallest MicroPython heap (`micropython
  -X heapsize=`, by bisection: the real peak, fragmentation included) in
  which the firmware's modules load, the trust list (4 signers: RSA-2048,
  3072, 4096, P-256) is parsed, and a PS256 and an ES256 certificate are read
  and verified.
- hc1_read_peak_heap_bytes, hc1_verify_peak_heap_bytes: how much more that
  smallest heap must be than for the modules and the trust list alone, to
  read (resp. read and verify) the two certificates: what a verification
  adds to the peak. 0 means nothing: parsing the trust list (at boot, or
  when a new one arrives) needs more than a verification does.
- doc_verify_ms: one operator-signed policy document (JWS ES256) verified.
- host_hcert_verify_per_s: mqtt_bridge.hcert.verify_hc1 (cryptography) rate.

    python -m simulator.bench_verify
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mqtt_bridge.hcert import TrustList, verify_hc1
from simulator.kiosk import FIRMWARE_DIR, micropython_binary
from simulator.signers import DccSigner, TestPKI, dcc_payload, sign_hc1, trust_body

FIGURE_PREFIX = "bench: "
NOW = 1795564800  # 2026-11-25
N = 30
SCRIPT = Path(__file__).with_name("bench_verify_mpy.py")

Results = dict[str, dict[str, float | str]]


def _report(results: Results, name: str, value: float, unit: str) -> None:
    results[name] = {"value": value, "unit": unit}
    print(f"bench: {name} = {value:.3f} {unit}", flush=True)


def _inputs(work: Path) -> tuple[Path, list[str], TrustList]:
    pki = TestPKI()
    rng = random.Random(11)
    vn, es = pki.signer("vn"), pki.signer("es256")

    def certs(signer: DccSigner, n: int) -> list[str]:
        return [sign_hc1(signer, dcc_payload("vtr"[i % 3], f"URN:UVCI:01:VN:B{i:06d}#X"),
                         iat=NOW - 86400, exp=NOW + 300 * 86400, rng=rng) for i in range(n)]

    ps256, es256 = certs(vn, N), certs(es, N)
    policy = {"level": 2, "pad": "x" * 2000}  # about the size of a real policy
    doc = pki.policy_document(policy, serial=1)
    body = trust_body([vn, es, pki.signer("rsa3072"), pki.signer("rsa4096")])
    path = work / "verify.json"
    path.write_text(json.dumps({"trust_body": body, "ps256": ps256, "es256": es256,
                                "doc": doc, "operator_key": pki.operator_key_b64, "now": NOW}))
    return path, ps256 + es256, TrustList.from_body(body)


def _run(path: Path, mode: str, heap: int | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [micropython_binary()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    return subprocess.run(
        [*cmd, "-c", SCRIPT.read_text()],
        env={"MICROPYPATH": f"{FIRMWARE_DIR}:.frozen", "BENCH_VERIFY": str(path),
             "BENCH_MODE": mode},
        cwd=path.parent, capture_output=True, text=True, timeout=120,
    )


def _min_heap(path: Path, mode: str) -> int:
    lo, hi = 4096, 1 << 20  # fails at lo, succeeds at hi
    if _run(path, mode, hi).stdout.strip() != "ok":
        raise RuntimeError(f"{mode}: does not run in {hi} bytes of heap")
    while hi - lo > 128:
        mid = (lo + hi) // 2
        if _run(path, mode, mid).stdout.strip() == "ok":
            hi = mid
        else:
            lo = mid
    return hi


def bench_verify(results: Results, work: Path) -> None:
    """All the figures above, into `results` (and printed)."""
    path, texts, trust = _inputs(work)
    proc = _run(path, "time")
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith(FIGURE_PREFIX):
            name, rest = line[len(FIGURE_PREFIX):].split(" = ")
            value, unit = rest.split()
            _report(results, name, float(value), unit)
    base = _min_heap(path, "heap")
    verify = _min_heap(path, "heap1")
    _report(results, "hc1_verify_min_heapsize_bytes", verify, "bytes")
    _report(results, "hc1_read_peak_heap_bytes", max(0, _min_heap(path, "heap0") - base), "bytes")
    _report(results, "hc1_verify_peak_heap_bytes", max(0, verify - base), "bytes")
    t0 = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for t in texts:
            assert verify_hc1(t, trust, NOW).ok
    _report(results, "host_hcert_verify_per_s", rounds * len(texts) / (time.perf_counter() - t0),
            "1/s")


def main() -> int:
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-verify-") as tmp:
        bench_verify(results, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
