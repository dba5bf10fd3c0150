"""Online check service: answer `kiosk/<device>/verify` on `kiosk/<device>/verify/result`.

Identity-only codes (PC-COVID, CCCD) are looked up in the backend's status API
(`GET /api/v1/status/<id>`), with a TTL cache in front and a hard deadline: a
kiosk waits only a moment before it applies its offline rule, so an answer
that cannot be had in time is `unknown` (sent at once, so the kiosk need not
wait out its own timer). `HC1:` certificates are verified here with
mqtt_bridge.hcert against the same trust list the kiosks hold.

Cache hits are answered on the MQTT network thread (microseconds); misses go
to a few worker threads. A worker takes every miss queued at that moment (up to
`batch_max`) and asks for all of them in one `POST /api/v1/status` (a lone one
is a `GET /api/v1/status/<id>`): at 1,000 scans a second, one HTTP round trip
per scan would queue up behind the backend, while batches grow with the load
and keep the wait at about one round trip. Answers never contain personal
data; the identifier is only held in the in-memory cache, for at most
`cache_ttl` seconds.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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
#: Most identifiers in one batch lookup (the backend's limit).
BATCH_MAX = 100


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


@dataclass(frozen=True)
class _Pending:
    device: str
    request: Request
    started: float


class VerifyService:
    """Answers online checks; `handle()` is called on the MQTT network thread."""

    def __init__(
        self,
        backend: BackendClient | None,
        publish: Callable[[str, bytes], None],
        *,
        deadline: float = 0.5,
        cache_ttl: float = 60.0,
        workers: int = 4,
        batch_max: int = BATCH_MAX,
        trust: Any = None,
        on_latency: Callable[[float], None] | None = None,
        on_invalid: Callable[[], None] | None = None,
    ) -> None:
        """`publish(topic, payload)` sends the answer (QoS 0); `trust` is an hcert.TrustList."""
        self.backend = backend
        self.publish = publish
        self.deadline = deadline
        self.batch_max = batch_max
        self.trust = trust
        self._cache = _TTLCache(cache_ttl)
        self._misses: queue.Queue[_Pending | None] = queue.Queue()
        self._on_latency = on_latency or (lambda s: None)
        self._on_invalid = on_invalid or (lambda: None)
        self._workers = [
            threading.Thread(target=self._work, name=f"verify-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        """Stop the workers (batches in progress are finished)."""
        for _ in self._workers:
            self._misses.put(None)
        for worker in self._workers:
            worker.join(self.deadline + 5)

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
        self._misses.put(_Pending(device, request, started))

    def _answer(self, device: str, rid: int, answer: Answer, started: float) -> None:
        try:
            self.publish(f"kiosk/{device}/verify/result", answer.payload(rid))
        except Exception as exc:
            log.warning("could not publish an online check answer (%s)", type(exc).__name__)
        self._on_latency(time.perf_counter() - started)

    def _work(self) -> None:
        while True:
            first = self._misses.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    item = self._misses.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._misses.put(None)  # for this worker's next round: stop then
                    break
                batch.append(item)
            try:
                self._resolve(batch)
            except Exception as exc:
                # Type only: the exception text could quote an identifier.
                log.warning("online check failed (%s)", type(exc).__name__)
                for p in batch:
                    self._answer(p.device, p.request.rid, Answer("unknown", "error"), p.started)

    def _resolve(self, batch: list[_Pending]) -> None:
        identity: list[_Pending] = []
        for p in batch:
            if p.request.type == "hc1":
                self._answer(p.device, p.request.rid, self._check_hc1(p.request.key), p.started)
                continue
            cached = self._cache.get(p.request.key)  # a batch before may have brought it
            if cached is not None:
                self._answer(p.device, p.request.rid, cached, p.started)
            else:
                identity.append(p)
        if not identity:
            return
        now = time.perf_counter()
        remaining = min(p.started for p in identity) + self.deadline - now
        answers = self._lookup(sorted({p.request.key for p in identity}), remaining)
        for p in identity:
            self._answer(p.device, p.request.rid, answers[p.request.key], p.started)

    def _lookup(self, ids: list[str], remaining: float) -> dict[str, Answer]:
        """Answers for `ids` within `remaining` seconds (unknown for all on any failure)."""

        def all_of(answer: Answer) -> dict[str, Answer]:
            return dict.fromkeys(ids, answer)

        if self.backend is None:
            return all_of(Answer("unknown", "no_backend"))
        if remaining <= 0:
            return all_of(Answer("unknown", "timeout"))
        try:
            if len(ids) == 1:
                response = self.backend.request(
                    "GET", STATUS_PATH + quote(ids[0], safe=""), timeout=remaining
                )
            else:
                response = self.backend.request(
                    "POST", STATUS_PATH.rstrip("/"), json={"ids": ids}, timeout=remaining
                )
        except httpx.TimeoutException:
            return all_of(Answer("unknown", "timeout"))
        except httpx.HTTPError:
            return all_of(Answer("unknown", "backend_unreachable"))
        if len(ids) == 1 and response.status_code == 404:
            statuses: list[Any] = [None]
        elif response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                return all_of(Answer("unknown", "backend_error"))
            statuses = [body] if len(ids) == 1 else (body or {}).get("status")
            if not isinstance(statuses, list) or len(statuses) != len(ids):
                return all_of(Answer("unknown", "backend_error"))
        else:
            return all_of(Answer("unknown", "backend_error"))
        answers: dict[str, Answer] = {}
        for ident, status in zip(ids, statuses, strict=True):
            if status is None:
                answer = Answer("unknown", "unknown_person")
            elif isinstance(status, dict):
                answer = answer_from_status(status)
            else:
                answer = Answer("unknown", "backend_error")
            self._cache.put(ident, answer)
            answers[ident] = answer
        return answers

    def _check_hc1(self, code: str) -> Answer:
        if self.trust is None:
            return Answer("unknown", "no_trust_list")
        from mqtt_bridge import hcert

        result = hcert.verify_hc1(code, self.trust, int(time.time()))
        if result.ok:
            return Answer("pass", None)
        return Answer("fail", result.reason or "invalid")
