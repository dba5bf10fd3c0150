"""The city-backend emulator over real HTTP (a `python -m simulator.backend` subprocess).

Contract: docs/protocol.md, "City backend HTTP API". Every check is against
the running service; the state is its SQLite file on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_services import (
    DEVICE_A,
    DEVICE_B,
    backend_checkins,
    backend_stats,
    http,
    make_checkin,
    person_id,
    post_batch,
)

from simulator.stack import ServiceProcess, start_backend

pytestmark = pytest.mark.timeout(60)


def test_store_query_and_survive_restart(backend: ServiceProcess, tmp_path: Path) -> None:
    batch = [make_checkin(DEVICE_A, seq) for seq in (1, 2, 3)]
    response = post_batch(backend.url, batch)
    assert response.status_code == 200
    assert response.json() == {"stored": 3, "duplicates": 0}
    # Returned exactly as sent, oldest first.
    assert backend_checkins(backend.url) == batch
    assert http.get(f"{backend.url}/healthz").json() == {"ok": True}

    # Durable: a restarted backend on the same folder still holds them.
    backend.stop()
    again = start_backend(tmp_path / "backend", port=backend.port)
    try:
        assert backend_checkins(again.url) == batch
    finally:
        again.stop()


def test_duplicate_identity_is_counted_and_changes_nothing(backend: ServiceProcess) -> None:
    original = make_checkin(DEVICE_A, 7)
    assert post_batch(backend.url, [original]).json() == {"stored": 1, "duplicates": 0}

    # Same identity (device, seq) with other content, plus one new record.
    altered = make_checkin(DEVICE_A, 7, verdict="fail", gate="B")
    fresh = make_checkin(DEVICE_B, 7)
    response = post_batch(backend.url, [altered, fresh])
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 1}
    assert backend_checkins(backend.url) == [original, fresh]  # the first write wins
    assert backend_stats(backend.url)["total"] == 2


def test_replayed_idempotency_key_returns_the_stored_response(backend: ServiceProcess) -> None:
    batch = [make_checkin(DEVICE_A, seq) for seq in (1, 2)]
    first = post_batch(backend.url, batch, key="batch-key-1")
    assert first.json() == {"stored": 2, "duplicates": 0}

    # A retried request (same key) gets the very same answer, not "2 duplicates".
    replay = post_batch(backend.url, batch, key="batch-key-1")
    assert replay.status_code == 200
    assert replay.json() == {"stored": 2, "duplicates": 0}
    assert replay.headers.get("Idempotent-Replayed") == "true"

    # Without the key, identity deduplication still holds.
    other = post_batch(backend.url, batch, key="batch-key-2")
    assert other.json() == {"stored": 0, "duplicates": 2}
    assert backend_stats(backend.url)["total"] == 2


def _raw_post(url: str, body: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return http.post(f"{url}/api/v1/checkins", content=body, headers=headers)


def test_malformed_bodies_get_400_and_store_nothing(backend: ServiceProcess) -> None:
    seed = make_checkin(DEVICE_A, 1)
    assert post_batch(backend.url, [seed]).status_code == 200
    valid = make_checkin(DEVICE_A, 2)

    cases: dict[str, bytes] = {
        "not json": b"{checkins: nope",
        "not utf-8": b'{"checkins": ["\xff"]}',
        "NaN": b'{"checkins": [], "x": NaN}',
        "array": json.dumps([valid]).encode(),
        "checkins not a list": json.dumps({"checkins": valid}).encode(),
        "missing checkins": json.dumps({"items": [valid]}).encode(),
        "extra key": json.dumps({"checkins": [valid], "more": 1}).encode(),
        "duplicate key": b'{"checkins": [], "checkins": []}',
        "too many": json.dumps({"checkins": [valid] * 1001}).encode(),
    }
    for name, body in cases.items():
        response = _raw_post(backend.url, body, key="reused-key")
        assert response.status_code == 400, name
        assert isinstance(response.json().get("error"), str), name
    too_long_key = _raw_post(backend.url, json.dumps({"checkins": [valid]}).encode(), "k" * 201)
    assert too_long_key.status_code == 400

    assert backend_checkins(backend.url) == [seed]
    # An error response is not remembered under its key: the key still works.
    assert post_batch(backend.url, [valid], key="reused-key").json() == {
        "stored": 1,
        "duplicates": 0,
    }


INVALID_CHANGES: list[tuple[dict[str, Any], str]] = [
    ({"verdict": "maybe"}, "verdict: must be 'pass' or 'fail'"),
    ({"seq": True}, "seq: must be"),
    ({"seq": 0}, "seq: must be"),
    ({"seq": 2**63}, "seq: must be"),
    ({"ts": "1764090000"}, "ts: must be"),
    ({"ts": 1764090000.0}, "ts: must be"),
    ({"device": "Kiosk_1"}, "device: must be"),
    ({"venue": "HCM Q1"}, "venue: must be"),
    ({"gate": "g" * 17}, "gate: must be"),
    ({"type": "passport"}, "type: must be"),
    ({"id": ""}, "id: must be"),
    ({"id": "9" * 65}, "id: must be"),
    ({"how": None}, "how: must be"),
    ({"fw": "x" * 33}, "fw: must be"),
    ({"extra": 1}, "extra: unexpected key"),
    ({"v": 2}, "v: must be 1"),
    ({"v": True}, "v: must be 1"),
]


def test_invalid_checkin_gets_422_with_index_and_stores_nothing(backend: ServiceProcess) -> None:
    for change, detail in INVALID_CHANGES:
        bad = {**make_checkin(DEVICE_A, 3), **change}
        batch = [make_checkin(DEVICE_A, 1), make_checkin(DEVICE_A, 2), bad]
        response = post_batch(backend.url, batch, key="k-422")
        assert response.status_code == 422, change
        body = response.json()
        assert body["index"] == 2, change
        assert body["error"].startswith(detail), (change, body)
        assert person_id(3) not in response.text  # never echo personal data
    assert backend_stats(backend.url)["total"] == 0  # all or nothing

    # Not an object at all, and a missing field.
    response = post_batch(backend.url, [make_checkin(DEVICE_A, 1), "079201001234"])  # type: ignore[list-item]
    assert response.status_code == 422
    assert response.json()["index"] == 1
    assert "079201001234" not in response.text
    missing = make_checkin(DEVICE_A, 1)
    del missing["id"]
    response = post_batch(backend.url, [missing])
    assert response.status_code == 422
    assert response.json() == {"error": "id: required", "index": 0}
    assert backend_stats(backend.url)["total"] == 0


def test_query_by_venue_and_time_window(backend: ServiceProcess) -> None:
    at_x = [make_checkin(DEVICE_A, seq, venue="VENUE-X", ts=1000 + seq) for seq in range(1, 11)]
    at_y = [make_checkin(DEVICE_B, seq, venue="VENUE-Y", ts=1000 + seq) for seq in range(1, 4)]
    # Sent newest first: the answer must still be oldest first.
    assert post_batch(backend.url, list(reversed(at_x)) + at_y).status_code == 200

    assert backend_checkins(backend.url, "VENUE-X") == at_x
    assert backend_checkins(backend.url, "VENUE-Y") == at_y
    # since and until are inclusive bounds on ts.
    assert backend_checkins(backend.url, "VENUE-X", since=1003, until=1005) == at_x[2:5]
    assert backend_checkins(backend.url, "VENUE-X", since=1009) == at_x[8:]
    assert backend_checkins(backend.url, "VENUE-X", until=1001) == at_x[:1]
    assert backend_checkins(backend.url, "VENUE-X", limit=4) == at_x[:4]
    assert backend_checkins(backend.url, "NOWHERE") == []

    bad_queries: list[dict[str, str | int]] = [
        {},
        {"venue": "VENUE-X", "since": "yesterday"},
        {"venue": "VENUE-X", "limit": 0},
    ]
    for params in bad_queries:
        response = http.get(f"{backend.url}/api/v1/checkins", params=params)
        assert response.status_code == 400, params


def test_stats_running_totals(backend: ServiceProcess) -> None:
    assert backend_stats(backend.url) == {
        "total": 0,
        "by_verdict": {"pass": 0, "fail": 0},
        "by_type": {},
        "by_venue": {},
    }
    batch = [
        make_checkin(DEVICE_A, 1, verdict="pass", type="cccd", venue="V1"),
        make_checkin(DEVICE_A, 2, verdict="fail", type="hc1", venue="V1"),
        make_checkin(DEVICE_B, 1, verdict="pass", type="pccovid", venue="V2"),
        make_checkin(DEVICE_B, 2, verdict="pass", type="cccd", venue="V2"),
    ]
    post_batch(backend.url, batch)
    post_batch(backend.url, batch[:2])  # duplicates do not count twice
    assert backend_stats(backend.url) == {
        "total": 4,
        "by_verdict": {"pass": 3, "fail": 1},
        "by_type": {"cccd": 2, "hc1": 1, "pccovid": 1},
        "by_venue": {"V1": 2, "V2": 2},
    }


# -- status API, OAuth2 tokens, fault switch ------------------------------------------


def test_status_api_knows_the_demo_people(backend: ServiceProcess) -> None:
    from simulator.backend import person_status, sample_people

    people = sample_people()
    assert len(people) > 1000 and {t for t, _ in people} == {"cccd", "pccovid"}
    for _, ident in people[:20]:
        response = http.get(f"{backend.url}/api/v1/status/{ident}")
        assert response.status_code == 200
        body = response.json()
        assert body == person_status(ident)
        assert set(body) == {"v", "declaration", "test", "vaccination", "isolation"}
        assert ident not in response.text  # the answer never echoes the identifier
    # Some people are in isolation, some tested positive: the online check has work to do.
    states = [person_status(i) for _, i in people]
    assert any(s["isolation"] for s in states) and any(s["test"] == "positive" for s in states)
    assert http.get(f"{backend.url}/api/v1/status/000000000000").status_code == 404
    assert http.get(f"{backend.url}/api/v1/status/{'9' * 65}").status_code == 400


def test_fault_switch_fails_and_slows_on_demand(backend: ServiceProcess) -> None:
    url = backend.url
    batch = [make_checkin(DEVICE_A, 1)]
    assert (
        http.post(f"{url}/admin/faults", json={"status": 503, "scope": "checkins"}).status_code
        == 200
    )
    assert post_batch(url, batch).status_code == 503
    assert http.get(f"{url}/api/v1/status/000000000000").status_code == 404  # other scope
    assert (
        http.post(f"{url}/admin/faults", json={"delay": 0.3, "scope": "status"}).status_code == 200
    )
    response = http.get(f"{url}/api/v1/status/000000000000")
    assert response.status_code == 404 and response.elapsed.total_seconds() >= 0.3
    for bad in ({"status": 200}, {"delay": -1}, {"scope": "everything"}, {"other": 1}, [1]):
        assert http.post(f"{url}/admin/faults", json=bad).status_code == 400, bad
    assert http.get(f"{url}/admin/faults").json()["scope"] == "status"  # unchanged by bad input
    assert http.delete(f"{url}/admin/faults").status_code == 200
    assert post_batch(url, batch).json() == {"stored": 1, "duplicates": 0}


def test_oauth2_client_credentials_guard_the_api(tmp_path: Path) -> None:
    service = start_backend(
        tmp_path / "b", client_id="bridge", client_secret="s3cret", token_ttl=60
    )
    try:
        url = service.url
        batch = [make_checkin(DEVICE_A, 1)]
        assert post_batch(url, batch).status_code == 401  # no token
        assert http.get(f"{url}/api/v1/status/x").status_code == 401
        wrong = http.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("bridge", "no")
        )
        assert wrong.status_code == 401 and wrong.json() == {"error": "invalid_client"}
        grant = http.post(
            f"{url}/oauth/token", data={"grant_type": "password"}, auth=("bridge", "s3cret")
        )
        assert grant.status_code == 400
        token = http.post(
            f"{url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "bridge",
                "client_secret": "s3cret",
            },
        ).json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 60
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        response = http.post(f"{url}/api/v1/checkins", json={"checkins": batch}, headers=bearer)
        assert response.json() == {"stored": 1, "duplicates": 0}
        assert http.post(f"{url}/admin/revoke-tokens").status_code == 200
        revoked = http.get(f"{url}/api/v1/stats", headers=bearer)
        assert revoked.status_code == 401 and "invalid_token" in revoked.headers["WWW-Authenticate"]
    finally:
        service.stop()


def test_status_batch_lookup(backend: ServiceProcess) -> None:
    from simulator.backend import person_status, sample_people

    known = [ident for _, ident in sample_people()[:3]]
    response = http.post(f"{backend.url}/api/v1/status", json={"ids": [*known, "000000000000"]})
    assert response.status_code == 200
    assert response.json() == {"v": 1, "status": [*(person_status(i) for i in known), None]}
    for bad in ({"ids": []}, {"ids": ["x"] * 101}, {"ids": [1]}, {"ids": ["9" * 65]}, {"x": 1}):
        assert http.post(f"{backend.url}/api/v1/status", json=bad).status_code == 400, bad
