# Duplicate scans: a person who holds the same code under the scanner twice
# (or twice within the window) sees the previous verdict again, and the
# kiosk records it once. Codes are remembered by a hash, never in clear
# (design invariant 7), in a fixed ring of SLOTS entries: bounded memory,
# the oldest entry makes room for a new one.
# Heap: SLOTS x (16-byte digest + tick + a reference to the shown screen),
# about 1.5 KB for 32 slots.

import hashlib

from kiosk.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

SLOTS = const(32)
_DIGEST = const(16)


def key(frame):
    """The hash a code is remembered by (bytes in, 16 bytes out)."""
    return hashlib.sha256(frame).digest()[:_DIGEST]


class Dedup:
    def __init__(self, slots=SLOTS):
        self._keys = [b""] * slots
        self._at = [0] * slots
        self._value = [None] * slots
        self._next = 0

    def seen(self, k, now_ms, window_s):
        """What was remembered for key `k` within the last window_s seconds
        (the previous verdict), or None."""
        if window_s <= 0:
            return None
        keys = self._keys
        for i in range(len(keys)):
            if keys[i] == k:
                if ticks_diff(now_ms, self._at[i]) < window_s * 1000:
                    return self._value[i]
                return None
        return None

    def remember(self, k, now_ms, value):
        """Remember `value` (a verdict) for key `k`, replacing an older entry
        for the same key, else the oldest slot."""
        keys = self._keys
        slot = -1
        for i in range(len(keys)):
            if keys[i] == k:
                slot = i
                break
        if slot < 0:
            slot = self._next
            self._next = (slot + 1) % len(keys)
        keys[slot] = k
        self._at[slot] = now_ms
        self._value[slot] = value

    def forget(self):
        """Drop everything (a new policy may decide differently)."""
        for i in range(len(self._keys)):
            self._keys[i] = b""
            self._value[i] = None
