# ECDSA verification on NIST P-256 (secp256r1), pure Python big integers, for
# ES256 (COSE alg -7: DCC signers) and the operator's signed documents.
#
# Jacobian coordinates (one field inversion per verification, none for the
# final check), a = -3 doubling, mixed additions against affine tables of odd
# multiples: 1G..31G (computed once, kept) and 1Q..7Q (per verification, one
# batch inversion), interleaved width-w NAF so both scalars share the 256
# doublings (Shamir's trick). Public keys are checked to lie on the curve;
# r and s must be in [1, n-1]. Verification only: nothing here is secret, so
# nothing needs to be constant-time.
# Heap: ~2 KB kept for the table of G multiples and up to ~2 KB for the
# tables of the last 4 public keys; ~3 KB of short-lived big integers during
# a verification (make bench: hc1_verify_es256_*).

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)
GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)

_WG = const(6)  # wNAF width for G: table of 16 odd multiples
_WQ = const(4)  # wNAF width for the public key: 4 odd multiples

_g_table = None  # [(x, y), ...] = 1G, 3G, ..., 31G (affine), built on first use
# Tables of the last few public keys used: a kiosk verifies with the same one
# or two signers (and the operator's key) over and over; building a table
# costs a field inversion (~10% of a verification).
_KEY_CACHE = const(4)
_q_tables = {}


def point(pub):
    """Parse a 65-byte uncompressed SEC1 point (0x04 || X || Y) into (x, y).
    Returns None unless it is a valid point on P-256."""
    if not isinstance(pub, (bytes, bytearray)) or len(pub) != 65 or pub[0] != 4:
        return None
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:65], "big")
    if on_curve(x, y):
        return (x, y)
    return None


def on_curve(x, y):
    """True if (x, y) is an affine point of P-256 (coordinates reduced)."""
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(X, Y, Z):
    # dbl-2001-b (a = -3), with Z3 = 2YZ: 4M + 4S
    if Z == 0 or Y == 0:
        return 0, 1, 0
    p = P
    delta = Z * Z % p
    gamma = Y * Y % p
    beta = X * gamma % p
    alpha = 3 * (X - delta) * (X + delta) % p
    X3 = (alpha * alpha - 8 * beta) % p
    Z3 = 2 * Y * Z % p
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % p
    return X3, Y3, Z3


def _add_affine(X1, Y1, Z1, x2, y2):
    # madd-2007-bl: Jacobian + affine, 7M + 4S
    if Z1 == 0:
        return x2, y2, 1
    p = P
    z1z1 = Z1 * Z1 % p
    u2 = x2 * z1z1 % p
    s2 = y2 * Z1 * z1z1 % p
    h = (u2 - X1) % p
    r = 2 * (s2 - Y1) % p
    if h == 0:
        if r == 0:
            return _double(X1, Y1, Z1)
        return 0, 1, 0  # P + (-P): infinity
    hh = h * h % p
    i = 4 * hh
    j = h * i % p
    v = X1 * i % p
    X3 = (r * r - j - 2 * v) % p
    Y3 = (r * (v - X3) - 2 * Y1 * j) % p
    Z3 = ((Z1 + h) * (Z1 + h) - z1z1 - hh) % p
    return X3, Y3, Z3


def _add(X1, Y1, Z1, X2, Y2, Z2):
    # add-2007-bl: Jacobian + Jacobian (only while building the key's table)
    if Z1 == 0:
        return X2, Y2, Z2
    if Z2 == 0:
        return X1, Y1, Z1
    p = P
    z1z1 = Z1 * Z1 % p
    z2z2 = Z2 * Z2 % p
    u1 = X1 * z2z2 % p
    u2 = X2 * z1z1 % p
    s1 = Y1 * Z2 * z2z2 % p
    s2 = Y2 * Z1 * z1z1 % p
    h = (u2 - u1) % p
    r = 2 * (s2 - s1) % p
    if h == 0:
        if r == 0:
            return _double(X1, Y1, Z1)
        return 0, 1, 0
    i = 4 * h * h % p
    j = h * i % p
    v = u1 * i % p
    X3 = (r * r - j - 2 * v) % p
    Y3 = (r * (v - X3) - 2 * s1 * j) % p
    Z3 = ((Z1 + Z2) * (Z1 + Z2) - z1z1 - z2z2) * h % p
    return X3, Y3, Z3


def _odd_multiples(x, y, count):
    """Affine [1P, 3P, ..., (2*count-1)P] with a single field inversion."""
    p = P
    dX, dY, dZ = _double(x, y, 1)
    jac = [(x, y, 1)]
    cX, cY, cZ = _add_affine(dX, dY, dZ, x, y)
    jac.append((cX, cY, cZ))
    while len(jac) < count:
        cX, cY, cZ = _add(cX, cY, cZ, dX, dY, dZ)
        jac.append((cX, cY, cZ))
    # Montgomery's trick: invert the product of all Z once. No Z is 0 here
    # because P has prime order N > 2 * count.
    prefix = [1] * count
    acc = 1
    for k in range(count):
        prefix[k] = acc
        acc = acc * jac[k][2] % p
    inv = pow(acc, p - 2, p)
    out = [None] * count
    for k in range(count - 1, -1, -1):
        X, Y, Z = jac[k]
        zi = inv * prefix[k] % p
        inv = inv * Z % p
        zi2 = zi * zi % p
        out[k] = (X * zi2 % p, Y * zi2 * zi % p)
    return out


def _wnaf(k, w):
    """Width-w NAF digits of k, least significant first (odd digits, |d| < 2^(w-1))."""
    out = bytearray(b"\x80" * 264)  # digit + 128 (0 -> 128); fits a byte for w <= 7
    top = 1 << w
    mask = top - 1
    half = 1 << (w - 1)
    i = 0
    carry = 0
    while k >> i or carry:
        if ((k >> i) & 1) == carry:
            i += 1
            continue
        word = ((k >> i) & mask) + carry
        carry = 1 if word & half else 0
        word -= carry << w
        out[i] = word + 128
        i += w
    return out, i


def verify(pub_xy, digest, sig):
    """ECDSA P-256 verification of a 32-byte SHA-256 `digest` with the raw
    64-byte signature `r || s` (COSE and JWS form) against a public key
    (x, y) as returned by point(). Returns True or False, never raises on
    malformed input."""
    global _g_table
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 64:
        return False
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        return False
    if not isinstance(pub_xy, tuple) or len(pub_xy) != 2:
        return False
    qx, qy = pub_xy
    if not on_curve(qx, qy):
        return False
    n = N
    p = P
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < n and 0 < s < n):
        return False
    e = int.from_bytes(digest, "big") % n
    w = pow(s, n - 2, n)
    u1 = e * w % n
    u2 = r * w % n
    if _g_table is None:
        _g_table = _odd_multiples(GX, GY, 1 << (_WG - 2))
    gt = _g_table
    qt = _q_tables.get(pub_xy)
    if qt is None:
        if len(_q_tables) >= _KEY_CACHE:
            _q_tables.clear()
        qt = _odd_multiples(qx, qy, 1 << (_WQ - 2))
        _q_tables[pub_xy] = qt
    n1, l1 = _wnaf(u1, _WG)
    n2, l2 = _wnaf(u2, _WQ)
    X, Y, Z = 0, 1, 0
    i = (l1 if l1 > l2 else l2) - 1
    while i >= 0:
        if Z:
            X, Y, Z = _double(X, Y, Z)
        d = n1[i]
        if d != 128:
            if d > 128:
                x, y = gt[(d - 129) >> 1]
                X, Y, Z = _add_affine(X, Y, Z, x, y)
            else:
                x, y = gt[(127 - d) >> 1]
                X, Y, Z = _add_affine(X, Y, Z, x, p - y)
        d = n2[i]
        if d != 128:
            if d > 128:
                x, y = qt[(d - 129) >> 1]
                X, Y, Z = _add_affine(X, Y, Z, x, y)
            else:
                x, y = qt[(127 - d) >> 1]
                X, Y, Z = _add_affine(X, Y, Z, x, p - y)
        i -= 1
    if Z == 0:
        return False
    # x(R) mod n == r without an inversion: X == r * Z^2 (mod p), or
    # X == (r + n) * Z^2 when r + n < p (x(R) may exceed n).
    zz = Z * Z % p
    if (X - r * zz) % p == 0:
        return True
    return r + n < p and (X - (r + n) * zz) % p == 0
