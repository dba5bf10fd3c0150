# The check-in journal (firmware/kiosk/journal.py): durable, torn-write safe.

import os

import fwtest

from kiosk.journal import Journal


def _payload(seq):
    return b'{"seq": %d, "id": "x"}' % seq


def test_append_survives_reopen_and_acks_remove():
    d = fwtest.tmpdir()
    j = Journal(d + "/j.log")
    assert j.next_seq() == 1
    for seq in (1, 2, 3):
        j.append(seq, _payload(seq))
    j.ack(2)
    j.close()
    j = Journal(d + "/j.log")
    assert j.pending_seqs() == [1, 3]
    assert j.read(3) == _payload(3)
    assert j.read(2) is None
    assert j.next_seq() == 4
    assert not j.ack(99)  # unknown: ignored


def test_sequence_numbers_survive_compaction():
    d = fwtest.tmpdir()
    j = Journal(d + "/j.log")
    for seq in range(1, 6):
        j.append(seq, _payload(seq))
        j.ack(seq)
    j.compact()
    j.close()
    j = Journal(d + "/j.log")
    assert j.pending_seqs() == []
    assert j.next_seq() == 6  # never reused


def test_torn_last_line_is_dropped_and_the_rest_kept():
    d = fwtest.tmpdir()
    path = d + "/j.log"
    j = Journal(path)
    for seq in (1, 2):
        j.append(seq, _payload(seq))
    j.close()
    with open(path, "ab") as f:
        f.write(b"deadbeef C 3 {\"seq\": 3")  # power cut mid-write: no newline
    j = Journal(path)
    assert j.pending_seqs() == [1, 2]
    j.append(3, _payload(3))
    j.close()
    assert Journal(path).pending_seqs() == [1, 2, 3]


def test_corrupt_line_stops_the_replay_there():
    d = fwtest.tmpdir()
    path = d + "/j.log"
    j = Journal(path)
    for seq in (1, 2, 3):
        j.append(seq, _payload(seq))
    j.close()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    # Flip a byte inside the last record: its CRC no longer matches.
    data[-5] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    assert Journal(path).pending_seqs() == [1, 2]


def test_leftover_temporary_file_is_ignored():
    d = fwtest.tmpdir()
    path = d + "/j.log"
    j = Journal(path)
    j.append(1, _payload(1))
    j.close()
    with open(path + ".tmp", "wb") as f:
        f.write(b"half a compaction")
    j = Journal(path)
    assert j.pending_seqs() == [1]
    assert ".tmp" not in " ".join(os.listdir(d))


def test_compaction_keeps_pending_records_in_order():
    d = fwtest.tmpdir()
    path = d + "/j.log"
    j = Journal(path)
    written = 0
    for seq in range(1, 1001):
        record = _payload(seq) + b" " * 200
        written += len(record)
        j.append(seq, record)
        if seq % 10:
            j.ack(seq)
    assert j.size < written // 2  # compaction ran and dropped acknowledged records
    j.close()
    j = Journal(path)
    expect = [s for s in range(1, 1001) if s % 10 == 0]
    assert j.pending_seqs() == expect
    assert j.read(expect[0]).startswith(_payload(expect[0]))
