# RSASSA-PSS signature verification (RFC 8017 8.1.2 and 9.1.2 EMSA-PSS-VERIFY)
# with SHA-256 and MGF1-SHA-256, for PS256 (COSE alg -37) DCC signers such as
# Viet Nam's (RSA-2048). Moduli of 2048 to 4096 bits. The salt length is
# recovered from the padding (DCC signers use 32 bytes or the maximum), so
# any length the encoding allows is accepted.
# Heap: pow() over the modulus (a few times the modulus size, ~2-4 KB for
# RSA-4096), the encoded message and the mask (each the modulus length).

import hashlib

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MIN_BITS = const(2048)
MAX_BITS = const(4096)
_HLEN = const(32)


def bit_length(n):
    """n.bit_length() for n >= 0 (MicroPython's int has no bit_length)."""
    if n <= 0:
        return 0
    h = "%x" % n
    top = int(h[0], 16)
    return (len(h) - 1) * 4 + (4 if top >= 8 else 3 if top >= 4 else 2 if top >= 2 else 1)


def key_ok(n, e):
    """True if (n, e) is a public key this module verifies with."""
    if not isinstance(n, int) or not isinstance(e, int):
        return False
    bits = bit_length(n)
    return MIN_BITS <= bits <= MAX_BITS and n & 1 == 1 and 3 <= e < n and e & 1 == 1


def _mgf1_xor(em, db_len, seed):
    """Unmask the first db_len bytes of `em` in place with MGF1-SHA-256(seed)."""
    counter = 0
    pos = 0
    c = bytearray(4)
    while pos < db_len:
        c[0] = counter >> 24
        c[1] = (counter >> 16) & 0xFF
        c[2] = (counter >> 8) & 0xFF
        c[3] = counter & 0xFF
        h = hashlib.sha256(seed)
        h.update(c)
        block = h.digest()
        k = 0
        while k < _HLEN and pos < db_len:
            em[pos] ^= block[k]
            pos += 1
            k += 1
        counter += 1


def verify_pss(n, e, digest, sig):
    """Verify an RSASSA-PSS signature `sig` (bytes, the modulus length) over
    the 32-byte SHA-256 `digest` with the public key (n, e). Returns True or
    False; malformed input is False, never an exception."""
    if not key_ok(n, e):
        return False
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != _HLEN:
        return False
    mod_bits = bit_length(n)
    k = (mod_bits + 7) >> 3
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != k:
        return False
    s = int.from_bytes(sig, "big")
    if s >= n:
        return False
    m = pow(s, e, n)
    # EMSA-PSS-VERIFY with emBits = modBits - 1
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) >> 3
    if m >> (8 * em_len):
        return False  # cannot happen for m < n; defensive
    em = bytearray(m.to_bytes(em_len, "big"))
    if em_len < _HLEN + 2 or em[em_len - 1] != 0xBC:
        return False
    db_len = em_len - _HLEN - 1
    h = bytes(em[db_len:db_len + _HLEN])
    # The leftmost 8*emLen - emBits bits of the masked DB must be zero.
    top_bits = 8 * em_len - em_bits
    top_mask = (0xFF >> top_bits) & 0xFF
    if em[0] & ~top_mask & 0xFF:
        return False
    _mgf1_xor(em, db_len, h)
    em[0] &= top_mask
    # DB = PS (zeros) || 0x01 || salt
    i = 0
    while i < db_len and em[i] == 0:
        i += 1
    if i >= db_len or em[i] != 1:
        return False
    salt = bytes(em[i + 1:db_len])
    check = hashlib.sha256(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    check.update(digest)
    check.update(salt)
    return check.digest() == h
