"""Fleet view: every kiosk's status (birth / last will), last seen, telemetry, in SQLite.

The bridge feeds it from the broker: `kiosk/<device>/status` (retained
`online` / `offline`; the broker publishes `offline` as the kiosk's last will
when its connection dies), `kiosk/<device>/telemetry` (firmware version,
journal depth, heap, RSSI, ...) and any check-in (last seen). Updates are kept
in memory and written every `flush_interval` seconds in one transaction, so a
busy fleet costs one small commit a few times a minute. `kiosk-bridge fleet`
reads the database and prints the table; it flags kiosks that are offline and
kiosks that are stale: "online" by their status but silent for longer than
`stale_after` (a kiosk whose network hangs without the broker noticing yet, or
whose firmware is stuck while its MQTT stack still answers pings).

Never holds personal data: telemetry has none (docs/protocol.md), and only the
known, typed fields are kept.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mqtt_bridge.fleet")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kiosks (
    device       TEXT PRIMARY KEY,
    status       TEXT NOT NULL DEFAULT 'unknown',
    status_at    REAL,
    last_seen    REAL,
    telemetry_at REAL,
    fw           TEXT,
    uptime       INTEGER,
    journal      INTEGER,
    journal_full INTEGER,
    heap_free    INTEGER,
    rssi         INTEGER,
    reconnects   INTEGER,
    clock        TEXT
);
"""

#: Default: three missed telemetry periods (the kiosks' default period is 60 s).
DEFAULT_STALE_AFTER = 180.0
_INT_FIELDS = ("uptime", "journal", "heap_free", "rssi", "reconnects")
_COLUMNS = (
    "status",
    "status_at",
    "last_seen",
    "telemetry_at",
    "fw",
    "uptime",
    "journal",
    "journal_full",
    "heap_free",
    "rssi",
    "reconnects",
    "clock",
)


def parse_telemetry(payload: bytes) -> dict[str, Any] | None:
    """The known fields of a telemetry message, type-checked; None if it is not one."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("v") != 1:
        return None
    out: dict[str, Any] = {}
    fw = obj.get("fw")
    if isinstance(fw, str) and len(fw) <= 32:
        out["fw"] = fw
    for name in _INT_FIELDS:
        value = obj.get(name)
        if type(value) is int and -(2**62) < value < 2**62:
            out[name] = value
    if type(obj.get("journal_full")) is bool:
        out["journal_full"] = int(obj["journal_full"])
    if obj.get("clock") in ("ntp", "estimated"):
        out["clock"] = obj["clock"]
    return out


class FleetTracker:
    """In-memory fleet state, flushed to SQLite by a background thread. Thread-safe."""

    def __init__(self, path: Path | str, flush_interval: float = 2.0) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        cur = self._db.execute(f"SELECT device, {', '.join(_COLUMNS)} FROM kiosks")
        for device, *values in cur.fetchall():
            self._rows[device] = dict(zip(_COLUMNS, values, strict=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="fleet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Write what is pending and close the database."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.flush()
        self._db.close()

    def _row(self, device: str) -> dict[str, Any]:
        row = self._rows.get(device)
        if row is None:
            row = self._rows[device] = dict.fromkeys(_COLUMNS)
            row["status"] = "unknown"
        self._dirty.add(device)
        return row

    def status(self, device: str, payload: bytes) -> bool:
        """Record a birth (`online`) or last will (`offline`); False if the payload is neither."""
        text = payload.decode("ascii", "replace").strip()
        if text not in ("online", "offline"):
            return False
        now = time.time()
        with self._lock:
            row = self._row(device)
            row["status"], row["status_at"] = text, now
            if text == "online":
                row["last_seen"] = now
        return True

    def telemetry(self, device: str, payload: bytes) -> bool:
        """Record a telemetry message; False (nothing recorded but last seen) if malformed."""
        fields = parse_telemetry(payload)
        now = time.time()
        with self._lock:
            row = self._row(device)
            row["last_seen"] = now
            if fields is None:
                return False
            row.update(fields)
            row["telemetry_at"] = now
        return True

    def seen(self, device: str) -> None:
        """The device sent something (a check-in, an online check)."""
        with self._lock:
            self._row(device)["last_seen"] = time.time()

    def seen_many(self, devices: set[str]) -> None:
        """Several devices sent something (one call per spool commit)."""
        now = time.time()
        with self._lock:
            for device in devices:
                self._row(device)["last_seen"] = now

    def online_count(self) -> int:
        """Kiosks whose last status is `online`."""
        with self._lock:
            return sum(1 for r in self._rows.values() if r["status"] == "online")

    def flush(self) -> None:
        """Write the changed rows in one transaction."""
        with self._lock:
            rows = [(d, *(self._rows[d][c] for c in _COLUMNS)) for d in self._dirty]
            self._dirty.clear()
        if not rows:
            return
        marks = ", ".join("?" * (len(_COLUMNS) + 1))
        self._db.execute("BEGIN")
        self._db.executemany(
            f"INSERT OR REPLACE INTO kiosks (device, {', '.join(_COLUMNS)}) VALUES ({marks})", rows
        )
        self._db.execute("COMMIT")

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except sqlite3.Error as exc:
                log.error("fleet flush failed: %s", exc)


@dataclass(frozen=True)
class KioskView:
    """One row of the fleet table, with its flag."""

    device: str
    status: str
    last_seen: float | None
    fw: str | None
    journal: int | None
    journal_full: bool
    uptime: int | None
    rssi: int | None
    flag: str  # "ok", "offline", "stale", "unknown"


def load_registry(path: Path | str) -> dict[str, dict[str, Any]]:
    """The devices of kioskctl's fleet registry (docs/protocol.md, "Fleet registry").

    Raises ValueError naming the file when it is not a registry.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the fleet registry ({exc})") from None
    devices = data.get("devices") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(devices, dict):
        raise ValueError(f'{path}: not a fleet registry ({{"v":1,"devices":{{...}}}})')
    return {str(k): v if isinstance(v, dict) else {} for k, v in devices.items()}


def read_fleet(
    path: Path | str,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
    registry: dict[str, dict[str, Any]] | None = None,
) -> list[KioskView]:
    """The fleet table from the database, sorted: problems first, then by device.

    With a `registry` (load_registry), registered kiosks the bridge has never
    heard of are listed too, flagged "never".
    """
    now = time.time() if now is None else now
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        cur = db.execute(
            "SELECT device, status, last_seen, fw, journal, journal_full, uptime, rssi FROM kiosks"
        )
        rows = cur.fetchall()
    finally:
        db.close()
    views = []
    for device, status, last_seen, fw, journal, journal_full, uptime, rssi in rows:
        if status == "offline":
            flag = "offline"
        elif status == "online" and (last_seen is None or now - last_seen > stale_after):
            flag = "stale"
        elif status == "online":
            flag = "ok"
        else:
            flag = "unknown"
        views.append(
            KioskView(
                device, status, last_seen, fw, journal, bool(journal_full), uptime, rssi, flag
            )
        )
    known = {v.device for v in views}
    for device, entry in (registry or {}).items():
        if device not in known:
            fw = entry.get("fw") if isinstance(entry.get("fw"), str) else None
            views.append(KioskView(device, "never", None, fw, None, False, None, None, "never"))
    order = {"offline": 0, "stale": 1, "never": 2, "unknown": 3, "ok": 4}
    views.sort(key=lambda v: (order[v.flag], v.device))
    return views


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago"


def print_fleet(views: list[KioskView], now: float | None = None, console: Any = None) -> None:
    """Print the fleet table with rich (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    now = time.time() if now is None else now
    console = console or Console()
    table = Table(title=f"Fleet: {len(views)} kiosks")
    for column in ("device", "state", "last seen", "fw", "journal", "uptime", "rssi"):
        table.add_column(column)
    style = {
        "offline": "bold red",
        "stale": "bold yellow",
        "never": "yellow",
        "ok": "green",
        "unknown": "dim",
    }
    for v in views:
        state = {"ok": "online", "stale": "STALE", "offline": "OFFLINE", "never": "NEVER SEEN"}
        state = state.get(v.flag, v.status)
        journal = "" if v.journal is None else str(v.journal) + (" FULL" if v.journal_full else "")
        table.add_row(
            v.device,
            f"[{style[v.flag]}]{state}[/]",
            _ago(None if v.last_seen is None else now - v.last_seen),
            v.fw or "",
            journal,
            "" if v.uptime is None else str(v.uptime),
            "" if v.rssi is None else str(v.rssi),
        )
    console.print(table)
    counts = {f: sum(1 for v in views if v.flag == f) for f in ("ok", "stale", "offline", "never")}
    console.print(
        f"online {counts['ok']}, stale {counts['stale']}, offline {counts['offline']},"
        f" never seen {counts['never']}"
    )
