# A minimal, bounded DER reader for X.509 DCC signer certificates (DSC):
# just what a kiosk needs to verify with it - the public key (EC P-256 point
# or RSA n, e), the validity period (as Unix seconds) and the extended key
# usage OIDs. No chain building: the trust list already says which signers
# the operator trusts. The walk is iterative over a fixed structure (no
# recursion), every length is checked against its enclosing element, and
# sizes are capped (MAX_CERT, MAX_EXTENSIONS, MAX_EKU). Heap: the returned
# key (65 bytes or one big integer) and a few small strings; no copy of the
# certificate.

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_CERT = const(8192)  # a DSC is ~0.5-2 KB
MAX_EXTENSIONS = const(32)
MAX_EKU = const(16)
MAX_OID = const(40)  # bytes of one encoded OID

# Encoded OIDs (contents octets) compared byte-wise.
OID_EC_PUBLIC_KEY = b"\x2a\x86\x48\xce\x3d\x02\x01"  # 1.2.840.10045.2.1
OID_P256 = b"\x2a\x86\x48\xce\x3d\x03\x01\x07"  # 1.2.840.10045.3.1.7
OID_RSA = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # 1.2.840.113549.1.1.1
OID_RSA_PSS = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a"  # 1.2.840.113549.1.1.10
OID_EKU = b"\x55\x1d\x25"  # 2.5.29.37

# Reasons
R_MALFORMED = "cert_malformed"
R_TOO_BIG = "cert_too_big"
R_KEY = "cert_unsupported_key"
R_TIME = "cert_bad_time"


class DERError(Exception):
    pass


def _tlv(data, pos, end):
    """Read one TLV inside data[pos:end]. Returns (tag, content_start, content_end)."""
    if pos + 2 > end:
        raise DERError()
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError()  # multi-byte tag numbers: not in a certificate we read
    ln = data[pos + 1]
    pos += 2
    if ln & 0x80:
        nb = ln & 0x7F
        if nb == 0 or nb > 3 or pos + nb > end:
            raise DERError()  # indefinite or absurd length
        ln = 0
        for _ in range(nb):
            ln = (ln << 8) | data[pos]
            pos += 1
    if pos + ln > end:
        raise DERError()
    return tag, pos, pos + ln


def _expect(data, pos, end, tag):
    t, s, e = _tlv(data, pos, end)
    if t != tag:
        raise DERError()
    return s, e


def oid_str(raw):
    """Dotted string of an OID's contents octets ("1.3.6.1..."), or None."""
    if not raw or len(raw) > MAX_OID:
        return None
    arcs = []
    v = 0
    first = True
    for b in raw:
        v = (v << 7) | (b & 0x7F)
        if b & 0x80:
            continue
        if first:
            if v < 80:
                arcs.append(str(v // 40))
                arcs.append(str(v % 40))
            else:
                arcs.append("2")
                arcs.append(str(v - 80))
            first = False
        else:
            arcs.append(str(v))
        v = 0
    if raw[-1] & 0x80:
        return None
    return ".".join(arcs)


def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01 (proleptic Gregorian)
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _digits(data, s, n):
    v = 0
    for i in range(s, s + n):
        c = data[i] - 48
        if c < 0 or c > 9:
            raise DERError()
        v = v * 10 + c
    return v


def parse_time(data, tag, s, e):
    """UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18,
    YYYYMMDDHHMMSSZ) to Unix seconds. Raises DERError."""
    if tag == 0x17:
        if e - s != 13:
            raise DERError()
        y = _digits(data, s, 2)
        y += 1900 if y >= 50 else 2000  # RFC 5280 4.1.2.5.1
        s += 2
    elif tag == 0x18:
        if e - s != 15:
            raise DERError()
        y = _digits(data, s, 4)
        s += 4
    else:
        raise DERError()
    if data[e - 1] != 0x5A:  # "Z": RFC 5280 requires UTC
        raise DERError()
    mo = _digits(data, s, 2)
    d = _digits(data, s + 2, 2)
    h = _digits(data, s + 4, 2)
    mi = _digits(data, s + 6, 2)
    sec = _digits(data, s + 8, 2)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and sec < 61):
        raise DERError()
    return ((_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec


def _uint(data, s, e):
    if s >= e or data[s] & 0x80:
        raise DERError()  # empty or negative
    return int.from_bytes(bytes(data[s:e]), "big")


class CertInfo:
    """What the kiosk keeps of a signer certificate."""

    def __init__(self):
        self.key_type = ""  # "ec" or "rsa"
        self.ec_point = b""  # 65-byte uncompressed point (SEC1)
        self.rsa_n = 0
        self.rsa_e = 0
        self.not_before = 0  # Unix seconds
        self.not_after = 0
        self.eku = []  # dotted OID strings; [] = no extended key usage extension
        self.eku_critical = False  # the extension is marked critical


def parse_certificate(der):
    """Parse a DER X.509 certificate. Returns (CertInfo, None) or (None, reason)."""
    if not isinstance(der, (bytes, bytearray)):
        return None, R_MALFORMED
    if len(der) > MAX_CERT:
        return None, R_TOO_BIG
    try:
        return _parse(der)
    except DERError:
        return None, R_MALFORMED
    except IndexError:  # a length that lied about the bytes behind it
        return None, R_MALFORMED


def _parse(data):
    info = CertInfo()
    n = len(data)
    cs, ce = _expect(data, 0, n, 0x30)  # Certificate
    if ce != n:
        raise DERError()
    ts, te = _expect(data, cs, ce, 0x30)  # TBSCertificate
    tag, s, e = _tlv(data, ts, te)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, s, e = _tlv(data, e, te)
    if tag != 0x02:  # serialNumber
        raise DERError()
    s, e = _expect(data, e, te, 0x30)  # signature AlgorithmIdentifier
    s, e = _expect(data, e, te, 0x30)  # issuer
    vs, ve = _expect(data, e, te, 0x30)  # validity
    tag, s, e2 = _tlv(data, vs, ve)
    try:
        info.not_before = parse_time(data, tag, s, e2)
        tag, s, e3 = _tlv(data, e2, ve)
        info.not_after = parse_time(data, tag, s, e3)
    except DERError:
        return None, R_TIME
    s, e = _expect(data, ve, te, 0x30)  # subject
    ks, ke = _expect(data, e, te, 0x30)  # subjectPublicKeyInfo
    if not _read_key(data, ks, ke, info):
        return None, R_KEY
    pos = ke
    while pos < te:  # issuerUniqueID [1], subjectUniqueID [2], extensions [3]
        tag, s, e = _tlv(data, pos, te)
        if tag == 0xA3:
            _read_extensions(data, s, e, info)
        pos = e
    return info, None


def _read_key(data, s, e, info):
    as_, ae = _expect(data, s, e, 0x30)  # AlgorithmIdentifier
    os_, oe = _expect(data, as_, ae, 0x06)
    alg = bytes(data[os_:oe])
    param = None
    if oe < ae:
        tag, ps, pe = _tlv(data, oe, ae)
        if tag == 0x06:
            param = bytes(data[ps:pe])
    bs, be = _expect(data, ae, e, 0x03)  # subjectPublicKey BIT STRING
    if bs >= be or data[bs] != 0:
        raise DERError()  # unused bits must be 0
    bs += 1
    if alg == OID_EC_PUBLIC_KEY:
        if param != OID_P256:
            return False
        if be - bs != 65 or data[bs] != 4:
            return False  # compressed points: not used by DCC signers
        info.key_type = "ec"
        info.ec_point = bytes(data[bs:be])
        return True
    if alg == OID_RSA or alg == OID_RSA_PSS:
        rs, re = _expect(data, bs, be, 0x30)  # RSAPublicKey
        ns, ne = _expect(data, rs, re, 0x02)
        es, ee = _expect(data, ne, re, 0x02)
        if ne - ns > 513 or ee - es > 8:
            return False  # larger than RSA-4096 / absurd exponent
        info.key_type = "rsa"
        info.rsa_n = _uint(data, ns, ne)
        info.rsa_e = _uint(data, es, ee)
        return True
    return False


def _read_extensions(data, s, e, info):
    ss, se = _expect(data, s, e, 0x30)  # Extensions SEQUENCE OF Extension
    pos = ss
    count = 0
    while pos < se:
        count += 1
        if count > MAX_EXTENSIONS:
            raise DERError()
        xs, xe = _expect(data, pos, se, 0x30)
        os_, oe = _expect(data, xs, xe, 0x06)
        tag, vs, ve = _tlv(data, oe, xe)
        critical = False
        if tag == 0x01:  # critical BOOLEAN
            critical = ve - vs == 1 and data[vs] != 0
            tag, vs, ve = _tlv(data, ve, xe)
        if tag != 0x04:
            raise DERError()
        if bytes(data[os_:oe]) == OID_EKU:
            info.eku_critical = critical
            qs, qe = _expect(data, vs, ve, 0x30)
            p = qs
            while p < qe:
                if len(info.eku) >= MAX_EKU:
                    raise DERError()
                is_, ie = _expect(data, p, qe, 0x06)
                oid = oid_str(bytes(data[is_:ie]))
                if oid is None:
                    raise DERError()
                info.eku.append(oid)
                p = ie
        pos = xe
