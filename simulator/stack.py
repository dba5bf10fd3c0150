"""Run the backend emulator and the bridge as real subprocesses (tests, demo, end-to-end).

    backend = start_backend(state_dir)                      # waits for GET /healthz
    bridge = start_bridge(state_dir, broker.port, password, backend.url)
    ...                                                     # waits for the "ready" log line
    bridge.stop(); backend.stop()                           # SIGTERM, wait; kill=True: SIGKILL

Each service runs `sys.executable -m ...` (so from the same venv) in its own
session, hence its own process group, which `stop()` signals as a whole.
Output goes to `<state_dir>/<name>.log` (appended across restarts), exposed as
`ServiceProcess.log_path`. Readiness contract:

- backend: `GET <url>/healthz` answers 200;
- bridge: a log line containing `mqtt_bridge.ingest.READY_MESSAGE` appears
  after the start (it is logged each time the broker confirms the subscription).

A service gets SIGTERM when the process that started it dies, however it
dies (simulator/process.py), so a crashed test run cannot leave services behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mqtt_bridge.config import CLIENT_SECRET_ENV, PASSWORD_ENV
from mqtt_bridge.ingest import READY_MESSAGE
from simulator.backend import SECRET_ENV as BACKEND_SECRET_ENV
from simulator.broker import free_port
from simulator.process import die_with_parent

BACKEND_LOG = "backend.log"
BRIDGE_LOG = "bridge.log"
BACKEND_DB = "backend.sqlite3"
BRIDGE_DB = "bridge-spool.sqlite3"



class ServiceError(RuntimeError):
    """A service did not become ready in time, or exited while starting."""


@dataclass(eq=False)
class ServiceProcess:
    """A running service: its process, log file and (backend) address."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    url: str = ""
    db_path: Path | None = None
    _log_offset: int = field(default=0, repr=False)

    @property
    def pid(self) -> int:
        """Process id (also the process-group id: it leads its own session)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def log_text(self, since_start: bool = True) -> str:
        """The log written by this run (or the whole file, across restarts)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_offset if since_start else 0 :].decode("utf-8", "replace")

    def stop(self, kill: bool = False, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group and wait; kill=True sends SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(
    name: str, args: list[str], state_dir: Path, log_name: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / log_name
    offset = log_path.stat().st_size if log_path.exists() else 0
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env=full_env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    service = ServiceProcess(name, proc, log_path, _log_offset=offset)
    return service


def _startup_failure(service: ServiceProcess, why: str) -> ServiceError:
    service.stop(kill=True)
    tail = "\n".join(service.log_text().splitlines()[-15:])
    return ServiceError(f"{service.name} {why}; log {service.log_path}:\n{tail}")


def start_backend(
    state_dir: Path,
    port: int | None = None,
    timeout: float = 20.0,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_ttl: int | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> ServiceProcess:
    """Start `python -m simulator.backend` on loopback; return once /healthz answers.

    The database is `<state_dir>/backend.sqlite3`, so a restart on the same
    folder keeps every check-in. `port=None` picks a free port. With
    `client_id`/`client_secret` the API requires OAuth2 bearer tokens. With
    `tls=(cert, key, ca)` it serves HTTPS (the URL is https://, readiness is
    checked against `ca`).
    """
    extra: list[str] = []
    env: dict[str, str] = {}
    if tls:
        extra += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    if client_id:
        extra += ["--client-id", client_id]
        env[BACKEND_SECRET_ENV] = client_secret or ""
    if token_ttl:
        extra += ["--token-ttl", str(token_ttl)]
    # A free port found now can be taken by someone else before the backend binds it;
    # with an automatic port, try again on another one.
    attempts = 1 if port else 3
    for attempt in range(attempts):
        try:
            return _start_backend_once(
                state_dir, port or free_port(), timeout, extra, env, tls[2] if tls else None
            )
        except ServiceError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_backend_once(
    state_dir: Path,
    port: int,
    timeout: float,
    extra: list[str],
    env: dict[str, str],
    ca: Path | None = None,
) -> ServiceProcess:
    db = state_dir / BACKEND_DB
    service = _spawn(
        "backend",
        ["simulator.backend", "--host", "127.0.0.1", "--port", str(port), "--db", str(db), *extra],
        state_dir,
        BACKEND_LOG,
        env=env,
    )
    scheme = "https" if ca else "http"
    service.port, service.url, service.db_path = port, f"{scheme}://127.0.0.1:{port}", db
    deadline = time.monotonic() + timeout
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    with httpx.Client(timeout=1.0, verify=verify) as client:
        while time.monotonic() < deadline:
            if not service.alive():
                raise _startup_failure(service, f"exited with status {service.proc.returncode}")
            try:
                if client.get(service.url + "/healthz").status_code == 200:
                    return service
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise _startup_failure(service, f"did not answer /healthz within {timeout}s")


def start_bridge(
    state_dir: Path,
    broker_port: int,
    password: str,
    backend_url: str,
    extra_args: list[str] | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 20.0,
    client_secret: str | None = None,
    name: str = "bridge",
) -> ServiceProcess:
    """Start `python -m mqtt_bridge run`; return once it logs that it is subscribed.

    The spool is `<state_dir>/bridge-spool.sqlite3` (reused across restarts),
    the password (and the OAuth2 `client_secret`) go through the environment,
    `extra_args` are appended (later options win). wait_ready=False returns at
    once (e.g. no broker yet). Two instances need two state folders.
    """
    db = state_dir / BRIDGE_DB
    args = [
        "mqtt_bridge",
        "run",
        "--broker-host",
        "127.0.0.1",
        "--broker-port",
        str(broker_port),
        "--db",
        str(db),
        "--backend-url",
        backend_url,
        *(extra_args or []),
    ]
    env = {PASSWORD_ENV: password}
    if client_secret:
        env[CLIENT_SECRET_ENV] = client_secret
    service = _spawn(name, args, state_dir, BRIDGE_LOG, env=env)
    service.db_path = db
    if wait_ready:
        wait_bridge_ready(service, timeout)
    return service


def wait_bridge_ready(service: ServiceProcess, timeout: float = 20.0) -> None:
    """Wait until this run of the bridge has logged READY_MESSAGE; raise ServiceError if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY_MESSAGE in service.log_text():
            return
        if not service.alive():
            raise _startup_failure(service, f"exited with status {service.proc.returncode}")
        time.sleep(0.05)
    raise _startup_failure(service, f"did not log readiness within {timeout}s")
