"""Start a real Mosquitto with the project's configuration on a free loopback port.

Used by the demo, the simulator and the tests. The broker's state (config,
password file, ACL, persistence database, log) lives in one folder, so a
restarted broker on the same folder keeps its sessions and queued messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulator.process import die_with_parent

CONFIG_TEMPLATE = Path(__file__).with_name("mosquitto.conf")

# The bridge's account and rights; a kiosk's rights come from the `pattern`
# lines, bound to its username (= device id). Reads like the rule it enforces.
ACL = """\
# The bridge reads every kiosk's check-ins, status, telemetry, online checks and
# command results; it answers on ack/reply/verify/result, sends commands, and
# publishes the operator-signed fleet documents (policy, trust list).
user {bridge}
topic read kiosk/+/checkin
topic read kiosk/+/status
topic read kiosk/+/telemetry
topic read kiosk/+/verify
topic read kiosk/+/cmd/result
topic write kiosk/+/ack
topic write kiosk/+/reply
topic write kiosk/+/verify/result
topic write kiosk/+/cmd
topic readwrite fleet/#

# Every kiosk (username = device id) speaks only for itself and reads only
# what is meant for it, plus the fleet-wide signed documents.
pattern write kiosk/%u/checkin
pattern readwrite kiosk/%u/status
pattern write kiosk/%u/telemetry
pattern write kiosk/%u/verify
pattern write kiosk/%u/cmd/result
pattern read kiosk/%u/ack
pattern read kiosk/%u/reply
pattern read kiosk/%u/verify/result
pattern read kiosk/%u/cmd
pattern read fleet/#
"""

BRIDGE_USER = "kiosk-bridge"


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or a clear error saying how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto is not installed: run `sudo apt-get install mosquitto`")


def _wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"mosquitto exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerError(f"mosquitto did not listen on 127.0.0.1:{port} in time")


@dataclass
class Broker:
    """A Mosquitto process with its own state folder and accounts."""

    state_dir: Path
    port: int = 0
    accounts: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if not self.port:
            self.port = free_port()

    @property
    def log_path(self) -> Path:
        return self.state_dir / "mosquitto.log"

    def add_account(self, username: str, password: str) -> None:
        """Give a client (a kiosk or the bridge) a login; applied at the next (re)start."""
        self.accounts[username] = password

    def _write_files(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        passwd = self.state_dir / "passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.accounts.items()))
        passwd.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        # -U hashes every plain-text line of the file in place, in one call.
        subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True)
        (self.state_dir / "acl").write_text(ACL.format(bridge=BRIDGE_USER))
        conf_text = CONFIG_TEMPLATE.read_text()
        conf_text = conf_text.replace("@PORT@", str(self.port))
        conf_text = conf_text.replace("@STATE@", str(self.state_dir.resolve()))
        if os.geteuid() == 0:
            # Mosquitto drops root to the `mosquitto` user, which could not write
            # our state folder; stay as the invoking user instead.
            conf_text += (
                "\n# Started as root by simulator/broker.py: keep the invoking user.\nuser root\n"
            )
        conf = self.state_dir / "mosquitto.conf"
        conf.write_text(conf_text)
        return conf

    def start(self, timeout: float = 10.0) -> Broker:
        """Write config and accounts, start Mosquitto, wait until it accepts connections."""
        conf = self._write_files()
        log = open(self.state_dir / "mosquitto.stdout", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        _wait_port(self.port, time.monotonic() + timeout, self.proc)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop Mosquitto (SIGTERM lets it save its database; kill=True does not)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
