"""Kiosk acknowledgements from a second process, so they cost the ingest process nothing.

Publishing `kiosk/<device>/ack` is half of the bridge's MQTT packet work (the
PUBLISH and the broker's PUBACK for it), and paho-mqtt's packet handling is
pure Python: done in the ingest process it takes about 40 % of the check-in
rate (measured: 5,900/s with, 8,200/s without). So the spool writer hands the
committed `(device, seqs)` to this child process over a pipe, one line per
device, and the child publishes them on its own MQTT connection, on the other
core.

An ack is a courtesy that lets a kiosk free its journal early: it is sent only
after the spool commit, and if one is lost (the child restarting, a crash) the
kiosk resends the check-in after its timeout and gets the ack for the
duplicate. The child exits when its stdin closes, so it never outlives the
bridge, however the bridge dies.

    python -m mqtt_bridge.acker <host> <port> <username> <client_id>   (password in env)
    stdin: "<device> <seq>,<seq>,...\\n" per acknowledgement
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from mqtt_bridge.config import PASSWORD_ENV
from mqtt_bridge.schema import PROTOCOL_VERSION, is_device_id

log = logging.getLogger("mqtt_bridge.acker")


def tcp_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open: send each packet at once. paho writes packet by
    packet; with Nagle on, a PUBACK or ack written while the previous packet is
    unacknowledged waits for the broker's delayed ACK (~40 ms on Linux)."""
    if isinstance(sock, socket.socket):  # a TLS socket is one too; websockets are not
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def ack_body(seqs: list[int]) -> str:
    """The acknowledgement payload of docs/protocol.md, `{"v":1,"seq":[...]}`."""
    return f'{{"v":{PROTOCOL_VERSION},"seq":[{",".join(map(str, seqs))}]}}'


class AckPublisher:
    """The parent's side: starts the child, feeds it, restarts it if it dies."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str):
        self._args = [
            sys.executable,
            "-m",
            "mqtt_bridge.acker",
            host,
            str(port),
            username,
            f"{client_id}-acks",
        ]
        self._env = {**os.environ, PASSWORD_ENV: password}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self._args, stdin=subprocess.PIPE, env=self._env)
        self._proc = proc
        return proc

    def send(self, acks: dict[str, set[int]]) -> bool:
        """Queue acks for publishing; False if the child is gone (the caller publishes)."""
        data = "".join(f"{d} {','.join(map(str, sorted(s)))}\n" for d, s in acks.items())
        with self._lock:
            proc = self._proc if self._proc and self._proc.poll() is None else None
            if proc is None:
                if self._proc is not None:
                    log.warning("ack process exited (%s); starting it again", self._proc.returncode)
                proc = self._start()
            assert proc.stdin is not None
            try:
                proc.stdin.write(data.encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe: the child publishes what it has, disconnects and exits."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    """The child: connect, then publish one ack per stdin line until EOF."""
    # A SIGTERM/SIGINT to the bridge's process group is the bridge's to handle: it
    # drains, then closes our stdin, and we leave after publishing what it sent.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port, username, client_id = argv
    connected = threading.Event()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, os.environ.get(PASSWORD_ENV, ""))
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and connected.set()
    client.on_socket_open = tcp_nodelay
    client.connect_async(host, int(port), keepalive=30)
    client.loop_start()
    last: mqtt.MQTTMessageInfo | None = None
    try:
        # No waiting for the broker before reading: stdin's EOF must always be seen
        # (it is how the bridge's death reaches us). paho queues QoS 1 publishes made
        # while disconnected and sends them once connected.
        for line in sys.stdin.buffer:
            device, _, seqs = line.decode("ascii", "replace").strip().partition(" ")
            if not is_device_id(device):
                continue
            try:
                numbers = [int(x) for x in seqs.split(",")]
            except ValueError:
                continue
            last = client.publish(f"kiosk/{device}/ack", ack_body(numbers), qos=1)
        if last is not None and connected.is_set():
            with contextlib.suppress(RuntimeError, ValueError):
                last.wait_for_publish(5)  # stdin closed: send what is queued, then leave
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
