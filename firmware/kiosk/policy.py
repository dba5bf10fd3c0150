# The city's rules: which codes let a person in, by epidemic level. The body
# arrives inside a signed fleet document (fleet/policy, kiosk/docs.py checks
# the signature); this module validates the body and answers questions about
# it. The body format is documented in docs/protocol.md ("Policy body").
#
#   {"level": 2,
#    "levels": {"2": {"vaccination": {"complete": true, "min_days": 14, ...},
#                     "test": {"types": ["LP6464-4"], "max_hours": 72},
#                     "recovery": {"min_days": 11, "max_days": 180},
#                     "identity": {"online": true, "deadline_ms": 1500,
#                                  "offline": "admit_unverified"}}, ...},
#    "deny": {"salt": "<hex>", "sha256": ["<hex of SHA-256(salt || id)>", ...]},
#    "dedup_s": 30}
#
# A kiosk that holds no policy yet uses DEFAULT_BODY. parse() never raises
# on bad input: it returns (None, "field: what is wrong"). The validator and
# DEFAULT_BODY live in kiosk/policycheck.py, loaded only while a body is
# parsed (boot, a new document); what a scan needs stays here.
# Heap: the active level's rules (< 1 KB) plus 32 bytes per deny list entry,
# kept as one sorted bytes object (binary search, no set); while parsing, the
# whole body as JSON objects (a few KB, garbage afterwards).

import hashlib

from kiosk import unload

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

# Deny list entries. A 16 KiB document holds about 180 anyway; this bounds the
# heap (32 bytes each) whatever the document size limit becomes.
MAX_DENY = const(512)
_HASH = const(32)

ADMIT_UNVERIFIED = "admit_unverified"
REFUSE = "refuse"

# Kinds of certificate entry as the DCC names them -> policy section.
SECTIONS = {"v": "vaccination", "t": "test", "r": "recovery"}

PCR = "LP6464-4"  # NAAT (RT-PCR)
RAT = "LP217198-3"  # rapid antigen test


def deny_hash(salt, ident):
    """SHA-256(salt || UTF-8 identifier): how a deny list entry is made
    (the operator's tools use this same function)."""
    h = hashlib.sha256(salt)
    h.update(ident.encode())
    return h.digest()


class Policy:
    """A validated policy body. `rules` is the active level's object."""

    def __init__(self, body, salt, deny, deny_count):
        # Only what is used is kept: not the body's deny list in hex (3x the digests).
        self.level = body["level"]
        self.rules = body["levels"][str(self.level)]
        self.dedup_s = body.get("dedup_s", 30)
        self._salt = salt
        self._deny = deny
        self.deny_count = deny_count

    def section(self, name):
        """The active level's rules for 'vaccination', 'test', 'recovery' or
        'identity', or None when that kind is not accepted."""
        return self.rules.get(name)

    def denied(self, ident):
        """True if the identifier is on the deny list."""
        n = self.deny_count
        if not n or not ident:
            return False
        key = deny_hash(self._salt, ident)
        deny = self._deny
        lo, hi = 0, n
        while lo < hi:  # binary search over the sorted 32-byte digests
            mid = (lo + hi) // 2
            at = mid * _HASH
            probe = deny[at:at + _HASH]
            if probe == key:
                return True
            if probe < key:
                lo = mid + 1
            else:
                hi = mid
        return False


def parse(body):
    """Validate a policy body (parsed JSON). Returns (Policy, None) or
    (None, "field: what is wrong"); never raises."""
    from kiosk import policycheck

    try:
        return policycheck.parse(body)
    finally:
        del policycheck
        unload("policycheck")


def default():
    """The built-in policy (a kiosk that holds no signed one)."""
    from kiosk import policycheck

    try:
        return policycheck.parse(policycheck.DEFAULT_BODY)[0]
    finally:
        del policycheck
        unload("policycheck")
