"""Thread-safe running counters of the bridge, for the periodic summary line and tests."""

from __future__ import annotations

import threading

COUNTER_NAMES = (
    "received",
    "stored",
    "duplicates",
    "rejected",
    "forwarded",
    "dead_lettered",
    "verify_requests",
    "verify_invalid",
    "telemetry",
    "telemetry_invalid",
    "purged",
)


class Counters:
    """Named integer counters shared by the ingest, writer and forwarder threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name` (one of COUNTER_NAMES)."""
        if name not in self._values:
            raise KeyError(name)
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of every counter."""
        with self._lock:
            return dict(self._values)

    def summary(self) -> str:
        """One line `received=… stored=… …`, for the log."""
        return " ".join(f"{k}={v}" for k, v in self.snapshot().items())
