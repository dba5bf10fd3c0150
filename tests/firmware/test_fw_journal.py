# The check-in journal (firmware/kiosk/journal.py): compact binary records in
# segment files; durable, torn-write safe, bounded RAM, 20,000+ in 1 MB.

import os

import fwtest

from kiosk.journal import Journal

META = ("kiosk-q1-0001", "HCM-Q1-000123", "A", "0.3.0")
TS = 1764090000


class _Clock:
    def __init__(self, synced, boot_unix=0):
        self.synced = synced
        self.boot_unix = boot_unix


def _open(d, **kw):
    return Journal(d + "/journal", kw.pop("meta", META), **kw)


def _add(j, n, kind="cccd"):
    seqs = []
    for i in range(n):
        if kind == "cccd":
            ident = "%012d" % (79201000000 + j.next_seq())
        elif kind == "hc1":
            ident = "URN:UVCI:01:VN:%016d#A" % j.next_seq()
        else:
            ident = "QID%09d" % j.next_seq()
        seqs.append(j.add(kind, ident, "pass", "verified", None, TS + i))
    return seqs


def _drain(j):
    out = []
    while True:
        r = j.next_record()
        if r is None:
            return out
        out.append(r)


def _seg_files(d):
    return sorted(n for n in os.listdir(d + "/journal") if n.endswith(".seg"))


def test_records_round_trip_every_field():
    d = fwtest.tmpdir()
    j = _open(d)
    assert j.add("cccd", "079201001234", "pass", "online", None, TS) == 1
    assert j.add("hc1", "URN:UVCI:01:VN:12345678#B", "fail", "verified", "expired", TS + 1) == 2
    assert j.add("pccovid", "QIDÂ12", "pass", "unverified", "offline", None, 42) == 3
    j.close()
    j = _open(d)
    recs = _drain(j)
    got = [(r.seq, r.type, r.ident, r.verdict, r.how, r.reason, r.ts, r.meta) for r in recs]
    assert got == [
        (1, "cccd", "079201001234", "pass", "online", None, TS, META),
        (2, "hc1", "URN:UVCI:01:VN:12345678#B", "fail", "verified", "expired", TS + 1, META),
        (3, "pccovid", "QIDÂ12", "pass", "unverified", "offline", None, META),
    ]
    assert recs[2].up == 42 and j.pending == 3 and j.next_seq() == 4


def test_acks_remove_records_even_out_of_order_and_survive_reopen():
    d = fwtest.tmpdir()
    j = _open(d)
    _add(j, 10)
    assert j.ack([3, 1, 2]) == 3
    assert j.ack([7, 9]) == 2
    assert j.ack([7, 99, "x", -1]) == 0  # repeats and unknowns are ignored
    assert j.pending == 5
    j.close()
    j = _open(d)
    assert j.pending == 5
    assert [r.seq for r in _drain(j)] == [4, 5, 6, 8, 10]
    assert j.ack([4, 5, 6, 8, 10]) == 5 and j.pending == 0
    j.close()
    j = _open(d)
    assert j.pending == 0 and _drain(j) == [] and j.next_seq() == 11


def test_rewind_hands_out_the_unacknowledged_again_in_order():
    d = fwtest.tmpdir()
    j = _open(d)
    _add(j, 5)
    assert [r.seq for r in _drain(j)] == [1, 2, 3, 4, 5]
    j.ack([1, 3])
    j.rewind()
    assert [r.seq for r in _drain(j)] == [2, 4, 5]
    _add(j, 1)
    assert [r.seq for r in _drain(j)] == [6]  # live check-ins follow the backlog


def test_fully_acknowledged_segments_are_deleted_and_seqs_never_reused():
    d = fwtest.tmpdir()
    j = _open(d, max_bytes=65536)  # segments of 8 KB
    seqs = _add(j, 2000)
    assert len(_seg_files(d)) > 3
    for i in range(0, 2000, 50):
        j.ack(seqs[i:i + 50])
    assert j.pending == 0 and len(_seg_files(d)) == 1
    j.close()
    j = _open(d, max_bytes=65536)
    assert j.next_seq() == 2001 and j.pending == 0
    assert j.add("cccd", "079201001234", "pass", "verified", None, TS) == 2001


def test_twenty_thousand_check_ins_fit_in_one_megabyte_and_ram_stays_small():
    d = fwtest.tmpdir()
    j = _open(d)
    n = 0
    kinds = ("cccd", "pccovid", "hc1")
    while not j.full:
        # A realistic mix: mostly chip ID cards, some PC-COVID and certificates.
        if not _add(j, 1, kinds[0 if n % 5 < 3 else (1 if n % 5 == 3 else 2)])[0]:
            break
        n += 1
    assert n >= 20000, n
    on_disk = sum(os.stat(d + "/journal/" + f)[6] for f in _seg_files(d))
    assert on_disk <= 1048576 and j.size == on_disk
    # Full: refused with 0, nothing written.
    assert j.add("cccd", "079201001234", "pass", "verified", None, TS) == 0
    assert j.pending == n and len(j.extra) == 0 and len(j.segs) <= 40
    j.close()
    j = _open(d)
    assert j.pending == n and j.full
    j.ack(list(range(1, 2001)))
    assert not j.full  # acknowledged segments made room
    assert j.add("cccd", "079201001234", "pass", "verified", None, TS) == n + 1


def _prefix_copy(src_dir, dst_dir, cut_file, keep):
    os.mkdir(dst_dir)
    os.mkdir(dst_dir + "/journal")
    for name in os.listdir(src_dir + "/journal"):
        with open(src_dir + "/journal/" + name, "rb") as f:
            data = f.read()
        if name == cut_file:
            data = data[:keep]
        with open(dst_dir + "/journal/" + name, "wb") as f:
            f.write(data)


def test_a_torn_write_at_every_byte_offset_loses_only_that_record():
    d = fwtest.tmpdir()
    j = _open(d)
    _add(j, 3)
    newest = _seg_files(d)[-1]
    before = os.stat(d + "/journal/" + newest)[6]
    j.add("hc1", "URN:UVCI:01:VN:0000000000000004#A", "pass", "verified", None, TS)
    j.close()
    after = os.stat(d + "/journal/" + newest)[6]
    for keep in range(before, after + 1):
        t = d + "/cut%d" % keep
        _prefix_copy(d, t, newest, keep)
        j = _open(t)
        seqs = [r.seq for r in _drain(j)]
        assert seqs == ([1, 2, 3, 4] if keep == after else [1, 2, 3]), (keep, seqs)
        new = j.add("cccd", "079201001234", "pass", "verified", None, TS)
        j.close()
        j = _open(t)
        assert [r.seq for r in _drain(j)] == seqs + [new]  # readable, nothing after garbage
        j.close()


def test_a_cut_while_starting_a_segment_or_repairing_is_harmless():
    d = fwtest.tmpdir()
    j = _open(d, max_bytes=65536)
    _add(j, 500)  # several segments
    j.close()
    newest = _seg_files(d)[-1]
    size = os.stat(d + "/journal/" + newest)[6]
    # (a) a new segment that got no header, or half of one
    for keep in (0, 5, 30):
        t = d + "/seg%d" % keep
        _prefix_copy(d, t, newest, size)
        with open(t + "/journal/%010d.seg" % 501, "wb") as f:
            with open(d + "/journal/" + _seg_files(d)[0], "rb") as src:
                f.write(src.read(keep))
        j = _open(t, max_bytes=65536)
        assert [r.seq for r in _drain(j)] == list(range(1, 501)) and j.next_seq() == 501
        j.close()
    # (b) a repair cut before its rename: the .tmp is dropped, the original stands
    with open(d + "/journal/" + newest + ".tmp", "wb") as f:
        f.write(b"half a copy")
    j = _open(d, max_bytes=65536)
    assert j.pending == 500 and not [n for n in os.listdir(d + "/journal") if ".tmp" in n]


def test_corrupt_byte_in_the_newest_record_drops_only_it():
    d = fwtest.tmpdir()
    j = _open(d)
    _add(j, 3)
    j.close()
    path = d + "/journal/" + _seg_files(d)[-1]
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-7] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    assert [r.seq for r in _drain(_open(d))] == [1, 2]


def test_new_identity_or_firmware_starts_a_segment_and_old_records_keep_theirs():
    d = fwtest.tmpdir()
    j = _open(d)
    _add(j, 2)
    j.close()
    meta2 = ("kiosk-q1-0001", "HCM-Q1-000123", "B", "0.4.0")
    j = _open(d, meta=meta2)
    _add(j, 1)
    assert [r.meta for r in _drain(j)] == [META, META, meta2]


def test_times_before_the_clock_is_set_are_fixed_exactly_or_estimated():
    d = fwtest.tmpdir()
    # Boot 1 never learns the time; boot 2 learns it after one scan.
    j = _open(d, boot=1)
    j.add("cccd", "079201001234", "pass", "verified", None, None, 10)
    j.add("cccd", "079201001235", "pass", "verified", None, None, 70)
    j.close()
    j = _open(d, boot=2)
    j.add("cccd", "079201001236", "pass", "verified", None, None, 5)
    recs = _drain(j)
    assert j.ts_of(recs[0], _Clock(False)) is None  # not sendable with a bogus date
    clock = _Clock(True, TS)
    assert j.ts_of(recs[2], clock) == (TS + 5, False)  # same boot: exact
    assert j.ts_of(recs[0], clock) == (TS - 60, True)  # boot 1 ended before boot 2 began
    assert j.ts_of(recs[1], clock) == (TS, True)
    j.note_boot_start(TS)
    j.close()
    j = _open(d, boot=3)
    recs = _drain(j)
    later = _Clock(True, TS + 1000)
    assert j.ts_of(recs[2], later) == (TS + 5, False)  # boot 2's start was recorded
    assert j.ts_of(recs[0], later)[1] is True


def test_random_adds_acks_rewinds_and_reopens_match_a_simple_model():
    import random

    random.seed(11)  # MicroPython's random has no Random class
    rng = random
    d = fwtest.tmpdir()
    j = _open(d, max_bytes=65536)  # 8 KB segments: many rolls and deletions
    pending = []  # the model: seqs not yet acknowledged, in order
    handed = []
    for step in range(1500):
        op = rng.random()
        if op < 0.5:
            seq = j.add("cccd", "%012d" % step, "pass", "verified", None, TS + step)
            if seq:
                pending.append(seq)
        elif op < 0.8 and pending:
            # The bridge acks a mostly in-order batch, sometimes with gaps and repeats.
            batch = [s for s in pending[:rng.randint(1, 40)] if rng.random() < 0.9]
            batch += [rng.choice(pending)] if rng.random() < 0.2 else []
            j.ack(batch)
            pending = [s for s in pending if s not in batch]
        elif op < 0.9:
            rec = j.next_record()
            if rec is not None:
                handed.append(rec.seq)
                assert rec.seq in pending
        elif op < 0.95:
            j.rewind()
        else:
            j.close()
            j = _open(d, max_bytes=65536)
        assert j.pending == len(pending), step
    j.close()
    j = _open(d, max_bytes=65536)
    assert [r.seq for r in _drain(j)] == pending
    assert len(_seg_files(d)) <= 9
