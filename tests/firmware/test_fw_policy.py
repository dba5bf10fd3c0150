# The city's policy body (firmware/kiosk/policy.py, policycheck.py): validation with errors
# that name the field, the built-in default, levels, the salted deny list.

import binascii
import json

from kiosk import policy, policycheck


def _body(**over):
    body = json.loads(json.dumps(policycheck.DEFAULT_BODY))  # a deep copy
    body.update(over)
    return body


def test_the_default_policy_is_valid_and_sensible():
    p = policy.default()
    assert p.level == 2 and p.dedup_s == 30
    vax = p.section("vaccination")
    assert vax["complete"] and vax["min_days"] == 14
    ident = p.section("identity")
    assert ident["online"] and ident["offline"] == policy.ADMIT_UNVERIFIED
    assert not p.denied("079201001234")
    # Every level of the default is valid on its own.
    for level in (1, 2, 3, 4):
        got, err = policy.parse(_body(level=level))
        assert err is None and got.level == level, err
    assert policy.parse(_body(level=4))[0].section("identity") is None  # not accepted at level 4


def test_the_active_level_picks_the_rules():
    p, err = policy.parse(_body(level=3))
    assert err is None
    assert p.section("test")["max_hours"] == 48
    assert p.section("identity")["offline"] == policy.REFUSE


def test_bad_bodies_name_the_field():
    cases = [
        ([], "policy: must be an object"),
        (_body(level=5), "level: integer 1-4"),
        (_body(level=True), "level: integer 1-4"),
        (_body(levels=[]), "levels: must be an object"),
        (_body(levels={"7": {}}), "levels.7:"),
        (_body(levels={"1": {}}), "levels.2: the active level has no rules"),
        (_body(levels={"2": {"vaccine": {}}}), "levels.2.vaccine: unknown key"),
        (_body(levels={"2": {"vaccination": {"min_doses": 0}}}), "levels.2.vaccination.min_doses"),
        (_body(levels={"2": {"vaccination": {"complete": 1}}}), "levels.2.vaccination.complete"),
        (_body(levels={"2": {"vaccination": {"min_days": 30, "max_days": 10}}}),
         "levels.2.vaccination.max_days"),
        (_body(levels={"2": {"vaccination": {"products": "EU/1/20/1528"}}}),
         "levels.2.vaccination.products"),
        (_body(levels={"2": {"test": {"max_hours": 72}}}), "levels.2.test.types: missing"),
        (_body(levels={"2": {"test": {"types": [], "max_hours": 72}}}), "levels.2.test.types"),
        (_body(levels={"2": {"test": {"types": ["LP6464-4"], "max_hours": 0}}}),
         "levels.2.test.max_hours"),
        (_body(levels={"2": {"recovery": {"min_days": 200}}}), "levels.2.recovery.max_days"),
        (_body(levels={"2": {"identity": {"offline": "maybe"}}}), "levels.2.identity.offline"),
        (_body(levels={"2": {"identity": {"offline": "refuse", "deadline_ms": 50}}}),
         "levels.2.identity.deadline_ms"),
        (_body(levels={"2": {"identity": "online"}}), "levels.2.identity: object or null"),
        (_body(dedup_s=-1), "dedup_s: integer 0-3600"),
        (_body(deny={"salt": "xyz", "sha256": []}), "deny.salt"),
        (_body(deny={"salt": "00" * 16, "sha256": ["ab"]}), "deny.sha256: each 64 hex digits"),
        (_body(deny={"salt": "00" * 16, "sha256": ["zz" * 32]}), "deny.sha256: each 64 hex"),
        (_body(extra=1), "policy.extra: unknown key"),
    ]
    for body, expect in cases:
        got, err = policy.parse(body)
        assert got is None and err is not None and err.startswith(expect), (expect, err)


def test_deny_list_matches_salted_hashes_only():
    salt = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    denied = ["079201001234", "URN:UVCI:01:VN:0000000112345678#A", "QIDABC123"]
    hashes = [binascii.hexlify(policy.deny_hash(binascii.unhexlify(salt), i)).decode()
              for i in denied]
    hashes += ["%064x" % n for n in range(50)]  # filler, so the search has work to do
    p, err = policy.parse(_body(deny={"salt": salt, "sha256": hashes}))
    assert err is None and p.deny_count == len(hashes)
    for ident in denied:
        assert p.denied(ident), ident
    for ident in ("079201001235", "", "QIDABC12", "079201001234 "):
        assert not p.denied(ident), ident
    # The same identifiers with another salt are not on the list: hashes are salted.
    other, _ = policy.parse(_body(deny={"salt": "ff" * 16, "sha256": hashes}))
    assert not other.denied(denied[0])
    # Nothing in clear is kept.
    assert denied[0] not in repr(p.__dict__)


def test_a_bad_body_leaves_the_callers_policy_alone():
    good = policy.default()
    got, err = policy.parse(_body(level=9))
    assert got is None and err
    assert good.level == 2 and good.section("vaccination")["min_days"] == 14
