# time.ticks_diff for modules that also run under CPython (host tests and
# tools): MicroPython's wrapping millisecond ticks on the device, plain
# integers on CPython. Heap: nothing.

import time

if hasattr(time, "ticks_diff"):
    ticks_diff = time.ticks_diff
else:  # CPython: plain integers, no wrap-around
    def ticks_diff(a, b):
        return a - b
