"""A loopback TCP fault proxy: put it between a kiosk and the broker and break the path.

    proxy = FaultProxy(target_port=broker.port).start()   # listens on proxy.port
    proxy.drop()        # close every connection now (a Wi-Fi drop, a broker crash)
    proxy.refuse()      # new connections are refused (nothing listens)
    proxy.blackhole()   # connections are accepted but no byte moves (a dead NAT path)
    proxy.heal()        # back to normal forwarding
    proxy.flap(up_s=3, down_s=2, mode="drop")   # alternate on a schedule, in the background
    proxy.stop()

Everything runs in one background thread with a selector; only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

PASS = "pass"
REFUSE = "refuse"
BLACKHOLE = "blackhole"


class FaultProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port> unless told to fail."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.mode = PASS
        self.connections = 0  # accepted so far
        self.drops = 0
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drop_now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netfault", daemon=True)
        self._flapper: threading.Thread | None = None

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    # -- faults ----------------------------------------------------------------

    def drop(self) -> None:
        """Close every open connection (both sides see a reset/EOF)."""
        self._drop_now.set()

    def refuse(self) -> None:
        self.mode = REFUSE
        self.drop()

    def blackhole(self) -> None:
        """Keep connections open but move no bytes; new ones are accepted and stall."""
        self.mode = BLACKHOLE

    def heal(self) -> None:
        self.mode = PASS

    def flap(self, up_s: float, down_s: float, mode: str = "drop",
             duration_s: float | None = None) -> None:
        """Alternate up_s of normal service and down_s of `mode` (drop, refuse,
        blackhole) in the background, until stop() or duration_s."""
        end = None if duration_s is None else time.monotonic() + duration_s

        def run() -> None:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                self.heal()
                if self._stop.wait(up_s):
                    break
                if mode == BLACKHOLE:
                    self.blackhole()
                elif mode == REFUSE:
                    self.refuse()
                else:
                    self.refuse()  # down: the connection drops and no new one gets through
                self.drops += 1
                if self._stop.wait(down_s):
                    break
            self.heal()

        self._flapper = threading.Thread(target=run, name="netfault-flap", daemon=True)
        self._flapper.start()

    def wait_flapping_done(self, timeout: float) -> None:
        if self._flapper is not None:
            self._flapper.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._flapper is not None:
            self._flapper.join(5)
        self._close_all()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the forwarding loop -------------------------------------------------------

    def _close_all(self) -> None:
        with self._lock:
            socks = list(self._pairs)
            self._pairs.clear()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        registered: set[socket.socket] = set()
        while not self._stop.is_set():
            if self._drop_now.is_set():
                self._drop_now.clear()
                for s in list(registered):
                    sel.unregister(s)
                registered.clear()
                self._close_all()
            # Sockets whose bytes may move now.
            want = set(self._pairs) if self.mode == PASS else set()
            for s in registered - want:
                sel.unregister(s)
            for s in want - registered:
                sel.register(s, selectors.EVENT_READ)
            registered = want
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                    continue
                assert isinstance(sock, socket.socket)
                self._forward(sock, sel, registered)
        sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self.mode == REFUSE:
            # Closing at once with a reset is what a peer with nothing listening does.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        self.connections += 1
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _forward(self, sock: socket.socket, sel: selectors.BaseSelector,
                 registered: set[socket.socket]) -> None:
        peer = self._pairs.get(sock)
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data and peer is not None:
            try:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
                return
            except OSError:
                pass
        # EOF or error on one side: close the pair.
        for s in (sock, peer):
            if s is None:
                continue
            if s in registered:
                sel.unregister(s)
                registered.discard(s)
            with self._lock:
                self._pairs.pop(s, None)
            with contextlib.suppress(OSError):
                s.close()
