# Duplicate scans (firmware/kiosk/dedup.py) and the online check's client side
# (firmware/kiosk/online.py).

import json

from kiosk import codes, dedup, online, policy, verdict


def test_a_repeat_within_the_window_gives_the_previous_verdict():
    d = dedup.Dedup(4)
    k = dedup.key(b"079201001234|...")
    assert d.seen(k, 1000, 30) is None
    d.remember(k, 1000, "green screen")
    assert d.seen(k, 1000 + 29999, 30) == "green screen"
    assert d.seen(k, 1000 + 30000, 30) is None  # window over: a new check-in
    assert d.seen(dedup.key(b"another code"), 2000, 30) is None
    assert d.seen(k, 2000, 0) is None  # window 0: dedup off


def test_memory_is_bounded_and_holds_hashes_only():
    d = dedup.Dedup(4)
    frames = [b"code-%d" % i for i in range(10)]
    for i, f in enumerate(frames):
        d.remember(dedup.key(f), i, i)
    assert len(d._keys) == 4
    assert [d.seen(dedup.key(f), 10, 60) for f in frames] == [None] * 6 + [6, 7, 8, 9]
    for k in d._keys:
        assert len(k) == 16 and k not in frames
    # Remembering the same code again updates its entry, not a second slot.
    d.remember(dedup.key(frames[9]), 50, "again")
    assert d.seen(dedup.key(frames[9]), 50, 60) == "again"
    assert d.seen(dedup.key(frames[6]), 50, 60) == 6
    d.forget()
    assert d.seen(dedup.key(frames[9]), 50, 60) is None


def _pending():
    code = codes.read("079201001234||Trần Thị Bình|01011990|Nữ|12 Lê Lợi|15082021")
    return code, verdict.decide(code, policy.default(), None, None)


def test_online_request_answer_and_rid():
    code, res = _pending()
    o = online.Online("kiosk-t1", first_rid=0x7FFFFFFF)
    assert o.topic == "kiosk/kiosk-t1/verify" and o.result_topic == "kiosk/kiosk-t1/verify/result"
    req = json.loads(o.request(code, res, 100, "ctx"))
    assert req == {"v": 1, "rid": 0x7FFFFFFF, "type": "cccd", "id": "079201001234"}
    assert o.busy()
    # Late, foreign or malformed answers are ignored; the check stays pending.
    for bad in (b"not json", b"[]", b'{"v":1,"rid":5,"result":"pass"}',
                b'{"v":2,"rid":2147483647,"result":"pass"}',
                b'{"v":1,"rid":2147483647,"result":"maybe"}'):
        assert o.answer(bad) is None, bad
    assert o.busy()
    ctx, final = o.answer(b'{"v":1,"rid":2147483647,"result":"pass","reason":null}')
    assert ctx == "ctx" and (final.verdict, final.how, final.reason) == ("pass", "online", None)
    assert final.name == "TRAN T** B***" and not o.busy()
    assert o.answer(b'{"v":1,"rid":2147483647,"result":"pass"}') is None  # answered already
    # rids wrap within 1..2^31-1 and are new for each request
    req2 = json.loads(o.request(code, res, 200))
    assert req2["rid"] == 1


def test_online_fail_unknown_and_deadline():
    code, res = _pending()
    o = online.Online("kiosk-t1", first_rid=41)
    o.request(code, res, 0)
    _, final = o.answer(b'{"v":1,"rid":41,"result":"fail","reason":"isolation"}')
    assert (final.verdict, final.how, final.reason) == ("fail", "online", "isolation")
    o.request(code, res, 0)
    _, final = o.answer(b'{"v":1,"rid":42,"result":"fail","reason":"Bad Reason!"}')
    assert final.reason == "online_refused"  # a reason that is not a reason code is not shown
    o.request(code, res, 0)
    _, final = o.answer(b'{"v":1,"rid":43,"result":"unknown","reason":null}')
    assert (final.verdict, final.how, final.reason) == ("pass", "unverified", "online_unknown")
    o.request(code, res, 1000)
    assert o.expired(1000 + res.deadline_ms - 1) is None
    _, final = o.expired(1000 + res.deadline_ms)
    assert (final.verdict, final.how, final.reason) == ("pass", "unverified", "online_timeout")
    assert o.answer(b'{"v":1,"rid":44,"result":"pass"}') is None  # too late: ignored
    o.request(code, res, 0)
    _, final = o.abandon("offline")
    assert (final.verdict, final.how, final.reason) == ("pass", "unverified", "offline")
    assert o.abandon("offline") is None and o.expired(10**6) is None


def test_after_a_timeout_checks_pause_until_an_answer_or_the_retry_time():
    code, res = _pending()
    o = online.Online("kiosk-t1", first_rid=7)
    assert o.available(0)
    o.request(code, res, 0)
    o.expired(res.deadline_ms)
    assert not o.available(res.deadline_ms + 1)  # nobody waits out the deadline in turn
    assert o.available(res.deadline_ms + online.RETRY_MS)  # then it tries again
    o.request(code, res, 100000)
    o.expired(100000 + res.deadline_ms)
    assert not o.available(100000 + res.deadline_ms + 10)
    o.answer(b'{"v":1,"rid":8,"result":"pass","reason":null}')  # late, but the service is back
    assert o.available(100000 + res.deadline_ms + 20)
