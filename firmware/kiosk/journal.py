# The check-in journal: store-and-forward on the kiosk's flash.
#
# A check-in is appended and flushed before the kiosk shows its verdict, and
# leaves the journal only when the bridge acknowledges that it stored it.
#
# Layout: a folder of segment files "<first seq, 10 digits>.seg", each at most
# SEG_BYTES, written strictly in order; only the newest is ever appended to.
# A record is   kind (1 byte) | n (1 byte) | body (n bytes) | CRC-32 (4 bytes,
# little endian, over kind, n and body):
#   H  segment header, first in every segment: the acknowledgement state when
#      the segment began (W, and up to MAX_EXTRA seqs acknowledged above W)
#      and what is the same for every check-in in it (device, venue, gate,
#      firmware), so a check-in costs ~20-40 bytes, not a JSON line
#   C  a check-in: seq u32, flags (type, verdict, how, clock), time, id, reason
#   A  acknowledgements: W (every check-in up to W is acknowledged) and seqs
#      acknowledged above W
#   T  boot id and the unix time it started, written once the clock is set,
#      so check-ins taken before that (stored with boot id + seconds since
#      boot) get their exact time even after a reboot
# Atomic commit: a record counts only when whole with a matching CRC. A power
# cut can only tear the end of the newest segment; load() copies its good
# prefix to a ".tmp" file and renames that over it (atomic on LittleFS and
# POSIX), so the file is always the old or the new one. After a failed write
# the journal starts a new segment, so nothing valid ever follows garbage.
# A segment is deleted (one atomic remove) only once every check-in in it is
# acknowledged; the acknowledgement state needed later is always in the
# newest segment (its header, and the A records after it).
# Capacity: CCCD check-ins take 21 bytes, PC-COVID ~30, HC1 ~40: 1 MB holds
# about 48,000, 33,000 or 25,000 of them. The last segment's worth of
# max_bytes is kept for acknowledgement records, which free space.
# Heap: fixed, whatever the backlog: the segment list (~32 names), two file
# cursors, up to MAX_EXTRA out-of-order acknowledgements and MAX_BOOTS
# unsynced boots; ~2 KB. Nothing is kept per pending check-in.

import binascii
import os
import struct

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

SEG_BYTES = const(32768)
MAX_EXTRA = const(32)  # out-of-order acks remembered; more are resent (deduplicated)
MAX_BOOTS = const(8)  # unsynced boots whose times are estimated
_H = const(72)  # b"H"
_C = const(67)  # b"C"
_A = const(65)  # b"A"
_T = const(84)  # b"T"

TYPES = ("hc1", "pccovid", "cccd")
HOWS = ("provisional", "verified", "online", "unverified", "refused")
_F_PASS = const(4)
_F_UPTIME = const(64)  # time is (boot id, seconds since boot): clock not set yet
_ID_RAW = const(0)
_ID_DIGITS12 = const(1)  # 12 decimal digits (CCCD) packed in 5 bytes
_ID_UVCI = const(2)  # "URN:UVCI:" dropped
_UVCI = b"URN:UVCI:"


def _crc(data):
    return struct.pack("<I", binascii.crc32(data) & 0xFFFFFFFF)


def _record(kind, body):
    head = bytes((kind, len(body))) + body
    return head + _crc(head)


def _str8(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes((len(b),)) + b


class Record:
    """One check-in as stored: what the payload needs besides the segment's meta."""

    def __init__(self, seq, type_, ident, verdict, how, reason, ts, boot, up):
        self.seq = seq
        self.type = type_
        self.ident = ident
        self.verdict = verdict
        self.how = how
        self.reason = reason
        self.ts = ts  # unix seconds, or None: then (boot, up)
        self.boot = boot
        self.up = up
        self.meta: tuple | None = None  # (device, venue, gate, fw) of its segment


def encode_checkin(seq, type_, ident, verdict, how, reason, ts, boot, up):
    flags = TYPES.index(type_) | (_F_PASS if verdict == "pass" else 0) | (HOWS.index(how) << 3)
    if ts is None:
        flags |= _F_UPTIME
        t = struct.pack("<HI", boot & 0xFFFF, up)
    else:
        t = struct.pack("<I", ts)
    idb = ident.encode()
    if len(idb) == 12 and ident.isdigit():
        idf = bytes((_ID_DIGITS12,)) + int(ident).to_bytes(5, "big")
    elif idb.startswith(_UVCI):
        idf = bytes((_ID_UVCI,)) + _str8(idb[len(_UVCI):])
    else:
        idf = bytes((_ID_RAW,)) + _str8(idb)
    return _record(_C, struct.pack("<IB", seq, flags) + t + idf + _str8(reason or ""))


def decode_checkin(body):
    seq, flags = struct.unpack_from("<IB", body, 0)
    pos = 5
    if flags & _F_UPTIME:
        boot, up = struct.unpack_from("<HI", body, pos)
        ts = None
        pos += 6
    else:
        ts = struct.unpack_from("<I", body, pos)[0]
        boot = up = 0
        pos += 4
    idf = body[pos]
    pos += 1
    if idf == _ID_DIGITS12:
        ident = "%012d" % int.from_bytes(body[pos:pos + 5], "big")
        pos += 5
    else:
        n = body[pos]
        ident = str(body[pos + 1:pos + 1 + n], "utf-8")
        if idf == _ID_UVCI:
            ident = "URN:UVCI:" + ident
        pos += 1 + n
    n = body[pos]
    reason = str(body[pos + 1:pos + 1 + n], "utf-8") if n else None
    return Record(seq, TYPES[flags & 3], ident, "pass" if flags & _F_PASS else "fail",
                  HOWS[(flags >> 3) & 7], reason, ts, boot, up)


def _read_record(f):
    """(kind, body, size) of the record at f's position; None at the end; False
    if torn or corrupt."""
    head = f.read(2)
    if not head:
        return None
    if len(head) < 2:
        return False
    rest = f.read(head[1] + 4)
    if len(rest) < head[1] + 4:
        return False
    body = rest[:-4]
    if _crc(head + body) != rest[-4:] or head[0] not in (_H, _C, _A, _T):
        return False
    return head[0], body, 6 + len(body)


def _ack_fields(body):
    """W and the extra seqs of an H or A body; (W, extras, offset after)."""
    w, n = struct.unpack_from("<IB", body, 0)
    extras = [struct.unpack_from("<I", body, 5 + 4 * i)[0] for i in range(n)]
    return w, extras, 5 + 4 * n


def _meta_of(body):
    pos = _ack_fields(body)[2]
    out = []
    for _ in range(4):
        n = body[pos]
        out.append(str(body[pos + 1:pos + 1 + n], "utf-8"))
        pos += 1 + n
    return tuple(out)


class Cursor:
    """A read position in the journal: segment index and byte offset."""

    def __init__(self):
        self.seg = 0
        self.off = 0
        self.f = None
        self.meta = None

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def copy_from(self, other):
        self.close()
        self.seg = other.seg
        self.off = other.off
        self.meta = other.meta


class Journal:
    def __init__(self, folder, meta, max_bytes=1048576, boot=0, readonly=False):
        """meta = (device, venue, gate, firmware version) of check-ins added now;
        boot = this boot's id (kiosk/health.py). readonly: inspect, change nothing."""
        self.folder = folder
        self.readonly = readonly
        self.meta = tuple(meta) if meta else None
        self.max_bytes = max_bytes
        self.seg_bytes = min(SEG_BYTES, max_bytes // 8)
        self.boot = boot
        self.segs = []  # first seq of each segment, oldest first
        self.seg_size = []  # bytes in each segment
        self.size = 0
        self.last_seq = 0
        self.w = 0  # every check-in up to this seq is acknowledged
        self.extra = []  # acknowledged seqs above w (bounded)
        self.pending = 0  # check-ins waiting for the bridge
        self.boots = []  # [boot, last uptime, anchor ts or None] of unsynced boots
        self.starts = []  # (boot, unix start) of boots that learned the time later
        self._f = None  # the newest segment, open for appending
        self._broken = False  # a write failed: start a new segment first
        self.head = Cursor()  # the oldest pending check-in
        self.send = Cursor()  # the next check-in to publish
        self._load()

    # -- files ---------------------------------------------------------------

    def _path(self, i):
        return "%s/%010d.seg" % (self.folder, self.segs[i])

    def _load(self):
        if not self.readonly:
            try:
                os.mkdir(self.folder)
            except OSError:
                pass  # exists
        names = []
        for name in os.listdir(self.folder):
            if name.endswith(".tmp") and not self.readonly:
                os.remove(self.folder + "/" + name)  # a repair cut short: the original stands
            elif name.endswith(".seg") and len(name) == 14 and name[:10].isdigit():
                names.append(int(name[:10]))
        names.sort()
        self.segs = names
        self.seg_size = [0] * len(names)
        for first in names:
            if first - 1 > self.last_seq:
                self.last_seq = first - 1  # a segment is named after the seq it was to start with
        # Pass 1: acknowledgement state, last seq, torn tail.
        for i in range(len(names)):
            self._scan_segment(i, i == len(names) - 1)
        self._normalise()
        if self.readonly:
            self.size = sum(self.seg_size)
            self._count_pending()
            return
        if self.segs and self.seg_size[-1] == 0:
            # The newest segment lost even its header (cut while being created).
            os.remove(self._path(len(self.segs) - 1))
            self.segs.pop()
            self.seg_size.pop()
        self.size = sum(self.seg_size)
        # Pass 2: count what is pending, find the oldest, note unsynced boots.
        self._count_pending()
        if not self.segs or self._segment_meta(len(self.segs) - 1) != self.meta:
            self._new_segment()  # identity or firmware changed: their own segment
        else:
            self._f = open(self._path(len(self.segs) - 1), "ab")
        self._drop_acked_segments()

    def _scan_segment(self, i, newest):
        path = self._path(i)
        good = 0
        torn = False
        with open(path, "rb") as f:
            first = True
            while True:
                r = _read_record(f)
                if r is None:
                    break
                if r is False or (first and r[0] != _H) or (not first and r[0] == _H):
                    torn = True
                    break
                first = False
                kind, body, n = r
                if kind == _C:
                    seq = struct.unpack_from("<I", body, 0)[0]
                    if seq > self.last_seq:
                        self.last_seq = seq
                elif kind == _T:
                    self._boot_start(*struct.unpack("<HI", body))
                else:
                    w, extras, _ = _ack_fields(body)
                    self._note_acks(w, extras)
                good += n
        if torn and newest and not self.readonly:
            self._keep_prefix(path, good)
        self.seg_size[i] = good

    def _keep_prefix(self, path, n):
        """Replace the file by its first n bytes: copy, then atomic rename."""
        tmp = path + ".tmp"
        with open(path, "rb") as src, open(tmp, "wb") as out:
            while n > 0:
                chunk = src.read(min(n, 512))
                if not chunk:
                    break
                out.write(chunk)
                n -= len(chunk)
            out.flush()
        os.rename(tmp, path)

    def _segment_meta(self, i):
        with open(self._path(i), "rb") as f:
            r = _read_record(f)
        return _meta_of(r[1]) if r and r[0] == _H else None

    def _new_segment(self):
        """Start a segment for the next seq; its header carries the ack state."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._broken = False
        first = self.last_seq + 1
        if self.segs and self.segs[-1] == first:
            # The newest segment holds no check-in yet: replace it (same name).
            self.size -= self.seg_size.pop()
            self.segs.pop()
            os.remove("%s/%010d.seg" % (self.folder, first))
        self.segs.append(first)
        self.seg_size.append(0)
        self._f = open(self._path(len(self.segs) - 1), "wb")
        body = self._ack_body(self.extra)
        for s in self.meta:
            body += _str8(s)
        self._write(_record(_H, body))

    def _write(self, rec):
        try:
            self._f.write(rec)
            self._f.flush()  # on LittleFS: the commit; on POSIX it survives the process
        except OSError:
            self._broken = True
            raise
        self.seg_size[-1] += len(rec)
        self.size += len(rec)

    # -- acknowledgement state -------------------------------------------------

    def _ack_body(self, extras):
        body = struct.pack("<IB", self.w, len(extras))
        for s in extras:
            body += struct.pack("<I", s)
        return body

    def _note_acks(self, w, extras):
        if w > self.w:
            self.w = w
        ex = self.extra
        for s in extras:
            if s > self.w and s not in ex:
                ex.append(s)

    def _normalise(self):
        ex = self.extra
        w = self.w
        i = 0
        while i < len(ex):
            if ex[i] <= w:
                ex.pop(i)
            else:
                i += 1
        ex.sort()
        while len(ex) > MAX_EXTRA:
            ex.pop()  # forgotten: resent later, the bridge deduplicates

    def _boot_start(self, boot, start):
        for b in self.starts:
            if b[0] == boot:
                return
        if len(self.starts) >= MAX_BOOTS:
            self.starts.pop(0)
        self.starts.append((boot, start))

    def note_boot_start(self, start):
        """The clock is now set: record when this boot began (once per boot)."""
        for b in self.starts:
            if b[0] == self.boot:
                return
        self._boot_start(self.boot, start)
        if self._broken or self.seg_size[-1] + 12 > self.seg_bytes:
            self._new_segment()
        self._write(_record(_T, struct.pack("<HI", self.boot & 0xFFFF, start)))

    def _acked(self, seq):
        return seq <= self.w or seq in self.extra

    # -- reading ---------------------------------------------------------------

    def _next(self, cur):
        """The next check-in record at or after cursor `cur` (advancing it), or None."""
        while cur.seg < len(self.segs):
            if cur.f is None:
                cur.f = open(self._path(cur.seg), "rb")
                cur.f.seek(cur.off)
            r = _read_record(cur.f)
            if r is None or r is False:
                if cur.seg == len(self.segs) - 1:
                    cur.close()  # the newest segment may grow: reopen next time
                    return None
                cur.close()
                cur.seg += 1
                cur.off = 0
                continue
            kind, body, n = r
            cur.off += n
            if kind == _H:
                cur.meta = _meta_of(body)
            elif kind == _C:
                rec = decode_checkin(body)
                rec.meta = cur.meta
                return rec
        return None

    def _peek(self, cur):
        """The record at cur without moving it."""
        seg, off, meta = cur.seg, cur.off, cur.meta
        rec = self._next(cur)
        if rec is not None:
            cur.close()
            cur.seg, cur.off, cur.meta = seg, off, meta
        return rec

    def _count_pending(self):
        cur = self.head
        cur.seg = 0
        cur.off = 0
        n = 0
        found = False
        boots = self.boots
        while True:
            pos = (cur.seg, cur.off, cur.meta)
            rec = self._next(cur)
            if rec is None:
                break
            if self._acked(rec.seq):
                continue
            if not found:
                found = pos
            n += 1
            if rec.ts is None and rec.boot != self.boot:
                b = boots[-1] if boots else None
                if b is None or b[0] != rec.boot:
                    if len(boots) >= MAX_BOOTS:
                        boots.pop(0)  # oldest: estimated from the next one's start instead
                    b = [rec.boot, 0, None]
                    boots.append(b)
                if rec.up > b[1]:
                    b[1] = rec.up
            elif rec.ts is not None and boots and boots[-1][2] is None:
                for b in boots:
                    if b[2] is None:
                        b[2] = rec.ts
        cur.close()
        self.pending = n
        if found:
            cur.seg, cur.off, cur.meta = found
        self.send.copy_from(cur)

    def next_record(self):
        """The next pending check-in to publish, oldest first (advances the send
        cursor), or None when everything has been handed out."""
        while True:
            rec = self._next(self.send)
            if rec is None or not self._acked(rec.seq):
                return rec

    def rewind(self):
        """Hand out again from the oldest pending check-in (after a resend timeout)."""
        self.send.copy_from(self.head)

    def ts_of(self, rec, clock):
        """(unix ts, estimated) for rec, or None while the time cannot be known.
        clock: kiosk/clock.py (synced, boot_unix)."""
        if rec.ts is not None:
            return rec.ts, False
        if not clock.synced:
            return None
        if rec.boot == self.boot:
            return clock.boot_unix + rec.up, False  # same boot: exact once synced
        for b in self.starts:
            if b[0] == rec.boot:
                return b[1] + rec.up, False  # that boot learned its start later
        # An earlier boot that never knew the time: anchor its end on the next
        # real timestamp in the journal, or on the start of a later boot.
        anchor = clock.boot_unix
        boots = self.boots
        for i in range(len(boots) - 1, -1, -1):
            b = boots[i]
            if b[2] is not None and b[2] < anchor:
                anchor = b[2]
            start = anchor - b[1]
            if b[0] == rec.boot:
                return start + rec.up, True
            anchor = start
        return anchor - 1, True  # boot forgotten (MAX_BOOTS): just before the others

    # -- writing ---------------------------------------------------------------

    def next_seq(self):
        return self.last_seq + 1

    def room(self):
        """Bytes a check-in may still use; the last segment's worth is kept for
        acknowledgements (they free space)."""
        return self.max_bytes - self.seg_bytes - self.size

    @property
    def full(self):
        return self.room() < 256  # the largest check-in record is ~120 bytes

    def free_estimate(self):
        """About how many more check-ins fit (telemetry's journal_free)."""
        return max(0, self.room()) // 32

    def add(self, type_, ident, verdict, how, reason, ts, up=0):
        """Store a check-in durably; returns its seq, or 0 if the journal is full.
        ts = unix seconds, or None before the clock is set (then up = seconds
        since boot). Raises OSError if the flash fails (nothing is stored)."""
        seq = self.last_seq + 1
        rec = encode_checkin(seq, type_, ident, verdict, how, reason, ts, self.boot, up)
        if self.full:
            return 0
        if self._broken or self.seg_size[-1] + len(rec) > self.seg_bytes:
            self._new_segment()
        try:
            self._write(rec)
        except OSError:
            self.last_seq = seq  # never reuse a seq whose record may have landed
            raise
        self.last_seq = seq
        self.pending += 1
        return seq

    def ack(self, seqs):
        """The bridge stored (or refused for good) these seqs: forget them.
        Unknown and repeated seqs are ignored. Returns how many were freed."""
        new = []
        for s in seqs:
            if isinstance(s, int) and self.w < s <= self.last_seq and s not in self.extra \
                    and s not in new:
                new.append(s)
        if not new:
            return 0
        new.sort()
        # Move W over the oldest pending check-ins that are now acknowledged.
        head = self.head
        extra = self.extra
        w = self.w
        for s in new:
            extra.append(s)
        while True:
            rec = self._peek(head)
            if rec is None or rec.seq not in extra:
                break
            self._next(head)
            extra.remove(rec.seq)
            w = rec.seq
        if rec is None:
            w = self.last_seq  # nothing pending remains
        self.w = w
        self._normalise()
        # Durable before it counts: one record for the whole batch.
        ex = [s for s in new if s > w]
        if ex and len(ex) > MAX_EXTRA:
            ex = ex[:MAX_EXTRA]
        if self._broken or self.seg_size[-1] + 10 + 4 * len(ex) > self.seg_bytes:
            self._new_segment()  # its header holds the new state
        else:
            self._write(_record(_A, self._ack_body(ex)))
        self.pending -= len(new)
        if self.pending < 0:
            self.pending = 0
        if self.send.seg < head.seg or (self.send.seg == head.seg and self.send.off < head.off):
            self.send.copy_from(head)
        self._drop_acked_segments()
        return len(new)

    def _drop_acked_segments(self):
        # Every segment before the one holding the oldest pending check-in (the
        # head cursor; at the very end when nothing is pending) is fully
        # acknowledged. Decided by position, never by a count.
        n = min(self.head.seg, len(self.segs) - 1)
        if n <= 0:
            return
        for i in range(n):
            os.remove(self._path(i))
            self.size -= self.seg_size[i]
        self.segs = self.segs[n:]
        self.seg_size = self.seg_size[n:]
        for cur in (self.head, self.send):  # the send cursor is never behind the head
            cur.close()
            cur.seg -= n

    def close(self):
        for cur in (self.head, self.send):
            cur.close()
        if self._f is not None:
            self._f.close()
            self._f = None


def pending_in(folder):
    """The seqs still pending in a journal folder, oldest first, changing
    nothing (for tests and tools; reads the whole journal)."""
    j = Journal(folder, None, readonly=True)
    out = []
    while True:
        rec = j.next_record()
        if rec is None:
            break
        out.append(rec.seq)
    j.close()
    return out
