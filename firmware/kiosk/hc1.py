# Reading an EU Digital COVID Certificate ("HC1:" code), the format of
# Vietnam's vaccination certificate: Base45 -> zlib -> COSE_Sign1 -> CBOR
# CWT claims -> hcert (-260) -> DCC (1), and verifying it: the COSE_Sign1
# signature (ES256 or PS256) with a signer from the kiosk's trust list
# (kiosk/trust.py), the signer's key usage, and the validity in time.
#
# read() decodes and checks structure; verify() checks the signature and the
# dates; the city's rules (doses, test age...) are kiosk/verdict.py's job.
# Heap: ~12 KB while reading one certificate (make bench: firmware_read_hc1_
# alloc_bytes): the 4 KB zlib window (ZLIB_WBITS), up to MAX_INFLATED for the
# inflated COSE bytes, and the decoded CBOR objects. Verification adds a few
# KB of short-lived big integers (kiosk/p256.py, kiosk/rsa.py); the payload
# is hashed in place, not copied into a Sig_structure.

import hashlib

from kiosk import base45, cbor, p256, rsa

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

# A real DCC inflates to well under 2 KB; anything beyond this is refused
# before it can fill the heap (decompression bomb).
MAX_INFLATED = const(4096)
ZLIB_WBITS = const(12)  # 2**12 = MAX_INFLATED

try:
    import io as _io

    import deflate as _deflate  # MicroPython >= 1.21

    def _inflate(data, cap):
        # Output is capped at MAX_INFLATED (4096 = 2**12) bytes, so no back-
        # reference can reach further than that: a 4 KB window is always
        # enough, whatever the header asks for (32 KB, which the heap can't spare).
        stream = _deflate.DeflateIO(_io.BytesIO(data), _deflate.ZLIB, ZLIB_WBITS)
        return stream.read(cap + 1)
except ImportError:  # CPython
    import zlib as _zlib  # pyright: ignore[reportMissingImports]  (not on the device)

    def _inflate(data, cap):
        d = _zlib.decompressobj()
        out = d.decompress(data, cap + 1)
        if len(out) <= cap and not d.eof:
            raise ValueError("zlib: truncated stream")
        return out


# Reasons (short codes; kiosk/ui.py turns them into display text).
# Reading:
R_BASE45 = "hc1_base45"
R_ZLIB = "hc1_zlib"
R_TOO_BIG = "hc1_too_big"
R_COSE = "hc1_cose"
R_CLAIMS = "hc1_claims"
R_NO_DCC = "hc1_no_dcc"
# Verifying:
R_NO_SIGNER = "no_signer"  # no signer with the certificate's kid in the trust list
R_BAD_SIGNATURE = "bad_signature"
R_UNSUPPORTED_ALG = "unsupported_alg"  # neither ES256 (-7) nor PS256 (-37)
R_EXPIRED = "expired"  # CWT exp has passed (or is missing)
R_SIGNER_EXPIRED = "signer_expired"  # the signer certificate's notAfter has passed
R_NOT_YET_VALID = "not_yet_valid"  # issued (iat) in the future, or signer not yet valid
R_WRONG_KEY_USAGE = "wrong_key_usage"  # the signer may not sign this kind (EKU)

ALG_ES256 = const(-7)
ALG_PS256 = const(-37)
# Kiosk clocks drift and a certificate may be issued seconds before it is
# shown: an iat this far in the future is still accepted.
CLOCK_SKEW_S = const(300)

_SIG1 = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


class HC1Cert:
    """What a decoded certificate holds. `protected` (the raw bytes),
    `payload` and `signature` are kept for signature verification; `header`
    is the decoded protected header, `claims` the CWT claims, `dcc` the
    hcert payload, `kind` "v", "t" or "r" and `entry` its first entry
    (vaccination: dn, sd, dt, mp, ...; test: tt, sc, tr, ...; recovery: fr,
    df, du, ...)."""

    def __init__(self):
        self.protected = b""
        self.header: dict = {}
        self.unprotected: dict | None = None
        self.payload = b""
        self.signature = b""
        self.claims: dict | None = None
        self.dcc: dict | None = None
        self.kind = ""  # "v" vaccination, "t" test, "r" recovery
        self.entry: dict | None = None

    @property
    def uvci(self):
        return self.entry.get("ci", "") if self.entry else ""

    def entries(self):
        """All entries of the certificate's kind (normally exactly one)."""
        e = self.dcc.get(self.kind) if self.dcc and self.kind else None
        return e if isinstance(e, list) else []

    def _hdr(self, label):
        v = self.header.get(label)
        if v is None and self.unprotected:
            v = self.unprotected.get(label)
        return v

    @property
    def alg(self):
        """COSE algorithm (-7 ES256, -37 PS256), protected header first."""
        return self._hdr(1)

    @property
    def kid(self):
        """Signer key id (bytes), from the protected header or else the unprotected one."""
        return self._hdr(4)

    @property
    def exp(self):
        """CWT expiry (Unix seconds, int) or None."""
        return _seconds(self.claims.get(4)) if self.claims else None

    @property
    def iat(self):
        """CWT issued-at (Unix seconds, int) or None."""
        return _seconds(self.claims.get(6)) if self.claims else None

    def holder_name(self):
        """Holder's name in ICAO transliteration (capitals, no diacritics),
        family name first as Vietnamese names are written."""
        nam = self.dcc.get("nam") if isinstance(self.dcc, dict) else None
        if not isinstance(nam, dict):
            return ""
        parts = []
        for key in ("fnt", "gnt"):
            v = nam.get(key)
            if isinstance(v, str) and v:
                parts.append(v.replace("<", " "))
        return " ".join(parts)


def _seconds(v):
    # Some issuers write exp / iat as CBOR floats; bools are not times.
    if v is True or v is False:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == v and -1e15 < v < 1e15:
        return int(v)
    return None


def unprefix(text):
    """The Base45 part of an "HC1:" code, or None if the prefix is missing."""
    if not isinstance(text, str) or not text.startswith("HC1:"):
        return None
    return text[4:]


def inflate(raw):
    """zlib-inflate `raw` (capped at MAX_INFLATED). Returns (bytes, None) or (None, reason)."""
    try:
        out = _inflate(raw, MAX_INFLATED)
    except Exception:  # corrupt stream: bad input, not a bug here
        return None, R_ZLIB
    if len(out) > MAX_INFLATED:
        return None, R_TOO_BIG
    return out, None


def read(text):
    """Decode an HC1 code. Returns (HC1Cert, None) or (None, reason)."""
    b45 = unprefix(text)
    if b45 is None:
        return None, R_BASE45
    raw = base45.decode(b45)
    if raw is None:
        return None, R_BASE45
    if raw and raw[0] == 0x78:  # zlib header: compressed (the normal case)
        raw, err = inflate(raw)
        if err:
            return None, err
    cert, err = decode_cose(raw)
    if err:
        return None, err
    if cert.entry is None or not isinstance(cert.entry.get("ci"), str) or not cert.entry["ci"]:
        return None, R_NO_DCC
    return cert, None


def decode_cose(raw):
    """Decode COSE_Sign1 bytes (tagged or not) down to the DCC. Returns
    (HC1Cert, None) or (None, reason); the certificate may still lack an
    entry (cert.entry None) - read() refuses that, the conformance suite
    looks at the rest."""
    try:
        cose = cbor.decode(raw)
    except Exception:
        return None, R_COSE
    if not isinstance(cose, list) or len(cose) != 4:
        return None, R_COSE
    cert = HC1Cert()
    prot, unprot, payload, sig = cose
    if not isinstance(prot, bytes) or not isinstance(payload, bytes) or not isinstance(sig, bytes):
        return None, R_COSE
    if not isinstance(unprot, dict):
        return None, R_COSE
    if prot:
        try:
            header = cbor.decode(prot)
        except Exception:
            return None, R_COSE
        if not isinstance(header, dict):
            return None, R_COSE
        cert.header = header
    cert.protected = prot
    cert.unprotected = unprot
    cert.payload = payload
    cert.signature = sig
    try:
        claims = cbor.decode(payload)
    except Exception:
        return None, R_CLAIMS
    if not isinstance(claims, dict):
        return None, R_CLAIMS
    cert.claims = claims
    hcert = claims.get(-260)
    dcc = hcert.get(1) if isinstance(hcert, dict) else None
    if not isinstance(dcc, dict):
        return None, R_NO_DCC
    cert.dcc = dcc
    for kind in ("v", "t", "r"):
        entries = dcc.get(kind)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            cert.kind = kind
            cert.entry = entries[0]
            break
    return cert, None


# -- verification ------------------------------------------------------------

def signed_digest(cert):
    """SHA-256 of the COSE Sig_structure ["Signature1", protected, b"", payload],
    hashed piece by piece so the payload is not copied."""
    h = hashlib.sha256(_SIG1)
    h.update(cbor.head(2, len(cert.protected)))
    h.update(cert.protected)
    h.update(b"\x40")  # external_aad: empty byte string
    h.update(cbor.head(2, len(cert.payload)))
    h.update(cert.payload)
    return h.digest()


def find_signer(cert, trust):
    """The trust list signer whose key verifies the certificate's signature.
    Signers sharing the kid are tried in turn. Returns (Signer, None) or
    (None, reason)."""
    alg = cert.alg
    if alg != ALG_ES256 and alg != ALG_PS256:
        return None, R_UNSUPPORTED_ALG
    kid = cert.kid
    if not isinstance(kid, bytes) or not kid:
        return None, R_NO_SIGNER
    candidates = trust.find(kid)
    if not candidates:
        return None, R_NO_SIGNER
    digest = signed_digest(cert)
    sig = cert.signature
    for signer in candidates:
        if alg == ALG_ES256:
            if signer.key_type == "ec" and p256.verify(signer.key, digest, sig):
                return signer, None
        elif signer.key_type == "rsa":
            if rsa.verify_pss(signer.key[0], signer.key[1], digest, sig):
                return signer, None
    return None, R_BAD_SIGNATURE


def check_key_usage(cert, signer):
    """None if the signer may sign this kind of certificate, else the reason."""
    if cert.kind and signer.kinds.find(cert.kind) >= 0:
        return None
    return R_WRONG_KEY_USAGE


def check_time(cert, signer, now, skew=CLOCK_SKEW_S):
    """None if the certificate and its signer are valid at `now` (Unix
    seconds), else the reason. `skew` tolerates an iat slightly ahead."""
    exp = cert.exp
    if exp is None or exp < now:
        return R_EXPIRED
    iat = cert.iat
    if iat is not None and iat > now + skew:
        return R_NOT_YET_VALID
    if signer.not_after < now:
        return R_SIGNER_EXPIRED
    if signer.not_before > now + skew:
        return R_NOT_YET_VALID
    return None


def verify(cert, trust, now, skew=CLOCK_SKEW_S):
    """Verify a decoded certificate against a trust list (kiosk/trust.py).
    `now` is Unix seconds, or None when the kiosk's clock is unknown: the
    signature and key usage are still checked, the dates are not (the caller
    decides what an unknown clock means). Returns None when valid, else a
    reason: no_signer, bad_signature, unsupported_alg, wrong_key_usage,
    expired, not_yet_valid, signer_expired."""
    signer, err = find_signer(cert, trust)
    if err:
        return err
    err = check_key_usage(cert, signer)
    if err:
        return err
    if now is None:
        return None
    return check_time(cert, signer, now, skew)
