# Frame reassembly for a GM65 / GM805 class QR scanner in continuous mode.
#
# The module sends each code followed by CR (optionally CRLF). Bytes arrive in
# arbitrary chunks; this turns them into whole frames. A frame is unreadable
# when it outgrows MAX_FRAME (the rest is discarded) or when bytes stop coming
# for GAP_MS without a terminator. Either is reported once, when the frame
# ends (terminator or pause), so every frame gets exactly one answer.
# Heap: one preallocated MAX_FRAME buffer; a frame is copied out once.

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_FRAME = const(2048)
GAP_MS = const(300)

_CR = const(13)
_LF = const(10)

# What feed() reports besides complete frames.
TOO_LONG = const(1)
TIMED_OUT = const(2)


class FrameReader:
    def __init__(self, max_frame=MAX_FRAME, gap_ms=GAP_MS):
        self._buf = bytearray(max_frame)
        self._max = max_frame
        self._gap = gap_ms
        self._len = 0
        self._discarding = False
        self._last_ms = 0

    def feed(self, data, now_ms, out):
        """Consume received bytes; append to `out` each complete frame (bytes),
        or TOO_LONG for a frame that outgrew the buffer."""
        buf = self._buf
        n = self._len
        for b in data:
            if b == _CR or b == _LF:
                if self._discarding:
                    out.append(TOO_LONG)
                    self._discarding = False
                elif n:
                    out.append(bytes(buf[:n]))
                n = 0
            elif self._discarding:
                pass
            elif n < self._max:
                buf[n] = b
                n += 1
            else:
                # Drop the rest of this frame; reported when it ends.
                self._discarding = True
                n = 0
        self._len = n
        if data:
            self._last_ms = now_ms

    def tick(self, now_ms, out, ticks_diff):
        """Call when idle: a frame left unfinished for the gap is reported
        (TIMED_OUT, or TOO_LONG if it had outgrown the buffer)."""
        if (self._len or self._discarding) and ticks_diff(now_ms, self._last_ms) >= self._gap:
            out.append(TOO_LONG if self._discarding else TIMED_OUT)
            self._len = 0
            self._discarding = False

    def pending(self):
        """True while a partial frame waits for its terminator."""
        return self._len > 0 or self._discarding
