# The kiosk's trust list: the DCC signer certificates (DSC) the operator
# trusts, from the body of a verified `fleet/trust` document
# (docs/protocol.md "Signed fleet documents"):
#   {"keys": [{"kid": "<base64 of 8 bytes>", "cert": "<base64 of DER>"}, ...]}
# Each certificate is parsed once (kiosk/der.py) into a compact Signer; the
# DER is not kept. Several signers may share a kid (the kid is only 8 bytes
# of a hash, and countries have reused them): find() returns all of them and
# the verifier tries each in turn.
# Heap: per signer ~150 bytes + the key (65 bytes EC, ~300 bytes RSA-2048);
# the document itself is at most 16 KiB, so at most ~20 signers.

import binascii

from kiosk import p256, rsa

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

MAX_SIGNERS = const(64)

# Extended key usage OIDs of DCC signers: test, vaccination, recovery. The
# EU spec names the 1.3.6.1.4.1.1847.2021.1.x arc; some countries issued
# certificates with 1.3.6.1.4.1.0.1847.2021.1.x, which verifiers accept too.
_EKU_KIND = {
    "1.3.6.1.4.1.1847.2021.1.1": "t",
    "1.3.6.1.4.1.1847.2021.1.2": "v",
    "1.3.6.1.4.1.1847.2021.1.3": "r",
    "1.3.6.1.4.1.0.1847.2021.1.1": "t",
    "1.3.6.1.4.1.0.1847.2021.1.2": "v",
    "1.3.6.1.4.1.0.1847.2021.1.3": "r",
}
ALL_KINDS = "vtr"

# Reasons
R_NOT_A_LIST = "trust_not_a_list"
R_TOO_MANY = "trust_too_many"
R_BAD_ENTRY = "trust_bad_entry"


class Signer:
    """One trusted DCC signer: key, validity and the certificate kinds it may sign."""

    def __init__(self, kid, info):
        self.kid = kid
        self.key_type = info.key_type  # "ec" or "rsa"
        if info.key_type == "ec":
            self.key = p256.point(info.ec_point)  # (x, y), validated on the curve
        else:
            self.key = (info.rsa_n, info.rsa_e)
        self.not_before = info.not_before
        self.not_after = info.not_after
        self.kinds = kinds_for_eku(info.eku, info.eku_critical)


def kinds_for_eku(eku, critical=False):
    """Certificate kinds ("v", "t", "r") a signer may sign, from its extended
    key usage: the DCC OIDs it lists; all kinds when it lists none of them
    (no extension, or one naming other purposes only, like Viet Nam's DSC:
    clientAuth, emailProtection, smartcardLogon) - except when that extension
    is critical, which by RFC 5280 4.2.1.12 limits the key to the purposes it
    lists: then no kind ("")."""
    kinds = ""
    for oid in eku:
        k = _EKU_KIND.get(oid)
        if k is not None and kinds.find(k) < 0:
            kinds += k
    if kinds:
        return kinds
    return "" if critical and eku else ALL_KINDS


def signer_from_der(kid, cert_der):
    """Parse one signer certificate. Returns (Signer, None) or (None, reason).
    The parser is imported here, not at the top: kiosk/fleet.py unloads it
    once a trust list is built."""
    from kiosk import der

    info, err = der.parse_certificate(cert_der)
    if err:
        return None, err
    if info.key_type == "ec":
        if p256.point(info.ec_point) is None:
            return None, der.R_KEY  # not a point on P-256
    elif not rsa.key_ok(info.rsa_n, info.rsa_e):
        return None, der.R_KEY  # RSA outside 2048-4096 bits or a bad exponent
    return Signer(bytes(kid), info), None


class TrustList:
    """The signers a kiosk verifies DCCs with."""

    def __init__(self):
        self.signers = []
        self.skipped = []  # (index in the document, reason) of unusable entries

    def add(self, signer):
        if len(self.signers) >= MAX_SIGNERS:
            return R_TOO_MANY
        self.signers.append(signer)
        return None

    def add_der(self, kid, cert_der):
        """Add a signer certificate; returns None or the reason it was refused."""
        signer, err = signer_from_der(kid, cert_der)
        if err:
            return err
        return self.add(signer)

    def find(self, kid):
        """All signers with this kid (bytes), in trust list order."""
        out = []
        for s in self.signers:
            if s.kid == kid:
                out.append(s)
        return out

    def __len__(self):
        return len(self.signers)


def from_body(body):
    """Build a TrustList from a verified trust document's body. Entries that
    cannot be used (bad base64, a certificate we cannot parse, an unsupported
    key) are skipped and listed in .skipped, so one bad certificate does not
    cost the kiosk all the others. Returns (TrustList, None) or (None, reason)
    when the body is not a trust list at all."""
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        return None, R_NOT_A_LIST
    if len(keys) > MAX_SIGNERS:
        return None, R_TOO_MANY
    tl = TrustList()
    for i in range(len(keys)):
        item = keys[i]
        if not isinstance(item, dict):
            tl.skipped.append((i, R_BAD_ENTRY))
            continue
        kid = _b64(item.get("kid"))
        cert_der = _b64(item.get("cert"))
        if kid is None or len(kid) != 8 or cert_der is None:
            tl.skipped.append((i, R_BAD_ENTRY))
            continue
        err = tl.add_der(kid, cert_der)
        if err:
            tl.skipped.append((i, err))
    return tl, None


def _b64(text):
    if not isinstance(text, str) or not text:
        return None
    try:
        return binascii.a2b_base64(text)
    except (ValueError, TypeError):
        return None
