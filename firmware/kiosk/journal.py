# The check-in journal: store-and-forward on the kiosk's flash.
#
# A check-in is appended (and flushed) before the kiosk shows its verdict, and
# leaves the journal only when the bridge acknowledges that it stored it.
#
# File format: one line per record, "<crc32 hex8> <body>\n", where body is
#   C <seq> <json>   a check-in
#   A <seq>          the bridge acknowledged check-in <seq>
#   B <seq>          base: sequence numbers up to <seq> were used (after compaction)
# Appends only ever touch the end of the file, so a power cut can only leave a
# torn last line; load() stops at the first line whose CRC or newline is
# missing and rewrites the file without it. Compaction writes the live records
# to a temporary file and renames it over the journal (atomic on LittleFS and
# POSIX), so the journal is always either the old or the new file.
# Heap: a dict of pending seq -> file offset (~30 bytes per pending check-in).

import binascii
import os

try:
    from micropython import const
except ImportError:  # CPython (host tests and tools)
    def const(x):
        return x

# Compact once the file is this big and mostly acknowledged records.
COMPACT_AT = const(32768)


def _crc(body):
    return "%08x" % (binascii.crc32(body) & 0xFFFFFFFF)


def _line(body):
    return (_crc(body) + " ").encode() + body + b"\n"


class Journal:
    def __init__(self, path):
        self.path = path
        self.pending = {}  # seq -> offset of its line
        self.last_seq = 0
        self.size = 0
        self._f = None
        self._load()

    # -- loading -------------------------------------------------------------

    def _load(self):
        self.pending = {}
        self.last_seq = 0
        offset = 0
        torn = False
        try:
            f = open(self.path, "rb")
        except OSError:
            f = None
        if f is not None:
            with f:
                while True:
                    line = f.readline()
                    if not line:
                        break
                    if not self._apply(line, offset):
                        torn = True
                        break
                    offset += len(line)
        self.size = offset
        try:
            os.remove(self.path + ".tmp")  # left by a compaction cut short
        except OSError:
            pass
        if torn or f is None:
            self._rewrite()
        self._f = open(self.path, "ab")

    def _apply(self, line, offset):
        # Returns False for a torn or corrupt line.
        if len(line) < 12 or line[-1] != 10 or line[8] != 32:
            return False
        body = line[9:-1]
        if line[:8] != _crc(body).encode():
            return False
        kind = body[0]
        end = body.find(b" ", 2)
        try:
            seq = int(body[2:] if end < 0 else body[2:end])
        except ValueError:
            return False
        if kind == 67:  # C
            self.pending[seq] = offset
        elif kind == 65:  # A
            self.pending.pop(seq, None)
        elif kind != 66:  # not B either
            return False
        if seq > self.last_seq:
            self.last_seq = seq
        return True

    # -- writing -------------------------------------------------------------

    def _append(self, body):
        line = _line(body)
        self._f.write(line)
        self._f.flush()
        offset = self.size
        self.size += len(line)
        return offset

    def append(self, seq, payload):
        """Store check-in `seq` (its JSON bytes) durably."""
        offset = self._append(b"C %d " % seq + payload)
        self.pending[seq] = offset
        if seq > self.last_seq:
            self.last_seq = seq

    def next_seq(self):
        return self.last_seq + 1

    def ack(self, seq):
        """The bridge stored `seq`: forget it. Unknown seqs are ignored."""
        if seq not in self.pending:
            return False
        self._append(b"A %d" % seq)
        del self.pending[seq]
        if self.size > COMPACT_AT and len(self.pending) * 512 < self.size:
            self.compact()
        return True

    def read(self, seq):
        """The JSON payload of pending check-in `seq`, or None."""
        offset = self.pending.get(seq)
        if offset is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(offset)
            line = f.readline()
        body = line[9:-1]
        # Skip "C <seq> ".
        return body[body.find(b" ", 2) + 1:]

    def pending_seqs(self):
        """Pending check-ins, oldest first."""
        seqs = list(self.pending)
        seqs.sort()
        return seqs

    def compact(self):
        """Rewrite the journal holding only what is still pending."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._rewrite()
        self._f = open(self.path, "ab")

    def _rewrite(self):
        tmp = self.path + ".tmp"
        seqs = self.pending_seqs()
        payloads = []
        if seqs:
            with open(self.path, "rb") as src:
                for seq in seqs:
                    src.seek(self.pending[seq])
                    payloads.append(src.readline())
        pending = {}
        with open(tmp, "wb") as out:
            size = 0
            line = _line(b"B %d" % self.last_seq)
            out.write(line)
            size += len(line)
            for i in range(len(seqs)):
                pending[seqs[i]] = size
                out.write(payloads[i])
                size += len(payloads[i])
            out.flush()
        os.rename(tmp, self.path)
        self.pending = pending
        self.size = size

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
