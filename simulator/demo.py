"""`kiosk-sim demo`: the whole system on this machine, live.

Starts a real Mosquitto (project config, loopback), the city-backend
emulator, the bridge and three virtual kiosks (the real firmware on the
MicroPython unix port), then keeps showing sample codes of every kind to the
kiosks' scanners (some garbage included) and displays, live, what each kiosk
shows and what the backend has received. Ctrl-C (or --duration) stops every
process it started.

The kiosks decide for real: the bridge signs the city's policy (the
firmware's built-in default) and the trust list of the samples' TEST ONLY
certificate signers with the TEST ONLY operator key and publishes them
retained; the kiosks pin that key, verify HC1 certificates themselves and ask
the bridge about identity codes (answered from the emulator's status API).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import serial
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mqtt_bridge.documents import save_private_key
from simulator import codes as sample_codes
from simulator.broker import BRIDGE_USER, Broker
from simulator.codes import SampleFactory
from simulator.kiosk import FIRMWARE_DIR, VirtualKiosk, kiosk_config
from simulator.stack import ServiceProcess, start_backend, start_bridge

# (device id, venue location code, gate): an office, a shop and a bus.
DEMO_KIOSKS = [
    ("kiosk-q1-0001", "HCM-Q1-000123", "CONG-A"),
    ("kiosk-q3-0002", "HCM-Q3-004567", "CONG-B"),
    ("kiosk-bus-0093", "HCM-BUS-93", "XE-01"),
]

LED_STYLE = {"green": "bold white on green", "red": "bold white on red",
             "amber": "bold black on dark_orange", "blue": "white on blue", "off": "white"}


def default_policy_body() -> dict[str, Any]:
    """The firmware's built-in policy (firmware/kiosk/policycheck.py DEFAULT_BODY),
    read from the firmware itself so the demo publishes exactly what kiosks default to."""
    added = str(FIRMWARE_DIR) not in sys.path
    if added:
        sys.path.insert(0, str(FIRMWARE_DIR))
    try:
        module = importlib.import_module("kiosk.policycheck")
    finally:
        if added:
            sys.path.remove(str(FIRMWARE_DIR))
    body: dict[str, Any] = module.DEFAULT_BODY
    return body


def write_operator_files(folder: Path) -> list[str]:
    """The TEST ONLY operator key, the policy and the samples' trust list, as files
    for the bridge; returns the bridge's options that publish them."""
    folder.mkdir(parents=True, exist_ok=True)
    save_private_key(sample_codes.test_pki().operator_key, folder / "operator.pem")
    (folder / "policy.json").write_text(json.dumps(default_policy_body()))
    (folder / "trust.json").write_text(json.dumps(SampleFactory.trust_body()))
    return ["--operator-key", str(folder / "operator.pem"), "--policy",
            str(folder / "policy.json"), "--trust", str(folder / "trust.json")]


def wait_for_documents(kiosk: VirtualKiosk, timeout: float = 15.0) -> None:
    """Until the kiosk has verified the policy and trust list the bridge published."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        console = kiosk.console()
        if all(re.search(rf"{kind} document \d+ in use", console) for kind in ("policy", "trust")):
            return
        time.sleep(0.05)
    raise TimeoutError(f"kiosk {kiosk.device} did not take the signed documents:\n"
                       f"{kiosk.console()[-2000:]}")


@dataclass
class KioskFeed:
    """One kiosk, its scanner feeder thread and what it has shown."""

    kiosk: VirtualKiosk
    factory: SampleFactory
    scanned: int = 0
    seen: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"green": 0, "red": 0, "amber": 0})


class Demo:
    def __init__(self, state_dir: Path, seed: int = 2021, interval: float = 1.2) -> None:
        self.state_dir = state_dir
        self.seed = seed
        self.interval = interval
        self.stop_event = threading.Event()
        self.broker: Broker | None = None
        self.backend: ServiceProcess | None = None
        self.bridge: ServiceProcess | None = None
        self.feeds: list[KioskFeed] = []
        self.threads: list[threading.Thread] = []
        self.recent: list[tuple[str, str, dict[str, Any]]] = []

    # -- lifecycle -----------------------------------------------------------

    def start(self, say: Any = print) -> None:
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        for sub in ("broker", "backend", "bridge"):
            (self.state_dir / sub).mkdir(parents=True)
        bridge_password = secrets.token_urlsafe(16)
        self.broker = Broker(self.state_dir / "broker")
        self.broker.add_account(BRIDGE_USER, bridge_password)
        passwords = {dev: secrets.token_urlsafe(16) for dev, _, _ in DEMO_KIOSKS}
        for dev, pw in passwords.items():
            self.broker.add_account(dev, pw)
        self.broker.start()
        say(f"broker    Mosquitto on 127.0.0.1:{self.broker.port} (simulator/mosquitto.conf)")
        self.backend = start_backend(self.state_dir / "backend")
        say(f"backend   city-backend emulator on {self.backend.url}")
        # The emulator builds its people on the first status request (seconds of
        # CPU): start that now. Until it is done the bridge answers "unknown" and
        # kiosks apply their offline rule (admitted, flagged) - as in the field.
        threading.Thread(target=self._warm_up, args=(self.backend.url,), daemon=True).start()
        documents = write_operator_files(self.state_dir / "operator")
        self.bridge = start_bridge(self.state_dir / "bridge", self.broker.port, bridge_password,
                                   self.backend.url, documents)
        say(f"bridge    kiosk-bridge subscribed, spool in {self.state_dir / 'bridge'}")
        for i, (dev, venue, gate) in enumerate(DEMO_KIOSKS):
            cfg = kiosk_config(dev, venue, gate, self.broker.port, passwords[dev],
                               operator_key=SampleFactory.operator_key_b64())
            kiosk = VirtualKiosk(self.state_dir / dev, cfg).start()
            kiosk.wait_ready()
            wait_for_documents(kiosk)
            assert kiosk.scanner is not None
            say(f"kiosk     {dev} at {venue}/{gate}: firmware on MicroPython, "
                f"scanner on {kiosk.scanner.port}")
            self.feeds.append(KioskFeed(kiosk, SampleFactory(self.seed + i)))
        for feed in self.feeds:
            t = threading.Thread(target=self._feed, args=(feed,), daemon=True)
            t.start()
            self.threads.append(t)

    @staticmethod
    def _warm_up(url: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url + "/api/v1/status/warm-up", timeout=60)

    def _feed(self, feed: KioskFeed) -> None:
        rng = random.Random(feed.kiosk.device)
        while not self.stop_event.wait(rng.uniform(0.4, 2.0) * self.interval):
            sample = feed.factory.stream(1, bad_ratio=0.2)[0]
            scanner = feed.kiosk.scanner
            if scanner is None:
                return
            try:
                if sample.terminated:
                    scanner.scan(sample.payload)
                else:
                    scanner.write_raw(sample.payload)
            except (OSError, serial.SerialException):
                return  # the kiosk is being stopped: its serial line is gone
            feed.scanned += 1

    def stop(self, say: Callable[[str], object] = print) -> None:
        """Stop everything started, all at once (so the slowest process bounds the
        time taken, not the sum), each regardless of the others failing."""
        self.stop_event.set()
        steps: dict[str, Callable[[], object]] = {
            feed.kiosk.device: feed.kiosk.stop for feed in self.feeds}
        for name, service in (("bridge", self.bridge), ("backend", self.backend)):
            if service is not None:
                steps[name] = service.stop
        if self.broker is not None:
            steps["broker"] = self.broker.stop

        def timed(step: Callable[[], object]) -> float:
            t0 = time.monotonic()
            step()
            return time.monotonic() - t0

        with ThreadPoolExecutor(max_workers=len(steps) or 1) as pool:
            futures = {name: pool.submit(timed, step) for name, step in steps.items()}
        for name, future in futures.items():
            try:
                took = future.result()
                if took > 3:
                    say(f"({name} took {took:.1f} s to stop)")
            except Exception as e:  # report and go on: the others were stopped anyway
                say(f"stopping {name} failed: {e}")
        for t in self.threads:
            t.join(timeout=2)

    # -- observing -----------------------------------------------------------

    def poll(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Collect what the kiosks showed since the last call; returns the new answers."""
        new = []
        for feed in self.feeds:
            for e in feed.kiosk.display.poll():
                if not e.get("buzz"):
                    continue
                feed.seen += 1
                feed.counts[e["led"]] = feed.counts.get(e["led"], 0) + 1
                new.append((time.strftime("%H:%M:%S"), feed.kiosk.device, e))
        self.recent.extend(new)
        del self.recent[:-10]
        return new

    def backend_stats(self, http: httpx.Client) -> dict[str, Any]:
        assert self.backend is not None
        try:
            return dict(http.get(self.backend.url + "/api/v1/stats").json())
        except (httpx.HTTPError, ValueError):  # down, or not answering JSON: no figures
            return {}

    # -- rendering -----------------------------------------------------------

    def render(self, stats: dict[str, Any]) -> Group:
        kiosks = Table.grid(padding=(0, 2))
        panels = []
        for feed in self.feeds:
            shown = feed.kiosk.display.events[-1] if feed.kiosk.display.events else None
            lines = shown["lines"] if shown else ["", ""]
            style = LED_STYLE.get(shown["led"] if shown else "off", "white")
            lcd = Text("\n".join(lines), style=style)
            c = feed.counts
            body = Group(lcd, Text(f"scans {feed.seen}  pass {c.get('green', 0)}  "
                                   f"refused {c.get('red', 0)}  unreadable {c.get('amber', 0)}",
                                   style="dim"))
            title = f"{feed.kiosk.device}  {feed.kiosk.config['venue']}/{feed.kiosk.config['gate']}"
            panels.append(Panel(body, title=title, width=40))
        kiosks.add_row(*panels)

        totals = Table(title="city backend (emulator)", show_header=True, expand=False)
        totals.add_column("check-ins")
        totals.add_column("by type")
        totals.add_column("by venue")
        by_type = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("by_type", {}).items()))
        by_venue = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("by_venue", {}).items()))
        totals.add_row(str(stats.get("total", "?")), by_type, by_venue)

        log = Table(title="latest answers", show_header=False, box=None)
        for when, dev, e in reversed(self.recent):
            log.add_row(when, dev, Text(" " + e["led"] + " ", style=LED_STYLE[e["led"]]),
                        " | ".join(line.rstrip() for line in e["lines"]))
        return Group(kiosks, totals, log, Text("Ctrl-C stops everything.", style="dim"))

    @staticmethod
    def plain_line(when: str, device: str, shown: dict[str, Any]) -> str:
        lcd = " | ".join(line.rstrip() for line in shown["lines"])
        return f"{when} {device:15} {shown['led']:6} {lcd}"


def _note(text: str) -> None:
    """A remark on stderr that never fails (the terminal may be gone)."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(state_dir: Path, duration: float | None = None, plain: bool = False,
             seed: int = 2021, interval: float = 1.2) -> int:
    """Run the demo until Ctrl-C / SIGTERM or `duration` seconds; returns an exit code."""
    console = Console()
    plain = plain or not console.is_terminal
    # Ctrl-C, `kill` and a closed terminal all stop the demo the same clean way.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    demo = Demo(state_dir.resolve(), seed=seed, interval=interval)
    deadline = None
    total = 0
    try:
        console.print("[bold]Starting the QR check-in kiosk demo[/bold]")
        demo.start(say=console.print)
        # `duration` counts once everything runs (start-up time varies with the host).
        deadline = time.monotonic() + duration if duration else None
        with httpx.Client(timeout=2) as http:
            if plain:
                next_totals = time.monotonic() + 5
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.25)
                    for when, dev, shown in demo.poll():
                        print(demo.plain_line(when, dev, shown), flush=True)
                    if time.monotonic() >= next_totals:
                        stats = demo.backend_stats(http)
                        total = int(stats.get("total", 0))
                        print(f"backend: {total} check-ins {stats.get('by_type', {})}", flush=True)
                        next_totals += 5
            else:
                with Live(demo.render({}), console=console, refresh_per_second=4) as live:
                    while deadline is None or time.monotonic() < deadline:
                        time.sleep(0.25)
                        demo.poll()
                        stats = demo.backend_stats(http)
                        total = int(stats.get("total", 0))
                        live.update(demo.render(stats))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        pass  # our output pipe closed (e.g. `make demo | tee` interrupted): just clean up
    finally:
        # Stop first: printing can fail once the terminal or pipe is gone.
        if demo.backend is not None and demo.backend.alive():
            with httpx.Client(timeout=2) as http:
                total = int(demo.backend_stats(http).get("total", total))
        demo.stop(say=_note)
        with contextlib.suppress(OSError):
            console.print(f"stopped kiosks, bridge, backend and broker. The backend received "
                          f"{total} check-ins; state kept in {state_dir}/ for a look.")
    return 0
