"""City-backend emulator: the LGSP-style check-in API of docs/protocol.md, on SQLite.

    python -m simulator.backend --port 8080 --db backend.sqlite3 [--host 127.0.0.1]
        [--client-id ID]   # OAuth2 on: the secret comes from $BACKEND_CLIENT_SECRET

Besides the check-in API it serves the status API (`GET /api/v1/status/<id>`,
seeded with the demo's sample people), an OAuth2 client-credentials token
endpoint (`POST /oauth/token`; with --client-id every /api/v1 call needs a
bearer token) and a fault switch for tests (`POST /admin/faults`: fail with a
status code or answer late, on demand).

Idempotent the way the real service must be: check-ins are keyed on their
identity (device, seq), so storing one twice changes nothing, and a replayed
`Idempotency-Key` returns the response stored for it. A batch is all or
nothing: a 400 or 422 leaves the database exactly as it was. Check-ins are
validated with the bridge's own model (mqtt_bridge.schema), so there is one
definition of a valid check-in.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mqtt_bridge.schema import (
    CheckIn,
    DuplicateKeyError,
    NotJsonError,
    describe_validation_error,
    loads_strict,
)
from mqtt_bridge.spool import open_durable_db

log = logging.getLogger("simulator.backend")

MAX_BATCH = 1000
#: 1000 check-ins of at most 2 KiB each, plus the envelope.
MAX_BODY_BYTES = MAX_BATCH * 2048 + 1024
MAX_KEY_LENGTH = 200
DEFAULT_QUERY_LIMIT = 1000
MAX_QUERY_LIMIT = 100_000
#: Environment variable holding the OAuth2 client secret (never a command-line argument).
SECRET_ENV = "BACKEND_CLIENT_SECRET"

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    venue       TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    verdict     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX IF NOT EXISTS checkins_by_venue_time ON checkins (venue, ts);
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT PRIMARY KEY,
    response   TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


class BackendStore:
    """The emulator's database. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # A 200 promises the bridge it may forget the batch: make it true across a crash.
        self._db = open_durable_db(self.path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def store(self, records: list[CheckIn], key: str | None) -> tuple[dict[str, int], bool]:
        """Store a validated batch atomically; returns (response body, replayed?).

        With a key already seen, nothing is stored and the stored response is returned.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    row = self._db.execute(
                        "SELECT response FROM idempotency WHERE key = ?", (key,)
                    ).fetchone()
                    if row is not None:
                        self._db.execute("COMMIT")
                        return json.loads(row[0]), True
                stored = 0
                for r in records:
                    stored += self._db.execute(
                        "INSERT OR IGNORE INTO checkins"
                        " (device, seq, venue, ts, type, verdict, body, received_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.device, r.seq, r.venue, r.ts, r.type, r.verdict, r.to_json(), now),
                    ).rowcount
                response = {"stored": stored, "duplicates": len(records) - stored}
                if key is not None:
                    self._db.execute(
                        "INSERT INTO idempotency (key, response, created_at) VALUES (?, ?, ?)",
                        (key, json.dumps(response), now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return response, False

    def query(self, venue: str, since: int | None, until: int | None, limit: int) -> list[str]:
        """JSON bodies of the check-ins at `venue` with since <= ts <= until, oldest first."""
        sql = "SELECT body FROM checkins WHERE venue = ?"
        params: list[Any] = [venue]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since)
        if until is not None:
            sql += " AND ts <= ?"
            params.append(until)
        sql += " ORDER BY ts, device, seq LIMIT ?"
        params.append(limit)
        with self._lock:
            return [row[0] for row in self._db.execute(sql, params).fetchall()]

    def stats(self) -> dict[str, Any]:
        """Running totals: overall, by verdict, by type, by venue."""

        def grouped(column: str) -> dict[str, int]:
            # column is one of our own constant names, never user input.
            cur = self._db.execute(f"SELECT {column}, count(*) FROM checkins GROUP BY {column}")
            return {str(k): int(n) for k, n in cur.fetchall()}

        with self._lock:
            total = int(self._db.execute("SELECT count(*) FROM checkins").fetchone()[0])
            by_verdict = {"pass": 0, "fail": 0} | grouped("verdict")
            by_type = grouped("type")
            by_venue = grouped("venue")
        return {"total": total, "by_verdict": by_verdict, "by_type": by_type, "by_venue": by_venue}


# -- status API: sample people -------------------------------------------------------

#: The demo's kiosks draw their codes from SampleFactory(2021 + i); seeding the status
#: API from the same streams makes every code the demo shows resolve.
STATUS_SEED = 2021
STATUS_KIOSKS = 16
STATUS_SAMPLES_PER_KIOSK = 300
ID_MAX = 64
#: Most identifiers in one POST /api/v1/status.
MAX_STATUS_BATCH = 100


def sample_people(
    seed: int = STATUS_SEED, kiosks: int = STATUS_KIOSKS, per_kiosk: int = STATUS_SAMPLES_PER_KIOSK
) -> list[tuple[str, str]]:
    """(type, identifier) of every identity-only code in the demo's sample streams.

    Deterministic; the status API knows exactly these people. Bench and tests use it
    to pick identifiers that resolve.
    """
    from simulator import signers
    from simulator.codes import SampleFactory

    people: dict[str, str] = {}
    # Signing HC1 samples costs most of the time and none of the identities: the
    # signature draws from its own random stream, so skipping it changes nothing else.
    with _NO_HC1_SIGNING:
        real_sign, signers.sign_hc1 = signers.sign_hc1, lambda *a, **k: "HC1:"
        try:
            for i in range(kiosks):
                for sample in SampleFactory(seed + i).stream(per_kiosk, bad_ratio=0.2):
                    if sample.type in ("cccd", "pccovid") and sample.ident:
                        people.setdefault(sample.ident, sample.type)
        finally:
            signers.sign_hc1 = real_sign
    return [(t, ident) for ident, t in people.items()]


_NO_HC1_SIGNING = threading.Lock()


def person_status(identifier: str) -> dict[str, Any]:
    """The health state of a known person, derived from the identifier (stable per id).

    About 4 % in isolation, 4 % with a positive test, 4 % without a health
    declaration; the rest clear. Never echoes the identifier.
    """
    h = hashlib.sha256(identifier.encode()).digest()
    isolation = h[0] < 10
    test = "positive" if 10 <= h[0] < 20 else ("negative" if h[1] < 128 else "none")
    declaration = "missing" if 20 <= h[0] < 30 else "valid"
    vaccination = ("none", "partial", "full", "full")[h[2] % 4]
    return {
        "v": 1,
        "declaration": declaration,
        "test": test,
        "vaccination": vaccination,
        "isolation": isolation,
    }


class People:
    """The identifiers the status API knows, built on the first status request.

    Building them costs about a second of CPU (the sample streams sign HC1
    certificates too), which tests that never ask for a status should not pay.
    """

    def __init__(self) -> None:
        self._ids: set[str] | None = None
        self._lock = threading.Lock()

    def known(self, identifier: str) -> bool:
        """True if the status API has a record for `identifier`."""
        with self._lock:
            if self._ids is None:
                self._ids = {ident for _, ident in sample_people()}
        return identifier in self._ids


# -- OAuth2 client credentials and faults -----------------------------------------------


class Auth:
    """OAuth2 client-credentials tokens (RFC 6749 section 4.4), in memory."""

    def __init__(self, client_id: str | None, client_secret: str | None, ttl: int) -> None:
        self.client_id, self._secret, self.ttl = client_id, client_secret, ttl
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self.issued = 0

    @property
    def enabled(self) -> bool:
        return self.client_id is not None

    def check_client(self, client_id: str, secret: str) -> bool:
        """Constant-time comparison of the presented credentials."""
        ok_id = secrets.compare_digest(client_id.encode(), (self.client_id or "").encode())
        ok_secret = secrets.compare_digest(secret.encode(), (self._secret or "").encode())
        return ok_id and ok_secret

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.ttl
            self.issued += 1
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()


class Faults:
    """What the emulator does wrong on purpose: fail with `status`, or wait `delay` seconds."""

    SCOPES = ("checkins", "status", "all")

    def __init__(self) -> None:
        self.status: int | None = None
        self.delay = 0.0
        self.scope = "all"

    def applies(self, scope: str) -> bool:
        return self.scope in ("all", scope)

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "delay": self.delay, "scope": self.scope}


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return unquote(user), unquote(secret)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _int_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: must be an integer") from None


def create_app(
    db_path: Path | str,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_ttl: int = 3600,
) -> FastAPI:
    """The FastAPI application serving the API of docs/protocol.md from `db_path`.

    With `client_id` (and `client_secret`) every /api/v1 call needs a bearer token
    from `POST /oauth/token`; tokens live `token_ttl` seconds.
    """
    if client_id is not None and not client_secret:
        raise ValueError("client_secret: required with client_id")
    store = BackendStore(db_path)
    auth = Auth(client_id, client_secret, token_ttl)
    faults = Faults()
    people = People()

    async def guard(request: Request, scope: str) -> Response | None:
        """Injected faults first (they model the service being sick), then the token."""
        if faults.applies(scope):
            if faults.delay:
                await asyncio.sleep(faults.delay)
            if faults.status is not None:
                return _error(faults.status, "injected fault")
        if auth.enabled:
            header = request.headers.get("Authorization", "")
            if not (header.startswith("Bearer ") and auth.valid(header[7:])):
                return JSONResponse(
                    {"error": "invalid_token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
        return None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("city-backend emulator ready (db %s)", store.path)
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title="City backend emulator", version="1", lifespan=lifespan)
    app.state.store = store

    @app.post("/api/v1/checkins")
    async def post_checkins(request: Request) -> Response:
        """Store a batch of check-ins: 200, or 400/422 with nothing stored."""
        refused = await guard(request, "checkins")
        if refused is not None:
            return refused
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
            return _error(400, f"Idempotency-Key: must be 1-{MAX_KEY_LENGTH} characters")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(400, f"body: more than {MAX_BODY_BYTES} bytes")
        try:
            obj = loads_strict(body)
        except DuplicateKeyError:
            return _error(400, "body: duplicate key in a JSON object")
        except NotJsonError:
            return _error(400, "body: not UTF-8 JSON")
        if not isinstance(obj, dict) or set(obj) != {"checkins"}:
            return _error(400, 'body: must be {"checkins": [...]}')
        items = obj["checkins"]
        if not isinstance(items, list):
            return _error(400, "checkins: must be a list")
        if len(items) > MAX_BATCH:
            return _error(400, f"checkins: at most {MAX_BATCH} per batch")
        records: list[CheckIn] = []
        for index, item in enumerate(items):
            try:
                records.append(CheckIn.model_validate(item))
            except ValidationError as exc:
                # The detail names the field, never its value (it may be personal data).
                return _error(422, describe_validation_error(exc), index=index)
        response, replayed = await run_in_threadpool(store.store, records, key)
        log.debug("batch of %d: %s (replayed key: %s)", len(records), response, replayed)
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return JSONResponse(response, headers=headers)

    @app.get("/api/v1/checkins")
    async def get_checkins(request: Request) -> Response:
        """Check-ins at a venue, oldest first, optionally within [since, until]."""
        refused = await guard(request, "checkins")
        if refused is not None:
            return refused
        venue = request.query_params.get("venue")
        if not venue:
            return _error(400, "venue: required")
        try:
            since = _int_param(request, "since")
            until = _int_param(request, "until")
            limit = _int_param(request, "limit")
        except ValueError as exc:
            return _error(400, str(exc))
        if limit is None:
            limit = DEFAULT_QUERY_LIMIT
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            return _error(400, f"limit: must be 1-{MAX_QUERY_LIMIT}")
        bodies = await run_in_threadpool(store.query, venue, since, until, limit)
        # Spliced from the stored JSON: no parse/serialise round trip per check-in.
        return Response('{"checkins":[' + ",".join(bodies) + "]}", media_type="application/json")

    @app.get("/api/v1/stats")
    async def get_stats(request: Request) -> Response:
        """Running totals (only an "all" fault touches them: tests watch them through one)."""
        refused = await guard(request, "stats")
        if refused is not None:
            return refused
        return JSONResponse(await run_in_threadpool(store.stats))

    @app.get("/api/v1/status/{identifier}")
    async def get_status(identifier: str, request: Request) -> Response:
        """Health declaration / test / vaccination / isolation state of one person."""
        refused = await guard(request, "status")
        if refused is not None:
            return refused
        if not 1 <= len(identifier) <= ID_MAX:
            return _error(400, f"identifier: must be 1-{ID_MAX} characters")
        if not await run_in_threadpool(people.known, identifier):
            return _error(404, "unknown identifier")
        return JSONResponse(person_status(identifier))

    @app.post("/api/v1/status")
    async def post_status(request: Request) -> Response:
        """Several people at once: `{"ids": [...]}` -> `{"v":1,"status":[{...}|null, ...]}`."""
        refused = await guard(request, "status")
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "body: not JSON")
        ids = body.get("ids") if isinstance(body, dict) and set(body) == {"ids"} else None
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_STATUS_BATCH:
            return _error(400, f'body: {{"ids": [1-{MAX_STATUS_BATCH} identifiers]}}')
        if not all(isinstance(i, str) and 1 <= len(i) <= ID_MAX for i in ids):
            return _error(400, f"ids: each a string of 1-{ID_MAX} characters")
        known = await run_in_threadpool(lambda: [people.known(i) for i in ids])
        results = [person_status(i) if k else None for i, k in zip(ids, known, strict=True)]
        return JSONResponse({"v": 1, "status": results})

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        """OAuth2 client credentials grant; client_secret_basic or client_secret_post."""
        text = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(text).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        creds = _basic_credentials(request) or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if not auth.enabled or not auth.check_client(*creds):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse(
            {"access_token": auth.issue(), "token_type": "Bearer", "expires_in": auth.ttl},
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/admin/faults")
    def get_faults() -> dict[str, Any]:
        """The faults in force, and how many tokens were issued (tests look at it)."""
        return {**faults.describe(), "tokens_issued": auth.issued}

    @app.post("/admin/faults")
    async def set_faults(request: Request) -> Response:
        """Set `{"status": 503|null, "delay": seconds, "scope": "checkins"|"status"|"all"}`."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "body: not JSON")
        if not isinstance(body, dict) or set(body) - {"status", "delay", "scope"}:
            return _error(400, "body: keys status, delay, scope")
        status = body.get("status")
        delay = body.get("delay", 0)
        scope = body.get("scope", "all")
        if status is not None and (type(status) is not int or not 400 <= status <= 599):
            return _error(400, "status: an integer 400-599 or null")
        if type(delay) not in (int, float) or not 0 <= delay <= 60:
            return _error(400, "delay: seconds from 0 to 60")
        if scope not in Faults.SCOPES:
            return _error(400, "scope: one of checkins, status, all")
        faults.status, faults.delay, faults.scope = status, float(delay), scope
        log.warning("faults set: %s", faults.describe())
        return JSONResponse(faults.describe())

    @app.delete("/admin/faults")
    def clear_faults() -> dict[str, Any]:
        """Back to normal service."""
        faults.status, faults.delay, faults.scope = None, 0.0, "all"
        log.warning("faults cleared")
        return faults.describe()

    @app.post("/admin/revoke-tokens")
    def revoke_tokens() -> dict[str, bool]:
        """Forget every issued token: the next API call with one gets 401."""
        auth.revoke_all()
        return {"ok": True}

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        """Liveness."""
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground (SIGTERM/SIGINT stop it cleanly)."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator.backend", description="City-backend emulator (HTTP API v1)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s (loopback)")
    parser.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    parser.add_argument("--db", type=Path, default=Path("backend.sqlite3"))
    parser.add_argument(
        "--client-id",
        help=f"require OAuth2 client-credentials tokens for this client; the secret is read"
        f" from ${SECRET_ENV}",
    )
    parser.add_argument("--token-ttl", type=int, default=3600, help="seconds (default: 3600)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    parser.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    parser.add_argument(
        "--log-level", default="info", type=str.lower, choices=["debug", "info", "warning"]
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port out of range: {args.port}")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    secret = os.environ.get(SECRET_ENV) if args.client_id else None
    if args.client_id and not secret:
        parser.error(f"--client-id needs the secret in ${SECRET_ENV}")
    if args.token_ttl < 1:
        parser.error("--token-ttl must be >= 1")
    try:
        app = create_app(
            args.db, client_id=args.client_id, client_secret=secret, token_ttl=args.token_ttl
        )
    except sqlite3.Error as exc:
        print(f"backend: error: cannot open {args.db}: {exc}", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    scheme = "https" if args.tls_cert else "http"
    log.info("city-backend emulator listening on %s://%s:%d", scheme, args.host, args.port)
    # Access log off: one line per request is noise next to the bridge's own summaries.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level,
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
