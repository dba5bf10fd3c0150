"""Forward the spool to the city backend: batches, idempotency keys, backoff, dead letters.

Rows leave the spool only after the backend answered 200 for their batch, so
a crash at any point means a resend, never a loss; the backend deduplicates
on identity and on the batch's Idempotency-Key, so a resend is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from mqtt_bridge.backend_client import BackendClient
from mqtt_bridge.spool import Spool, SpoolRow

log = logging.getLogger("mqtt_bridge.forwarder")

CHECKINS_PATH = "/api/v1/checkins"
#: Rows per POST; the protocol allows up to 1000.
BATCH_SIZE = 500


def idempotency_key(rows: Sequence[SpoolRow]) -> str:
    """Hex SHA-256 over the batch's identities sorted by (device, seq), one per line.

    Stable for a retried batch whatever its order, different for any other set.
    """
    identities = sorted((r.device, r.seq) for r in rows)
    text = "\n".join(f"{device}:{seq}" for device, seq in identities)
    return hashlib.sha256(text.encode()).hexdigest()


def batch_body(rows: Sequence[SpoolRow]) -> bytes:
    """The POST body `{"checkins": [...]}`, spliced from the stored canonical JSON bodies."""
    return ('{"checkins":[' + ",".join(r.body for r in rows) + "]}").encode()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, initial*2^n))."""

    initial: float = 0.2
    cap: float = 30.0

    def delay(self, attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        # min() before the power would still overflow for huge attempts; clamp the exponent.
        ceiling = min(self.cap, self.initial * (2 ** min(attempt, 32)))
        return rng(0.0, ceiling)


class Forwarder(threading.Thread):
    """Background thread draining the spool into `POST {backend_url}/api/v1/checkins`."""

    def __init__(
        self,
        spool: Spool,
        backend_url: str,
        *,
        backoff: Backoff | None = None,
        batch_size: int = BATCH_SIZE,
        verify: bool | str = True,
        timeout: float = 10.0,
        idle_poll: float = 1.0,
        client: httpx.Client | None = None,
        backend: BackendClient | None = None,
        on_forwarded: Callable[[int], None] | None = None,
        on_dead_letter: Callable[[int], None] | None = None,
        on_latency: Callable[[float], None] | None = None,
    ) -> None:
        """`verify` is the TLS setting: True (system CAs) or a CA bundle path; never off.

        `backend` is a configured BackendClient (OAuth2 etc.); without one a plain
        one is made for `backend_url`. `client` lets tests inject an httpx.Client
        (e.g. with a MockTransport). `on_latency` gets each POST's seconds.
        """
        super().__init__(name="forwarder", daemon=True)
        self.spool = spool
        self.url = backend_url.rstrip("/") + CHECKINS_PATH
        self.backoff = backoff or Backoff()
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self._backend = backend or BackendClient(
            backend_url, verify=verify, timeout=timeout, client=client
        )
        self._owns_client = backend is None and client is None
        self._on_latency = on_latency or (lambda s: None)
        self._on_forwarded = on_forwarded or (lambda n: None)
        self._on_dead_letter = on_dead_letter or (lambda n: None)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failed attempts in a row (0 while the backend accepts)."""
        return self._failures

    @property
    def backoff_ceiling(self) -> float:
        """The ceiling of the wait before the next retry (0 while the backend accepts)."""
        if not self._failures:
            return 0.0
        return min(self.backoff.cap, self.backoff.initial * (2 ** min(self._failures - 1, 32)))

    def wake(self) -> None:
        """Tell the forwarder there is something new in the spool (called by ingest)."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the thread to finish its current request and exit; wait for it."""
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        if self._owns_client:
            self._backend.close()

    def run(self) -> None:
        """Loop: take a batch, send it, back off on failure, sleep when the spool is empty."""
        while not self._halt.is_set():
            # Clear before looking, so a store that lands after the look still wakes us.
            self._wake.clear()
            try:
                rows = self.spool.take(self.batch_size)
            except Exception as exc:
                log.error("cannot read the spool (%s)", exc)
                self._halt.wait(self.backoff.cap)
                continue
            if not rows:
                self._wake.wait(self.idle_poll)
                continue
            try:
                progressed = self.send(rows)
            except Exception as exc:
                # No traceback: the frames could show batch bodies (personal data).
                log.error("forwarding failed (%s); retrying with backoff", type(exc).__name__)
                progressed = False
            if progressed:
                self._failures = 0
            else:
                delay = self.backoff.delay(self._failures)
                self._failures += 1
                # Only a stop interrupts the backoff: new check-ins must not hammer a sick backend.
                self._halt.wait(delay)

    def send(self, rows: Sequence[SpoolRow]) -> bool:
        """POST one batch and settle it in the spool. True on progress, False to back off."""
        started = time.perf_counter()
        try:
            response = self._backend.request(
                "POST",
                CHECKINS_PATH,
                content=batch_body(rows),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": idempotency_key(rows),
                },
            )
        except httpx.HTTPError as exc:
            self._report_failure(f"{type(exc).__name__}")
            return False
        self._on_latency(time.perf_counter() - started)
        status = response.status_code
        if status == 200:
            self.spool.delete(rows)
            if self._failures:
                log.info("backend accepts check-ins again after %d failed attempts", self._failures)
            self._on_forwarded(len(rows))
            return True
        if status == 422:
            index = _json_field(response, "index")
            if type(index) is int and 0 <= index < len(rows):
                row = rows[index]
                reason = _short_reason(response)
                self.spool.dead_letter(row, f"422: {reason}")
                # device and seq identify the record without personal data.
                log.warning("backend refused %s for good (%s): dead-lettered", row.identity, reason)
                self._on_dead_letter(1)
                return True  # the rest goes again at once, without this row
        self._report_failure(f"HTTP {status}")
        return False

    def _report_failure(self, what: str) -> None:
        # First failure loud, the retries quiet: an outage must not flood the log.
        if self._failures == 0:
            log.warning("backend %s failed (%s); retrying with backoff", self.url, what)
        else:
            log.debug("backend retry %d failed (%s)", self._failures, what)


def _json_field(response: httpx.Response, key: str) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(key) if isinstance(body, dict) else None


def _short_reason(response: httpx.Response) -> str:
    reason = _json_field(response, "error")
    # Bounded and single-line: it goes into the log and the dead_letter table.
    text = reason if isinstance(reason, str) else "no reason given"
    return " ".join(text.split())[:200]
