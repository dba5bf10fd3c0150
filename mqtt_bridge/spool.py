"""The bridge's durable spool: check-ins between their MQTT ack and the backend's 200.

SQLite in WAL mode with synchronous=FULL: once `store()` returns, the records
survive a power cut, which is what lets ingest acknowledge them to the kiosk.
The pending table is keyed on the check-in identity (device, seq), so a
redelivered or resent check-in is absorbed by INSERT OR IGNORE. Records the
backend refuses for good (HTTP 422) move to dead_letter with the reason.

Personal data is short-lived (invariant 7): a pending check-in leaves at the
backend's 200; a dead letter, which waits for an operator, is deleted once it
is older than the retention limit (`purge_dead_letters`, run by the service).
The depth is counted in memory (exact: every change goes through this class),
so back-pressure and /metrics can read it on every commit without a scan.

One connection shared by the ingest writer and the forwarder behind a lock:
SQLite serialises writers anyway, and every critical section is short.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqtt_bridge.schema import CheckIn

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS dead_letter (
    device    TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    failed_at REAL    NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX IF NOT EXISTS dead_letter_by_time ON dead_letter (failed_at);
CREATE TABLE IF NOT EXISTS documents (
    kind      TEXT PRIMARY KEY,
    serial    INTEGER NOT NULL,
    body_hash TEXT    NOT NULL,
    expires   INTEGER NOT NULL,
    text      TEXT    NOT NULL
);
"""


@dataclass(frozen=True)
class SpoolRow:
    """A pending check-in: its rowid (insertion order), identity and canonical JSON body."""

    rowid: int
    device: str
    seq: int
    body: str

    @property
    def identity(self) -> str:
        """`<device>:<seq>`."""
        return f"{self.device}:{self.seq}"


@dataclass(frozen=True)
class StoreResult:
    """Outcome of one durable store: every record is now held (new or already there)."""

    seqs: list[int]
    new: int
    duplicates: int


def open_durable_db(path: Path | str) -> sqlite3.Connection:
    """A SQLite connection for records that must survive a crash or power cut.

    WAL for concurrent readers; synchronous=FULL fsyncs the WAL on every commit,
    because a commit is a promise (an ack to a kiosk, a 200 to the bridge).
    isolation_level=None: callers issue BEGIN/COMMIT so a batch is one transaction.
    """
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class Spool:
    """The SQLite spool. Thread-safe; call `close()` when done."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_durable_db(self.path)
        self._db.executescript(SCHEMA)
        self._depth = int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpoints the WAL)."""
        with self._lock:
            self._db.close()

    def store_detailed(self, records: Sequence[CheckIn]) -> StoreResult:
        """Commit `records` durably in one transaction; report how many were new.

        Raises sqlite3.Error if the commit fails, in which case nothing may be acked.
        """
        now = time.time()
        rows = [(r.device, r.seq, r.to_json(), now) for r in records]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # executemany's rowcount is the total of rows inserted (ignored ones: 0).
                new = self._db.executemany(
                    "INSERT OR IGNORE INTO pending (device, seq, body, received_at)"
                    " VALUES (?, ?, ?, ?)",
                    rows,
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += new
        return StoreResult([r.seq for r in records], new, len(rows) - new)

    def store(self, records: Sequence[CheckIn]) -> list[int]:
        """Commit `records` durably; return the seqs now stored or already held (all of them)."""
        return self.store_detailed(records).seqs

    def take(self, limit: int = 500) -> list[SpoolRow]:
        """Up to `limit` pending rows, oldest first. They stay pending until deleted."""
        with self._lock:
            cur = self._db.execute(
                "SELECT rowid, device, seq, body FROM pending ORDER BY rowid LIMIT ?", (limit,)
            )
            return [SpoolRow(*row) for row in cur.fetchall()]

    def delete(self, rows: Iterable[SpoolRow]) -> int:
        """Remove rows the backend accepted; returns how many were removed."""
        keys = [(r.device, r.seq) for r in rows]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.executemany(
                    "DELETE FROM pending WHERE device = ? AND seq = ?", keys
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
        return removed

    def dead_letter(self, row: SpoolRow, reason: str) -> None:
        """Move a row the backend refuses for good from pending to dead_letter, with why."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letter (device, seq, body, reason, failed_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row.device, row.seq, row.body, reason, time.time()),
                )
                removed = self._db.execute(
                    "DELETE FROM pending WHERE device = ? AND seq = ?", (row.device, row.seq)
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed

    def depth(self) -> int:
        """How many check-ins wait to be forwarded (no query: counted as they come and go)."""
        return self._depth

    def purge_dead_letters(self, older_than: float) -> int:
        """Delete dead letters that failed before `older_than` (Unix time); returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM dead_letter WHERE failed_at < ?", (older_than,))
            return int(cur.rowcount)

    def document(self, kind: str) -> tuple[int, str, int, str] | None:
        """(serial, body_hash, expires, text) of the last fleet document of `kind` published."""
        with self._lock:
            row = self._db.execute(
                "SELECT serial, body_hash, expires, text FROM documents WHERE kind = ?", (kind,)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    def save_document(
        self, kind: str, serial: int, body_hash: str, expires: int, text: str
    ) -> None:
        """Remember the fleet document just published (the next serial must be higher)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO documents (kind, serial, body_hash, expires, text)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, serial, body_hash, expires, text),
            )

    def dead_letters(self) -> list[tuple[str, int, str]]:
        """(device, seq, reason) of every dead-lettered check-in, oldest first (no bodies)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT device, seq, reason FROM dead_letter ORDER BY failed_at, rowid"
            )
            return [(str(d), int(s), str(r)) for d, s, r in cur.fetchall()]
