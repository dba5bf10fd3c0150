# Validating a policy body (kiosk/policy.py, docs/protocol.md "Policy body")
# and the built-in policy. Needed only at boot and when a policy document
# comes: kiosk/policy.py imports it for that and unloads it afterwards
# (kiosk/__init__.py), so its code and DEFAULT_BODY are not kept on the heap.

import binascii

from kiosk.policy import ADMIT_UNVERIFIED, MAX_DENY, PCR, RAT, REFUSE, Policy

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

_HASH = const(32)  # SHA-256 digests in the deny list

# The built-in policy of a kiosk that has never received one: certificates are
# verified on the kiosk (signature and these rules); identity-only codes are
# asked online and, when no answer comes, admitted and flagged for post-
# inspection (level 2, the usual "new normal" level), refused from level 3.
DEFAULT_BODY = {
    "level": 2,
    "levels": {
        "1": {
            "vaccination": {"min_doses": 1},
            "test": {"types": [PCR, RAT], "max_hours": 72},
            "recovery": {"min_days": 11, "max_days": 180},
            "identity": {"online": True, "deadline_ms": 1500, "offline": ADMIT_UNVERIFIED},
        },
        "2": {
            "vaccination": {"complete": True, "min_days": 14},
            "test": {"types": [PCR, RAT], "max_hours": 72},
            "recovery": {"min_days": 11, "max_days": 180},
            "identity": {"online": True, "deadline_ms": 1500, "offline": ADMIT_UNVERIFIED},
        },
        "3": {
            "vaccination": {"complete": True, "min_days": 14},
            "test": {"types": [PCR, RAT], "max_hours": 48},
            "recovery": {"min_days": 11, "max_days": 180},
            "identity": {"online": True, "deadline_ms": 1500, "offline": REFUSE},
        },
        "4": {
            "vaccination": {"complete": True, "min_days": 14},
            "test": {"types": [PCR], "max_hours": 24},
            "recovery": {"min_days": 11, "max_days": 180},
        },
    },
    "dedup_s": 30,
}

# Allowed keys per section, with (low, high) for the integers.
_VAX_INTS = {"min_doses": (1, 9), "min_days": (0, 3650), "max_days": (0, 3650)}
_TEST_INTS = {"max_hours": (1, 720)}
_REC_INTS = {"min_days": (0, 3650), "max_days": (0, 3650)}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(sec, where, spec):
    for key in spec:
        if key in sec:
            v = sec[key]
            lo, hi = spec[key]
            if not _is_int(v) or v < lo or v > hi:
                return "%s.%s: integer %d-%d" % (where, key, lo, hi)
    return None


def _strings(v, where, non_empty):
    if not isinstance(v, list) or (non_empty and not v):
        return "%s: list of strings%s" % (where, ", not empty" if non_empty else "")
    for s in v:
        if not isinstance(s, str) or not s or len(s) > 64:
            return where + ": each a string of 1-64 chars"
    return None


def _unknown(sec, where, allowed):
    for key in sec:
        if key not in allowed:
            return "%s.%s: unknown key" % (where, key)
    return None


def _check_vaccination(sec, where):
    err = _unknown(sec, where, ("complete", "min_doses", "min_days", "max_days", "products"))
    if err:
        return err
    if "complete" in sec and not isinstance(sec["complete"], bool):
        return where + ".complete: true or false"
    err = _ints(sec, where, _VAX_INTS)
    if err:
        return err
    if "max_days" in sec and sec["max_days"] < sec.get("min_days", 0):
        return where + ".max_days: must not be below min_days"
    if "products" in sec:
        return _strings(sec["products"], where + ".products", False)
    return None


def _check_test(sec, where):
    err = _unknown(sec, where, ("types", "max_hours"))
    if err:
        return err
    if "types" not in sec:
        return where + ".types: missing"
    if "max_hours" not in sec:
        return where + ".max_hours: missing"
    err = _strings(sec["types"], where + ".types", True)
    return err or _ints(sec, where, _TEST_INTS)


def _check_recovery(sec, where):
    err = _unknown(sec, where, ("min_days", "max_days"))
    if err:
        return err
    err = _ints(sec, where, _REC_INTS)
    if err:
        return err
    if sec.get("max_days", 180) < sec.get("min_days", 11):
        return where + ".max_days: must not be below min_days"
    return None


def _check_identity(sec, where):
    err = _unknown(sec, where, ("online", "deadline_ms", "offline"))
    if err:
        return err
    if "online" in sec and not isinstance(sec["online"], bool):
        return where + ".online: true or false"
    d = sec.get("deadline_ms", 1500)
    if not _is_int(d) or d < 100 or d > 10000:
        return where + ".deadline_ms: integer 100-10000"
    if sec.get("offline") not in (ADMIT_UNVERIFIED, REFUSE):
        return where + ".offline: \"admit_unverified\" or \"refuse\""
    return None


_CHECKS = (("vaccination", _check_vaccination), ("test", _check_test),
           ("recovery", _check_recovery), ("identity", _check_identity))


def _check_level(rules, where):
    if not isinstance(rules, dict):
        return where + ": must be an object"
    err = _unknown(rules, where, ("vaccination", "test", "recovery", "identity"))
    if err:
        return err
    for name, check in _CHECKS:
        sec = rules.get(name)
        if sec is None:
            continue  # absent or null: not accepted at this level
        if not isinstance(sec, dict):
            return "%s.%s: object or null" % (where, name)
        err = check(sec, where + "." + name)
        if err:
            return err
    return None


def _unhex(s):
    try:
        return binascii.unhexlify(s)
    except (ValueError, TypeError):
        return None


def _parse_deny(deny):
    # -> (salt bytes, sorted concatenated digests, count) or an error string
    if not isinstance(deny, dict):
        return "deny: must be an object"
    err = _unknown(deny, "deny", ("salt", "sha256"))
    if err:
        return err
    salt = deny.get("salt")
    if not isinstance(salt, str) or not 16 <= len(salt) <= 64 or len(salt) % 2:
        return "deny.salt: 16-64 hex digits"
    salt_b = _unhex(salt)
    if salt_b is None:
        return "deny.salt: 16-64 hex digits"
    hashes = deny.get("sha256", [])
    if not isinstance(hashes, list) or len(hashes) > MAX_DENY:
        return "deny.sha256: list of at most %d hashes" % MAX_DENY
    digests = []
    for h in hashes:
        d = _unhex(h) if isinstance(h, str) and len(h) == 2 * _HASH else None
        if d is None:
            return "deny.sha256: each 64 hex digits"
        digests.append(d)
    digests.sort()
    return salt_b, b"".join(digests), len(digests)


def parse(body):
    """Validate a policy body (parsed JSON). Returns (Policy, None) or
    (None, "field: what is wrong"); never raises."""
    if not isinstance(body, dict):
        return None, "policy: must be an object"
    err = _unknown(body, "policy", ("level", "levels", "deny", "dedup_s"))
    if err:
        return None, err
    level = body.get("level")
    if not _is_int(level) or not 1 <= level <= 4:
        return None, "level: integer 1-4"
    levels = body.get("levels")
    if not isinstance(levels, dict):
        return None, "levels: must be an object"
    for key in levels:
        if key not in ("1", "2", "3", "4"):
            return None, "levels.%s: levels are \"1\" to \"4\"" % key
        err = _check_level(levels[key], "levels." + key)
        if err:
            return None, err
    if str(level) not in levels:
        return None, "levels.%d: the active level has no rules" % level
    dedup = body.get("dedup_s", 30)
    if not _is_int(dedup) or not 0 <= dedup <= 3600:
        return None, "dedup_s: integer 0-3600"
    salt, deny, count = b"", b"", 0
    if "deny" in body:
        got = _parse_deny(body["deny"])
        if isinstance(got, str):
            return None, got
        salt, deny, count = got
    return Policy(body, salt, deny, count), None
