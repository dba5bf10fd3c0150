# The verdict (firmware/kiosk/verdict.py): every rule of the city's policy and
# every reason, on certificates whose signature check is stood in for here
# (signatures themselves: test_fw_hc1*.py and tests/test_kiosk_verdicts.py).

import binascii
import json

from kiosk import codes, hc1, policy, policycheck, verdict

DAY = 86400
NOW = verdict.days_from_civil(2026, 11, 25) * DAY + 12 * 3600  # 2026-11-25 12:00 UTC


def _iso(days_ago):
    # The date `days_ago` days before NOW, without time.gmtime (its epoch
    # differs between ports).
    base_y, base_m, base_d = 2026, 11, 25
    d = verdict.days_from_civil(base_y, base_m, base_d) - days_ago
    y, m = 2030, 12
    while verdict.days_from_civil(y, m, 1) > d:
        m -= 1
        if m == 0:
            y, m = y - 1, 12
    return "%04d-%02d-%02d" % (y, m, d - verdict.days_from_civil(y, m, 1) + 1)


def _cert(kind, **entry):
    c = hc1.HC1Cert()
    c.kind = kind
    base = {"tg": verdict.COVID19, "ci": "URN:UVCI:01:VN:TEST#1"}
    if kind == "v":
        base.update({"vp": "1119349007", "mp": "EU/1/20/1528", "dn": 2, "sd": 2, "dt": _iso(30)})
    elif kind == "t":
        base.update({"tt": policy.PCR, "tr": verdict.NOT_DETECTED,
                     "sc": _iso(1) + "T08:00:00Z"})
    else:
        base.update({"fr": _iso(30), "df": _iso(19), "du": _iso(-150)})
    base.update(entry)
    c.entry = base
    c.dcc = {"nam": {"fnt": "NGUYEN", "gnt": "VAN<AN"}}
    return c


def _policy(**level):
    body = json.loads(json.dumps(policycheck.DEFAULT_BODY))
    body["levels"]["2"].update(level)
    p, err = policy.parse(body)
    assert err is None, err
    return p


def test_dates_parse_like_rfc3339():
    assert verdict.days_from_civil(1970, 1, 1) == 0
    assert verdict.days_from_civil(2000, 3, 1) == 11017
    assert verdict.parse_date("2026-11-25") == NOW // DAY
    assert verdict.parse_date("2026-11-25T10:00:00Z") == NOW // DAY
    for bad in (None, 20261125, "2026-13-01", "2026/11/25", "26-11-25", "2026-11-2x"):
        assert verdict.parse_date(bad) is None, bad
    noon = NOW
    assert verdict.parse_datetime("2026-11-25T12:00:00Z") == noon
    assert verdict.parse_datetime("2026-11-25T12:00:00.123Z") == noon
    assert verdict.parse_datetime("2026-11-25T19:00:00+07:00") == noon
    assert verdict.parse_datetime("2026-11-25T19:00:00+0700") == noon
    assert verdict.parse_datetime("2026-11-25T10:00:00-02:00") == noon
    assert verdict.parse_datetime("2026-11-25") == noon - 12 * 3600
    for bad in ("2026-11-25T25:00:00Z", "2026-11-25T12:00Z", "2026-11-25T12:00:00+7",
                "2026-11-25T12:00:00 UTC"):
        assert verdict.parse_datetime(bad) is None, bad
    assert _iso(0) == "2026-11-25" and _iso(25) == "2026-10-31" and _iso(-36) == "2026-12-31"


def test_vaccination_rules():
    p = policy.default()  # level 2: complete series, 14 days after the last dose
    rules = verdict.certificate_rules
    assert rules(_cert("v"), p, NOW) is None
    assert rules(_cert("v", dn=1, sd=2), p, NOW) == "too_few_doses"
    assert rules(_cert("v", dn=3, sd=2), p, NOW) is None  # booster
    assert rules(_cert("v", dt=_iso(13)), p, NOW) == "too_recent"
    assert rules(_cert("v", dt=_iso(14)), p, NOW) is None
    assert rules(_cert("v", dt=_iso(-1)), p, NOW) == "not_yet_valid"
    assert rules(_cert("v", dt="not a date"), p, NOW) == "bad_entry"
    assert rules(_cert("v", dn="2"), p, NOW) == "bad_entry"
    assert rules(_cert("v", tg="123"), p, NOW) == "disease"
    strict = _policy(vaccination={"min_doses": 3, "max_days": 270,
                                  "products": ["EU/1/20/1507"]})
    assert rules(_cert("v", mp="EU/1/20/1507", dn=3, sd=3), strict, NOW) is None
    assert rules(_cert("v"), strict, NOW) == "vaccine_product"
    assert rules(_cert("v", mp="EU/1/20/1507"), strict, NOW) == "too_few_doses"
    assert rules(_cert("v", mp="EU/1/20/1507", dn=3, dt=_iso(271)), strict, NOW) == \
        "vaccination_expired"
    assert rules(_cert("v"), _policy(vaccination=None), NOW) == "not_accepted"


def test_test_rules():
    p = policy.default()  # level 2: PCR or rapid antigen, 72 hours
    rules = verdict.certificate_rules
    assert rules(_cert("t"), p, NOW) is None
    assert rules(_cert("t", tt=policy.RAT), p, NOW) is None
    assert rules(_cert("t", tt="LP0000-0"), p, NOW) == "test_type"
    assert rules(_cert("t", tr="260373001"), p, NOW) == "positive_test"
    assert rules(_cert("t", sc=_iso(3) + "T11:00:00Z"), p, NOW) == "test_expired"
    assert rules(_cert("t", sc=_iso(3) + "T13:00:00Z"), p, NOW) is None  # 71 hours
    assert rules(_cert("t", sc=_iso(0) + "T18:00:00Z"), p, NOW) == "not_yet_valid"
    assert rules(_cert("t", sc="yesterday"), p, NOW) == "bad_entry"
    pcr_only = _policy(test={"types": [policy.PCR], "max_hours": 24})
    assert rules(_cert("t", tt=policy.RAT), pcr_only, NOW) == "test_type"
    assert rules(_cert("t"), pcr_only, NOW) == "test_expired"  # yesterday 08:00: 28 hours
    assert rules(_cert("t", sc=_iso(0) + "T06:00:00+07:00"), pcr_only, NOW) is None


def test_recovery_rules():
    p = policy.default()  # 11 to 180 days after the first positive test
    rules = verdict.certificate_rules
    assert rules(_cert("r"), p, NOW) is None
    assert rules(_cert("r", fr=_iso(5), df=_iso(0)), p, NOW) == "recovery_too_recent"
    assert rules(_cert("r", fr=_iso(181)), p, NOW) == "recovery_expired"
    assert rules(_cert("r", du=_iso(1)), p, NOW) == "recovery_expired"  # certificate window
    assert rules(_cert("r", df=_iso(-2)), p, NOW) == "recovery_too_recent"
    assert rules(_cert("r", fr="?"), p, NOW) == "bad_entry"
    assert rules(_cert("r", du="?"), p, NOW) == "bad_entry"
    assert rules(_cert("r"), _policy(recovery=None), NOW) == "not_accepted"


class _FakeVerify:
    """Stands in for hc1.verify (signatures are tested on their own)."""

    def __init__(self, reason):
        self.reason = reason
        self.calls = 0

    def __call__(self, cert, trust, now):
        self.calls += 1
        return self.reason


def _decide_hc1(reason, cert=None, p=None, trust="trust", now=NOW):
    code = codes.Code(codes.OK, codes.HC1, "URN:UVCI:01:VN:TEST#1", "NGUYEN VAN AN",
                      cert=cert or _cert("v"))
    saved = hc1.verify
    hc1.verify = _FakeVerify(reason)
    try:
        return verdict.decide(code, p or policy.default(), trust, now)
    finally:
        hc1.verify = saved


def test_certificates_pass_only_with_signature_and_rules():
    r = _decide_hc1(None)
    assert (r.verdict, r.how, r.reason, r.name) == ("pass", "verified", None, "NGUYEN V** A*")
    assert not r.needs_online
    for reason in ("no_signer", "bad_signature", "unsupported_alg", "expired", "signer_expired",
                   "not_yet_valid", "wrong_key_usage"):
        r = _decide_hc1(reason)
        assert (r.verdict, r.how, r.reason) == ("fail", "verified", reason)
    r = _decide_hc1(None, cert=_cert("v", dn=1))
    assert (r.verdict, r.how, r.reason) == ("fail", "verified", "too_few_doses")
    r = _decide_hc1(None, trust=None)
    assert (r.verdict, r.how, r.reason) == ("fail", "refused", "no_trust_list")
    r = _decide_hc1(None, now=None)
    assert (r.verdict, r.how, r.reason) == ("fail", "refused", "no_clock")


def _deny(*idents):
    body = json.loads(json.dumps(policycheck.DEFAULT_BODY))
    salt = b"0123456789abcdef"
    body["deny"] = {"salt": binascii.hexlify(salt).decode(),
                    "sha256": [binascii.hexlify(policy.deny_hash(salt, i)).decode()
                               for i in idents]}
    return body


def test_deny_list_refuses_certificates_and_identity_codes():
    body = _deny("URN:UVCI:01:VN:TEST#1", "079201001234")
    p, err = policy.parse(body)
    assert err is None
    r = _decide_hc1(None, p=p)
    assert (r.verdict, r.how, r.reason) == ("fail", "refused", "denied")
    cccd = codes.read("079201001234||Nguyễn Văn An|01011990|Nam|12 Lê Lợi|15082021")
    r = verdict.decide(cccd, p, None, NOW)
    assert (r.verdict, r.how, r.reason) == ("fail", "refused", "denied")
    other = codes.read("079201009999||Nguyễn Văn An|01011990|Nam|12 Lê Lợi|15082021")
    assert verdict.decide(other, p, None, NOW).needs_online


def test_identity_codes_need_the_online_check_or_the_offline_rule():
    cccd = codes.read("079201001234||Trần Thị Bình|01011990|Nữ|12 Lê Lợi|15082021")
    r = verdict.decide(cccd, policy.default(), None, None)  # no trust, no clock needed
    assert r.verdict is None and r.needs_online and r.deadline_ms == 1500
    assert r.name == "TRAN T** B***"
    admitted = verdict.offline_rule(r, "offline")
    assert (admitted.verdict, admitted.how, admitted.reason) == ("pass", "unverified", "offline")
    strict, _ = policy.parse(dict(policycheck.DEFAULT_BODY, level=3))
    r = verdict.decide(cccd, strict, None, NOW)
    refused = verdict.offline_rule(r, "online_timeout")
    assert (refused.verdict, refused.how, refused.reason) == ("fail", "refused", "online_timeout")
    no_online = _policy(identity={"online": False, "offline": "admit_unverified"})
    r = verdict.decide(cccd, no_online, None, NOW)
    assert (r.verdict, r.how, r.reason) == ("pass", "unverified", "not_checked")
    closed, _ = policy.parse(dict(policycheck.DEFAULT_BODY, level=4))
    r = verdict.decide(cccd, closed, None, NOW)
    assert (r.verdict, r.how, r.reason) == ("fail", "refused", "not_accepted")


def test_never_green_without_a_reason():
    # Every pass is verified, online or flagged unverified with a reason.
    cccd = codes.read("079201001234||Trần Thị Bình|01011990|Nữ|12 Lê Lợi|15082021")
    results = [_decide_hc1(None), _decide_hc1("bad_signature"),
               verdict.offline_rule(verdict.decide(cccd, policy.default(), None, NOW), "offline")]
    for r in results:
        if r.verdict == "pass":
            assert r.how in ("verified", "online") or (r.how == "unverified" and r.reason)
        else:
            assert r.verdict == "fail" and r.reason
