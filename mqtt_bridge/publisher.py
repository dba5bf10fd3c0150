"""Publish the operator-signed fleet documents (policy, trust list) as retained messages.

The bridge holds the operator's P-256 key (configured, never published) and
signs a document with mqtt_bridge.documents. Kiosks accept a document only
with a higher serial than the one they hold, so the serial must increase
across restarts, across a lost database, and across several bridge
instances: it is the larger of (last serial published here + 1) and the
current Unix time. Republishing an unchanged body that is still far from
expiry reuses the stored document, so restarts do not churn serials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric import ec

from mqtt_bridge.documents import DOCUMENT_KINDS, sign_document
from mqtt_bridge.spool import Spool

log = logging.getLogger("mqtt_bridge.publisher")

DEFAULT_VALIDITY_DAYS = 30.0


def topic_for(kind: str) -> str:
    """`fleet/policy` or `fleet/trust`."""
    return f"fleet/{kind}"


def load_body(path: Path) -> dict[str, Any]:
    """A document body from a JSON file; ValueError naming the file when it is not an object."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a JSON document body ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path}: the document body must be a JSON object")
    return body


def body_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def signed_document(
    spool: Spool,
    key: ec.EllipticCurvePrivateKey,
    kind: str,
    body: dict[str, Any],
    *,
    validity_days: float = DEFAULT_VALIDITY_DAYS,
    now: int | None = None,
    force: bool = False,
) -> tuple[str, int]:
    """(JWS text, serial) to publish for `body`; signs a new one unless the stored one fits."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"kind: must be one of {DOCUMENT_KINDS}")
    now = int(time.time()) if now is None else now
    validity = int(validity_days * 86400)
    digest = body_hash(body)
    previous = spool.document(kind)
    if previous is not None and not force:
        serial, prev_hash, expires, text = previous
        if prev_hash == digest and expires - now > validity // 2:
            return text, serial
    serial = max(previous[0] + 1 if previous else 1, now)
    text = sign_document(key, kind, serial, body, issued=now, expires=now + validity)
    spool.save_document(kind, serial, digest, now + validity, text)
    return text, serial


def publish_retained(client: mqtt.Client, kind: str, text: str, timeout: float = 10.0) -> None:
    """Publish on fleet/<kind>, QoS 1, retained; wait for the broker's PUBACK.

    Raises RuntimeError if the broker does not take it in time.
    """
    info = client.publish(topic_for(kind), text.encode(), qos=1, retain=True)
    info.wait_for_publish(timeout)
    if not info.is_published():
        raise RuntimeError(f"the broker did not accept fleet/{kind} within {timeout}s")
