"""City-backend emulator: the LGSP-style check-in API of docs/protocol.md, on SQLite.

    python -m simulator.backend --port 8080 --db backend.sqlite3 [--host 127.0.0.1]

Idempotent the way the real service must be: check-ins are keyed on their
identity (device, seq), so storing one twice changes nothing, and a replayed
`Idempotency-Key` returns the response stored for it. A batch is all or
nothing: a 400 or 422 leaves the database exactly as it was. Check-ins are
validated with the bridge's own model (mqtt_bridge.schema), so there is one
definition of a valid check-in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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


def create_app(db_path: Path | str) -> FastAPI:
    """The FastAPI application serving the API of docs/protocol.md from `db_path`."""
    store = BackendStore(db_path)

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
    def get_checkins(request: Request) -> Response:
        """Check-ins at a venue, oldest first, optionally within [since, until]."""
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
        bodies = store.query(venue, since, until, limit)
        # Spliced from the stored JSON: no parse/serialise round trip per check-in.
        return Response('{"checkins":[' + ",".join(bodies) + "]}", media_type="application/json")

    @app.get("/api/v1/stats")
    def get_stats() -> dict[str, Any]:
        """Running totals."""
        return store.stats()

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
        "--log-level", default="info", type=str.lower, choices=["debug", "info", "warning"]
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port out of range: {args.port}")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app(args.db)
    except sqlite3.Error as exc:
        print(f"backend: error: cannot open {args.db}: {exc}", file=sys.stderr)
        return 2
    log.info("city-backend emulator listening on http://%s:%d", args.host, args.port)
    # Access log off: one line per request is noise next to the bridge's own summaries.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
