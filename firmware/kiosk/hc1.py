# Reading an EU Digital COVID Certificate ("HC1:" code), the format of
# Vietnam's vaccination certificate: Base45 -> zlib -> COSE_Sign1 -> CBOR
# CWT claims -> hcert (-260) -> DCC (1).
#
# This module decodes and checks structure. Signature verification and the
# city's rules are separate steps (they need the parts kept in HC1Cert).
# Heap: ~12 KB while reading one certificate (make bench: firmware_read_hc1_
# alloc_bytes): the 4 KB zlib window (ZLIB_WBITS), up to MAX_INFLATED for the
# inflated COSE bytes, and the decoded CBOR objects.

from kiosk import base45, cbor

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
R_BASE45 = "hc1_base45"
R_ZLIB = "hc1_zlib"
R_TOO_BIG = "hc1_too_big"
R_COSE = "hc1_cose"
R_CLAIMS = "hc1_claims"
R_NO_DCC = "hc1_no_dcc"


class HC1Cert:
    """What a decoded certificate holds. `protected`, `payload` and
    `signature` are kept for signature verification."""


    def __init__(self):
        self.protected = b""
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


def read(text):
    """Decode an HC1 code. Returns (HC1Cert, None) or (None, reason)."""
    if not text.startswith("HC1:"):
        return None, R_BASE45
    raw = base45.decode(text[4:])
    if raw is None:
        return None, R_BASE45
    if raw and raw[0] == 0x78:  # zlib header: compressed (the normal case)
        try:
            raw = _inflate(raw, MAX_INFLATED)
        except Exception:  # corrupt stream: bad input, not a bug here
            return None, R_ZLIB
        if len(raw) > MAX_INFLATED:
            return None, R_TOO_BIG
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
    if cert.entry is None or not isinstance(cert.entry.get("ci"), str) or not cert.entry["ci"]:
        return None, R_NO_DCC
    return cert, None
