# A bounded CBOR decoder (RFC 8949) for COSE / CWT / DCC payloads.
#
# Written here because micropython-lib has no CBOR decoder. Bounded so that
# hostile input cannot exhaust the heap or the stack: nesting depth, number of
# items in total, and every length is checked against the bytes actually left.
# Tags are unwrapped (their number is dropped); callers that care about an
# outer tag (COSE_Sign1 = 18) look at the first byte. Raises ValueError on
# malformed input. Also a small encoder (head, encode) for what signatures
# cover. Heap: the decoded objects only.

import struct

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_DEPTH = const(16)
MAX_ITEMS = const(4096)

_BREAK = object()


class _Decoder:
    def __init__(self, data):
        self.data = data
        self.items = 0

    def _arg(self, info, pos):
        data = self.data
        if info < 24:
            return info, pos
        if info == 24:
            n = 1
        elif info == 25:
            n = 2
        elif info == 26:
            n = 4
        elif info == 27:
            n = 8
        else:
            raise ValueError("cbor: bad additional info")
        end = pos + n
        if end > len(data):
            raise ValueError("cbor: truncated")
        v = 0
        while pos < end:
            v = (v << 8) | data[pos]
            pos += 1
        return v, end

    def _bytes(self, length, pos):
        end = pos + length
        if end > len(self.data):
            raise ValueError("cbor: truncated")
        return bytes(self.data[pos:end]), end

    def item(self, pos, depth):
        data = self.data
        if pos >= len(data):
            raise ValueError("cbor: truncated")
        if depth > MAX_DEPTH:
            raise ValueError("cbor: nested too deep")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise ValueError("cbor: too many items")
        ib = data[pos]
        major = ib >> 5
        info = ib & 31
        pos += 1
        if major == 7:
            return self._simple(info, pos)
        if info == 31:
            return self._indefinite(major, pos, depth)
        arg, pos = self._arg(info, pos)
        if major == 0:
            return arg, pos
        if major == 1:
            return -1 - arg, pos
        if major == 2:
            return self._bytes(arg, pos)
        if major == 3:
            raw, pos = self._bytes(arg, pos)
            return str(raw, "utf-8"), pos
        if major == 4:
            if arg > len(data) - pos:
                raise ValueError("cbor: array longer than data")
            out = []
            for _ in range(arg):
                v, pos = self.item(pos, depth + 1)
                out.append(v)
            return out, pos
        if major == 5:
            if arg * 2 > len(data) - pos:
                raise ValueError("cbor: map longer than data")
            out = {}
            for _ in range(arg):
                k, pos = self.item(pos, depth + 1)
                v, pos = self.item(pos, depth + 1)
                out[_key(k)] = v
            return out, pos
        # major 6: tag; unwrap
        return self.item(pos, depth + 1)

    def _simple(self, info, pos):
        data = self.data
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22 or info == 23:
            return None, pos
        if info == 25:
            if pos + 2 > len(data):
                raise ValueError("cbor: truncated")
            return _half(data[pos] << 8 | data[pos + 1]), pos + 2
        if info == 26:
            if pos + 4 > len(data):
                raise ValueError("cbor: truncated")
            return struct.unpack(">f", bytes(data[pos:pos + 4]))[0], pos + 4
        if info == 27:
            if pos + 8 > len(data):
                raise ValueError("cbor: truncated")
            return struct.unpack(">d", bytes(data[pos:pos + 8]))[0], pos + 8
        if info == 31:
            return _BREAK, pos
        if info < 24:
            return info, pos
        if info == 24:
            if pos >= len(data):
                raise ValueError("cbor: truncated")
            return data[pos], pos + 1
        raise ValueError("cbor: bad simple value")

    def _indefinite(self, major, pos, depth):
        if major == 2 or major == 3:
            parts = []
            while True:
                v, pos = self.item(pos, depth + 1)
                if v is _BREAK:
                    break
                chunk_ok = isinstance(v, bytes) if major == 2 else isinstance(v, str)
                if not chunk_ok:
                    raise ValueError("cbor: bad string chunk")
                parts.append(v)
            return (b"" if major == 2 else "").join(parts), pos
        if major == 4:
            out = []
            while True:
                v, pos = self.item(pos, depth + 1)
                if v is _BREAK:
                    return out, pos
                out.append(v)
        if major == 5:
            out = {}
            while True:
                k, pos = self.item(pos, depth + 1)
                if k is _BREAK:
                    return out, pos
                v, pos = self.item(pos, depth + 1)
                if v is _BREAK:
                    raise ValueError("cbor: map missing value")
                out[_key(k)] = v
        raise ValueError("cbor: bad indefinite length")


def _key(k):
    if isinstance(k, (list, dict)) or k is _BREAK:
        raise ValueError("cbor: unusable map key")
    return k


def _half(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0 ** -24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    else:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    return -val if h & 0x8000 else val


def decode(data):
    """Decode one CBOR item that must span all of `data`. Raises ValueError."""
    d = _Decoder(data)
    value, pos = d.item(0, 0)
    if value is _BREAK:
        raise ValueError("cbor: unexpected break")
    if pos != len(data):
        raise ValueError("cbor: trailing bytes")
    return value


# -- encoding ----------------------------------------------------------------
# Just enough to rebuild what a signature covers (COSE Sig_structure) and for
# tests: unsigned/negative ints, byte and text strings, arrays, maps, bools,
# None. Canonical lengths (shortest form). Raises ValueError otherwise.


def head(major, n):
    """The initial byte(s) of an item: major type and argument n (>= 0)."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25, n >> 8, n & 0xFF))
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes((mt | 27,)) + n.to_bytes(8, "big")
    raise ValueError("cbor: integer too large")


def encode(obj, depth=0):
    """Encode obj as CBOR bytes (bounded depth)."""
    if depth > MAX_DEPTH:
        raise ValueError("cbor: nested too deep")
    if obj is None:
        return b"\xf6"
    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, (bytes, bytearray)):
        return head(2, len(obj)) + bytes(obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return head(3, len(raw)) + raw
    if isinstance(obj, (list, tuple)):
        parts = [head(4, len(obj))]
        for v in obj:
            parts.append(encode(v, depth + 1))
        return b"".join(parts)
    if isinstance(obj, dict):
        parts = [head(5, len(obj))]
        for k in obj:
            parts.append(encode(k, depth + 1))
            parts.append(encode(obj[k], depth + 1))
        return b"".join(parts)
    raise ValueError("cbor: cannot encode this type")
