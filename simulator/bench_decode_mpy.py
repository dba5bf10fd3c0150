# Run under the MicroPython unix port by simulator/bench.py (as `-c` text, so
# this folder's kiosk.py cannot shadow the firmware's kiosk package), with
# BENCH_SAMPLES naming a JSON list of {"type", "text"}.
# Times codes.read() per code type and reports the peak heap of one decode.
import gc
import json
import os
import time

from kiosk import codes

with open(os.getenv("BENCH_SAMPLES")) as f:
    samples = json.load(f)
N = 300
for kind in ("cccd", "pccovid", "hc1"):
    texts = [s["text"] for s in samples if s["type"] == kind]
    t0 = time.ticks_us()
    for i in range(N):
        codes.read(texts[i % len(texts)])
    per = time.ticks_diff(time.ticks_us(), t0) / N
    gc.collect()
    base = gc.mem_alloc()
    gc.disable()
    codes.read(texts[0])
    peak = gc.mem_alloc() - base
    gc.enable()
    print("bench: firmware_read_%s_us = %.1f us" % (kind, per))
    print("bench: firmware_read_%s_alloc_bytes = %d bytes" % (kind, peak))
