# The verdict: may this person enter, and how was that decided.
#
#   HC1 certificate      signature against the trust list (hc1.verify), deny
#                        list, then the city's rules for the entry's kind
#                        -> pass/fail, how "verified"
#   PC-COVID / CCCD      (fields already validated by kiosk/codes.py) deny
#                        list, then the online check (needs_online) or,
#                        when the policy asks for none, the offline rule
#
# decide() never shows green without a reason (design invariant 3): a pass is
# either "verified", "online" (kiosk/online.py applies the answer) or
# "unverified" (the offline rule admitted it; reason says why).
# Heap: one small Result per scan; dates are parsed without allocation
# beyond a few ints.

from kiosk import hc1
from kiosk.policy import ADMIT_UNVERIFIED, SECTIONS
from kiosk.ui import mask_name

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

PASS = "pass"
FAIL = "fail"

# The check-in's "how" (docs/protocol.md).
VERIFIED = "verified"
ONLINE = "online"
UNVERIFIED = "unverified"
REFUSED = "refused"

COVID19 = "840539006"  # SNOMED CT: COVID-19 (the DCC's "tg")
NOT_DETECTED = "260415000"  # SNOMED CT: not detected (a negative test's "tr")

_DAY = const(86400)
_CLOCK_SLACK_S = const(300)  # a sample time this far ahead of our clock is in the future


class Result:
    """What the kiosk shows and records for one scan. `verdict` is None while
    the online check is pending (needs_online)."""

    def __init__(self, verdict, how, reason=None, name="", needs_online=False,
                 deadline_ms=0, offline=None):
        self.verdict = verdict
        self.how = how
        self.reason = reason
        self.name = name  # masked for the display, never the identifier
        self.needs_online = needs_online
        self.deadline_ms = deadline_ms
        self.offline = offline  # the offline rule to apply if no answer comes

    def passed(self):
        return self.verdict == PASS


def offline_rule(result, reason):
    """Apply the venue's offline rule to a pending identity check; `reason`
    says why no online answer was used (offline, online_timeout, ...)."""
    if result.offline == ADMIT_UNVERIFIED:
        return Result(PASS, UNVERIFIED, reason, result.name)
    return Result(FAIL, REFUSED, reason, result.name)


# -- dates -----------------------------------------------------------------

def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _num(s, a, b):
    part = s[a:b]
    if len(part) != b - a or not part.isdigit():
        return -1
    return int(part)


def parse_date(s):
    """'YYYY-MM-DD' (anything after the date is ignored) -> days since
    1970-01-01, or None."""
    if not isinstance(s, str) or len(s) < 10 or s[4] != "-" or s[7] != "-":
        return None
    y, m, d = _num(s, 0, 4), _num(s, 5, 7), _num(s, 8, 10)
    if y < 1900 or not 1 <= m <= 12 or not 1 <= d <= 31:
        return None
    return days_from_civil(y, m, d)


def parse_datetime(s):
    """RFC 3339 'YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|+HHMM)' -> Unix seconds,
    or None. A date alone counts as its midnight UTC."""
    days = parse_date(s)
    if days is None:
        return None
    t = days * _DAY
    if len(s) == 10:
        return t
    if len(s) < 19 or s[10] not in "Tt " or s[13] != ":" or s[16] != ":":
        return None
    hh, mm, ss = _num(s, 11, 13), _num(s, 14, 16), _num(s, 17, 19)
    if not (0 <= hh <= 23 and 0 <= mm <= 59 and 0 <= ss <= 60):
        return None
    t += hh * 3600 + mm * 60 + ss
    i = 19
    if i < len(s) and s[i] == ".":
        i += 1
        while i < len(s) and s[i].isdigit():
            i += 1
    rest = s[i:]
    if rest in ("Z", "z", ""):
        return t
    if len(rest) in (5, 6) and rest[0] in "+-":
        oh = _num(rest, 1, 3)
        om = _num(rest, len(rest) - 2, len(rest))
        if oh < 0 or om < 0 or (len(rest) == 6 and rest[3] != ":"):
            return None
        off = oh * 3600 + om * 60
        return t - off if rest[0] == "+" else t + off
    return None


# -- certificate rules -----------------------------------------------------

def _vaccination(e, rules, today):
    products = rules.get("products")
    if products and e.get("mp") not in products:
        return "vaccine_product"
    dn, sd = e.get("dn"), e.get("sd")
    if not isinstance(dn, int) or not isinstance(sd, int) or dn < 1 or sd < 1:
        return "bad_entry"
    if rules.get("complete") and dn < sd:
        return "too_few_doses"
    if dn < rules.get("min_doses", 1):
        return "too_few_doses"
    when = parse_date(e.get("dt"))
    if when is None:
        return "bad_entry"
    age = today - when
    if age < 0:
        return "not_yet_valid"
    if age < rules.get("min_days", 0):
        return "too_recent"
    if "max_days" in rules and age > rules["max_days"]:
        return "vaccination_expired"
    return None


def _test(e, rules, now):
    if e.get("tt") not in rules["types"]:
        return "test_type"
    if e.get("tr") != NOT_DETECTED:
        return "positive_test"
    taken = parse_datetime(e.get("sc"))
    if taken is None:
        return "bad_entry"
    if taken > now + _CLOCK_SLACK_S:
        return "not_yet_valid"
    if now - taken > rules["max_hours"] * 3600:
        return "test_expired"
    return None


def _recovery(e, rules, today):
    first = parse_date(e.get("fr"))
    if first is None:
        return "bad_entry"
    age = today - first
    if age < rules.get("min_days", 11):
        return "recovery_too_recent"
    if age > rules.get("max_days", 180):
        return "recovery_expired"
    valid_from = parse_date(e.get("df")) if "df" in e else first
    valid_until = parse_date(e.get("du")) if "du" in e else None
    if valid_from is None or ("du" in e and valid_until is None):
        return "bad_entry"
    if today < valid_from:
        return "recovery_too_recent"
    if valid_until is not None and today > valid_until:
        return "recovery_expired"
    return None


def certificate_rules(cert, policy, now):
    """The city's rules for a certificate whose signature checked out.
    Returns None (admitted) or a reason code."""
    section = SECTIONS.get(cert.kind)
    rules = policy.section(section) if section else None
    if rules is None:
        return "not_accepted"
    e = cert.entry
    if not isinstance(e, dict):
        return "bad_entry"
    if e.get("tg") != COVID19:
        return "disease"
    today = now // _DAY
    if cert.kind == "v":
        return _vaccination(e, rules, today)
    if cert.kind == "t":
        return _test(e, rules, now)
    return _recovery(e, rules, today)


# -- the decision ----------------------------------------------------------

def decide(code, policy, trust, now):
    """The verdict for a well-formed code (codes.OK). `policy` a
    kiosk.policy.Policy, `trust` the trust list (or None: none held yet),
    `now` Unix seconds (or None: the clock was never set)."""
    name = mask_name(code.name)
    if code.type == "hc1":
        if trust is None:
            return Result(FAIL, REFUSED, "no_trust_list", name)
        if now is None:
            return Result(FAIL, REFUSED, "no_clock", name)
        reason = hc1.verify(code.cert, trust, now)
        if reason is None and policy.denied(code.ident):
            return Result(FAIL, REFUSED, "denied", name)
        if reason is None:
            reason = certificate_rules(code.cert, policy, now)
        return Result(PASS if reason is None else FAIL, VERIFIED, reason, name)
    # Identity-only codes: nothing to verify on the kiosk beyond the fields.
    rules = policy.section("identity")
    if rules is None:
        return Result(FAIL, REFUSED, "not_accepted", name)
    if policy.denied(code.ident):
        return Result(FAIL, REFUSED, "denied", name)
    pending = Result(None, None, None, name, True, rules.get("deadline_ms", 1500),
                     rules["offline"])
    if not rules.get("online", True):
        return offline_rule(pending, "not_checked")
    return pending
