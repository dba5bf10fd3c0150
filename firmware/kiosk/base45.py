# Base45 decoding (RFC 9285), as used by EU DCC "HC1:" codes.
# Returns None on any invalid input instead of raising: garbage is common on a
# scanner line and must stay cheap. Heap: the output bytearray only.

_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE = bytearray(b"\xff" * 256)
for _i in range(45):
    _VALUE[_ALPHABET[_i]] = _i
del _i


def decode(text):
    """Decode a Base45 string (str or bytes); None if it is not valid Base45."""
    src = text.encode() if isinstance(text, str) else text
    n = len(src)
    if n % 3 == 1:
        return None
    out = bytearray((n // 3) * 2 + (1 if n % 3 else 0))
    table = _VALUE
    o = 0
    i = 0
    while i + 3 <= n:
        c0 = table[src[i]]
        c1 = table[src[i + 1]]
        c2 = table[src[i + 2]]
        if c0 == 255 or c1 == 255 or c2 == 255:
            return None
        v = c0 + c1 * 45 + c2 * 2025
        if v > 0xFFFF:
            return None
        out[o] = v >> 8
        out[o + 1] = v & 0xFF
        o += 2
        i += 3
    if i < n:
        c0 = table[src[i]]
        c1 = table[src[i + 1]]
        if c0 == 255 or c1 == 255:
            return None
        v = c0 + c1 * 45
        if v > 0xFF:
            return None
        out[o] = v
    return bytes(out)
