"""Fleet load generator: many simulated kiosks publishing check-ins (and online checks).

    python -m simulator.fleetload --port 1883 --kiosks 1000 --per-kiosk 100 [--rate 5000]

A real kiosk runs the firmware; for a thousand of them we speak MQTT 3.1.1
directly from one asyncio loop (a few hundred bytes of state per kiosk instead
of a paho client and its thread each). Each simulated kiosk has its own
connection and logs in with its own account (username = device id), so the
broker's per-device ACL applies exactly as in the field; `account=` instead
multiplexes all device topics over a few connections of one privileged test
account, for brokers where a thousand accounts are impractical.

A kiosk's check-in is done when the broker's PUBACK arrives: from then on the
broker holds it (persistence on), whatever happens to the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

VENUE = "HCM-Q1-LOAD"


def kiosk_ids(n: int, prefix: str = "kiosk-load") -> list[str]:
    """`n` device ids: kiosk-load-0000, kiosk-load-0001, ..."""
    return [f"{prefix}-{i:04d}" for i in range(n)]


def kiosk_password(device: str, secret: str = "load") -> str:
    """The test password of a simulated kiosk (derived, so nothing has to be stored)."""
    return f"{secret}-{device}"


def checkin_payload(device: str, seq: int, ts: int = 1764090000) -> bytes:
    """A valid v1 check-in (protocol.md) for device/seq; the id is a fake CCCD number."""
    return json.dumps(
        {
            "v": 1,
            "device": device,
            "venue": VENUE,
            "gate": "A",
            "seq": seq,
            "ts": ts + seq,
            "type": "cccd",
            "id": f"0799{seq:08d}",
            "verdict": "pass",
            "how": "verified",
            "fw": "load",
        },
        separators=(",", ":"),
    ).encode()


# -- MQTT 3.1.1 packets (only what a kiosk sends and receives) ---------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, username: str, password: str, clean: bool = True) -> bytes:
    flags = 0x80 | 0x40 | (0x02 if clean else 0)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 0)
    body += _str(client_id) + _str(username) + _str(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 1, pid: int = 0) -> bytes:
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


def subscribe_packet(pid: int, topics: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(_str(t) + bytes([q]) for t, q in topics)
    return b"\x82" + _varint(len(body)) + body


class MqttError(RuntimeError):
    """The broker refused us or the connection broke."""


class RawClient:
    """A minimal asyncio MQTT 3.1.1 client: connect, QoS 1 publish with a window, subscribe."""

    def __init__(self, on_message: Callable[[str, bytes], None] | None = None) -> None:
        self.on_message = on_message
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._next_pid = 0
        self._connack: asyncio.Future[int] | None = None
        self._suback: asyncio.Future[bytes] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int, client_id: str, user: str, pw: str) -> None:
        reader, self.writer = await asyncio.open_connection(host, port)
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._reader_task = asyncio.create_task(self._read_loop(reader))
        self.writer.write(connect_packet(client_id, user, pw))
        rc = await asyncio.wait_for(self._connack, 30)
        if rc != 0:
            raise MqttError(f"CONNACK return code {rc} for {user}")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length) if length else b""
                kind = head[0] >> 4
                if kind == 4:  # PUBACK
                    fut = self._acks.pop(struct.unpack("!H", body[:2])[0], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                elif kind == 2 and self._connack is not None and not self._connack.done():
                    self._connack.set_result(body[1])
                elif kind == 9 and self._suback is not None and not self._suback.done():
                    self._suback.set_result(body[2:])
                elif kind == 3:
                    tlen = struct.unpack("!H", body[:2])[0]
                    topic = body[2 : 2 + tlen].decode()
                    qos = (head[0] >> 1) & 3
                    start = 2 + tlen + (2 if qos else 0)
                    if qos == 1 and self.writer is not None:
                        self.writer.write(b"\x40\x02" + body[2 + tlen : 4 + tlen])
                    if self.on_message is not None:
                        self.on_message(topic, body[start:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            err = MqttError("connection closed")
            for fut in self._acks.values():
                if not fut.done():
                    fut.set_exception(err)
            self._acks.clear()
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(err)

    def _pid(self) -> int:
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None] | None:
        """Queue a publish; for QoS 1 returns the future the PUBACK resolves."""
        assert self.writer is not None
        if qos == 0:
            self.writer.write(publish_packet(topic, payload, 0))
            return None
        pid = self._pid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[pid] = fut
        self.writer.write(publish_packet(topic, payload, 1, pid))
        return fut

    async def subscribe(self, topics: list[tuple[str, int]]) -> bytes:
        """Subscribe; returns the SUBACK return codes (0x80 = refused)."""
        assert self.writer is not None
        self._suback = asyncio.get_running_loop().create_future()
        self.writer.write(subscribe_packet(self._pid(), topics))
        return await asyncio.wait_for(self._suback, 30)

    async def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.write(b"\xe0\x00")  # DISCONNECT: no last will
                await self.writer.drain()
                self.writer.close()
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._reader_task is not None:
            self._reader_task.cancel()


@dataclass(frozen=True)
class LoadResult:
    """What a load run did: check-ins the broker acknowledged, and how long it took."""

    acked: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0


async def connect_kiosks(
    port: int,
    devices: list[str],
    password: Callable[[str], str] = kiosk_password,
    host: str = "127.0.0.1",
    on_message: Callable[[str, str, bytes], None] | None = None,
) -> dict[str, RawClient]:
    """One logged-in connection per device (at most 100 connecting at a time)."""
    clients: dict[str, RawClient] = {}
    gate = asyncio.Semaphore(100)

    async def one(device: str) -> None:
        handler = None
        if on_message is not None:
            handler = lambda topic, body, d=device: on_message(d, topic, body)  # noqa: E731
        client = RawClient(handler)
        async with gate:
            await client.connect(host, port, device, device, password(device))
        clients[device] = client

    await asyncio.gather(*(one(d) for d in devices))
    return clients


async def publish_checkins(
    port: int,
    devices: list[str],
    per_kiosk: int,
    *,
    password: Callable[[str], str] = kiosk_password,
    account: tuple[str, str] | None = None,
    connections: int = 8,
    rate: float = 0.0,
    first_seq: int = 1,
    window: int = 32,
    host: str = "127.0.0.1",
) -> LoadResult:
    """Publish `per_kiosk` check-ins (seq first_seq..) from every device, QoS 1.

    Per-kiosk connections by default; with `account=(user, password)` all topics go
    over `connections` connections of that account. `rate` > 0 spreads the run to
    about that many check-ins per second overall; 0 = as fast as the broker takes them.
    Returns when the broker has acknowledged every one.
    """
    if account is None:
        clients = await connect_kiosks(port, devices, password, host)
        lanes = [(clients[d], [d]) for d in devices]
    else:
        shared = []
        for i in range(connections):
            c = RawClient()
            await c.connect(host, port, f"fleetload-{i}", *account)
            shared.append(c)
        lanes = [(shared[i], devices[i::connections]) for i in range(connections)]
        clients = {f"fleetload-{i}": c for i, c in enumerate(shared)}
    started = time.perf_counter()
    total = len(devices) * per_kiosk
    # With a rate, message k (over all lanes) is due at started + k / rate.
    per_lane_interval = (len(lanes) / rate) if rate > 0 else 0.0

    async def lane(client: RawClient, lane_devices: list[str], offset: int) -> int:
        pending: list[asyncio.Future[None]] = []
        count = 0
        for seq in range(first_seq, first_seq + per_kiosk):
            for device in lane_devices:
                if per_lane_interval:
                    due = started + offset / rate + count * per_lane_interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                fut = client.publish(f"kiosk/{device}/checkin", checkin_payload(device, seq))
                assert fut is not None
                pending.append(fut)
                count += 1
                if len(pending) >= window:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
        return count

    try:
        counts = await asyncio.gather(*(lane(c, ds, i) for i, (c, ds) in enumerate(lanes)))
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    acked = sum(counts)
    assert acked == total
    return LoadResult(acked, time.perf_counter() - started)


def run_load(port: int, devices: list[str], per_kiosk: int, **kwargs: object) -> LoadResult:
    """publish_checkins() from synchronous code (its own event loop)."""
    return asyncio.run(publish_checkins(port, devices, per_kiosk, **kwargs))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.fleetload", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kiosks", type=int, default=1000)
    parser.add_argument("--per-kiosk", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="check-ins/s overall; 0 = max")
    parser.add_argument("--prefix", default="kiosk-load", help="device id prefix")
    parser.add_argument("--secret", default="load", help="kiosk passwords are <secret>-<device>")
    parser.add_argument("--first-seq", type=int, default=1)
    args = parser.parse_args(argv)
    devices = kiosk_ids(args.kiosks, args.prefix)
    result = run_load(
        args.port,
        devices,
        args.per_kiosk,
        password=lambda d: kiosk_password(d, args.secret),
        rate=args.rate,
        first_seq=args.first_seq,
        host=args.host,
    )
    print(
        f"{result.acked} check-ins acknowledged by the broker in {result.seconds:.1f}s"
        f" ({result.rate:.0f}/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
