"""Online check service: answer `kiosk/<device>/verify` on `kiosk/<device>/verify/result`.

Identity-only codes (PC-COVID, CCCD) are looked up in the backend's status API
(`GET /api/v1/status/<id>`), with a TTL cache in front and a hard deadline: a
kiosk waits only a moment before it applies its offline rule, so an answer
that cannot be had in time is `unknown` (sent at once, so the kiosk need not
wait out its own timer). `HC1:` certificates are verified here with
mqtt_bridge.hcert against the same trust list the kiosks hold.

Cache hits are answered on the MQTT network thread (microseconds); misses go
to a small thread pool. Answers never contain personal data; the identifier
is only held in the in-memory cache, for at most `cache_ttl` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from mqtt_bridge.backend_client import BackendClient

log = logging.getLogger("mqtt_bridge.verify")

STATUS_PATH = "/api/v1/status/"
RID_MAX = 2**31 - 1
ID_MAX = 64
HC1_MAX = 4096
#: Most identifiers held in the cache (least recently used go first).
CACHE_MAX = 100_000


@dataclass(frozen=True)
class Answer:
    """An online check's outcome: result pass/fail/unknown and a reason code (or None)."""

    result: str
    reason: str | None = None

    def payload(self, rid: int) -> bytes:
        body = {"v": 1, "rid": rid, "result": self.result, "reason": self.reason}
        return json.dumps(body, separators=(",", ":")).encode()


def answer_from_status(status: dict[str, Any]) -> Answer:
    """The city's rule on a status record: isolation, a positive test or no declaration fail."""
    if status.get("isolation") is True:
        return Answer("fail", "isolation")
    if status.get("test") == "positive":
        return Answer("fail", "positive_test")
    if status.get("declaration") != "valid":
        return Answer("fail", "no_declaration")
    return Answer("pass", None)


@dataclass(frozen=True)
class Request:
    """A parsed online check request."""

    rid: int
    type: str
    key: str  # the identifier, or the HC1 text


def parse_request(payload: bytes) -> Request | int | None:
    """A valid request, or the rid alone (answerable with `invalid_request`), or None."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    rid = obj.get("rid")
    if type(rid) is not int or not 1 <= rid <= RID_MAX:
        return None
    if obj.get("v") != 1 or type(obj.get("v")) is not int:
        return rid
    kind = obj.get("type")
    if kind in ("cccd", "pccovid"):
        ident = obj.get("id")
        if isinstance(ident, str) and 1 <= len(ident) <= ID_MAX and "/" not in ident:
            return Request(rid, kind, ident)
    elif kind == "hc1":
        code = obj.get("code")
        if isinstance(code, str) and code.startswith("HC1:") and len(code) <= HC1_MAX:
            return Request(rid, kind, code)
    return rid


class _TTLCache:
    def __init__(self, ttl: float, size: int = CACHE_MAX) -> None:
        self.ttl, self.size = ttl, size
        self._data: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Answer | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: str, answer: Answer) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, answer)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class VerifyService:
    """Answers online checks; `handle()` is called on the MQTT network thread."""

    def __init__(
        self,
        backend: BackendClient | None,
        publish: Callable[[str, bytes], None],
        *,
        deadline: float = 0.5,
        cache_ttl: float = 60.0,
        workers: int = 16,
        trust: Any = None,
        on_latency: Callable[[float], None] | None = None,
        on_invalid: Callable[[], None] | None = None,
    ) -> None:
        """`publish(topic, payload)` sends the answer (QoS 0); `trust` is an hcert.TrustList."""
        self.backend = backend
        self.publish = publish
        self.deadline = deadline
        self.trust = trust
        self._cache = _TTLCache(cache_ttl)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
        self._on_latency = on_latency or (lambda s: None)
        self._on_invalid = on_invalid or (lambda: None)

    def close(self) -> None:
        """Stop the workers (requests in progress are finished)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def handle(self, device: str, payload: bytes) -> None:
        """Answer one request from `device` (already a valid device id). Never raises."""
        started = time.perf_counter()
        request = parse_request(payload)
        if not isinstance(request, Request):
            self._on_invalid()
            if isinstance(request, int):
                self._answer(device, request, Answer("unknown", "invalid_request"), started)
            return
        if request.type != "hc1":
            cached = self._cache.get(request.key)
            if cached is not None:
                self._answer(device, request.rid, cached, started)
                return
        self._pool.submit(self._resolve, device, request, started)

    def _answer(self, device: str, rid: int, answer: Answer, started: float) -> None:
        try:
            self.publish(f"kiosk/{device}/verify/result", answer.payload(rid))
        except Exception as exc:
            log.warning("could not publish an online check answer (%s)", type(exc).__name__)
        self._on_latency(time.perf_counter() - started)

    def _resolve(self, device: str, request: Request, started: float) -> None:
        try:
            if request.type == "hc1":
                answer = self._check_hc1(request.key)
            else:
                answer = self._lookup(request.key, started)
        except Exception as exc:
            # Type only: the exception text could quote the identifier.
            log.warning("online check failed (%s)", type(exc).__name__)
            answer = Answer("unknown", "error")
        self._answer(device, request.rid, answer, started)

    def _lookup(self, ident: str, started: float) -> Answer:
        if self.backend is None:
            return Answer("unknown", "no_backend")
        remaining = self.deadline - (time.perf_counter() - started)
        if remaining <= 0:
            return Answer("unknown", "timeout")
        try:
            response = self.backend.request(
                "GET", STATUS_PATH + quote(ident, safe=""), timeout=remaining
            )
        except httpx.TimeoutException:
            return Answer("unknown", "timeout")
        except httpx.HTTPError:
            return Answer("unknown", "backend_unreachable")
        if response.status_code == 404:
            answer = Answer("unknown", "unknown_person")
        elif response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                return Answer("unknown", "backend_error")
            if not isinstance(body, dict):
                return Answer("unknown", "backend_error")
            answer = answer_from_status(body)
        else:
            return Answer("unknown", "backend_error")
        self._cache.put(ident, answer)
        return answer

    def _check_hc1(self, code: str) -> Answer:
        if self.trust is None:
            return Answer("unknown", "no_trust_list")
        from mqtt_bridge import hcert

        result = hcert.verify_hc1(code, self.trust, int(time.time()))
        if result.ok:
            return Answer("pass", None)
        return Answer("fail", result.reason or "invalid")
