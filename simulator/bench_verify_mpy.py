# Run under the MicroPython unix port by simulator/bench_verify.py (as `-c`
# text, so no simulator module can shadow the firmware's kiosk package), with
# BENCH_VERIFY naming a JSON file {"trust_body", "ps256", "es256", "doc",
# "operator_key", "now"} and BENCH_MODE one of:
#   time   - print the bench figures (per verification, decode included)
#   heap   - modules and trust list only (heap probe: the baseline)
#   heap0  - and read one PS256 and one ES256 certificate (heap probe)
#   heap1  - and read and verify them (heap probe)
import binascii
import gc
import json
import os
import time

from kiosk import docs, hc1, trust

with open(os.getenv("BENCH_VERIFY")) as f:
    data = json.load(f)
mode = os.getenv("BENCH_MODE")
now = data["now"]
tl, err = trust.from_body(data["trust_body"])
assert err is None and not tl.skipped
key = binascii.a2b_base64(data["operator_key"])
ps = data["ps256"]
es = data["es256"]
doc = data["doc"]
del data
gc.collect()


def check(text):
    cert, err = hc1.read(text)
    assert err is None, err
    reason = hc1.verify(cert, tl, now)
    assert reason is None, reason


if mode == "time":
    for name, texts in (("ps256_2048", ps), ("es256", es)):
        check(texts[0])  # warm-up (the G table of P-256 is built on first use)
        t0 = time.ticks_us()
        for t in texts:
            check(t)
        per = time.ticks_diff(time.ticks_us(), t0) / len(texts) / 1000
        gc.collect()
        base = gc.mem_alloc()
        gc.disable()
        check(texts[0])
        alloc = gc.mem_alloc() - base
        gc.enable()
        print(f"bench: hc1_verify_{name}_ms = {per:.3f} ms")
        print(f"bench: hc1_verify_{name}_alloc_bytes = {alloc} bytes")
    n = 20
    t0 = time.ticks_us()
    for _ in range(n):
        d, err = docs.verify(doc, key, "policy", 0, now)
        assert err is None, err
    per = time.ticks_diff(time.ticks_us(), t0) / n / 1000
    print(f"bench: doc_verify_ms = {per:.3f} ms")
    print(f"bench: doc_verify_bytes = {len(doc)} bytes")
elif mode == "heap":
    print("ok")
else:
    for t in (ps[0], es[0]):
        if mode == "heap1":
            check(t)
        else:
            cert, err = hc1.read(t)
            assert err is None
        gc.collect()
    print("ok")
