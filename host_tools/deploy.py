"""`kioskctl deploy`: the bundle onto a running board, only what changed, then the app restarts.

The board keeps the manifest of what was deployed last (`/app-manifest.json`,
the bundle's own). Deploy reads it, asks the board which of the listed files
exist with the listed size (one round trip), copies only files whose hash
differs or that are missing, removes files the old bundle had and the new one
does not, writes the new manifest last (an interrupted deploy is repaired by
the next one), and soft-resets the board so the new app starts. It then waits
for the app's first console line to say which version runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host_tools.build import MANIFEST, Bundle
from host_tools.errors import Failure
from host_tools.repl import RESTART_S, Board

Progress = Callable[[float, str], None]  # fraction done 0..1, what happens now

# Console lines of the app at boot (kiosk/app.py, kiosk/log.py): running, or refusing to.
APP_RUNNING = b"I app: kiosk "
CONFIG_ERROR = b"E config: "


@dataclass
class Plan:
    copy: list[str]
    remove: list[str]
    unchanged: int


def device_manifest(board: Board) -> dict[str, dict[str, object]]:
    """The files the board's last deploy installed (empty when none or unreadable)."""
    raw = board.read_file(MANIFEST)
    if raw is None:
        return {}
    try:
        files = json.loads(raw).get("files")
    except (ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def present_sizes(board: Board, names: list[str]) -> dict[str, int]:
    """Size of each named file on the board (-1 when missing), in one round trip."""
    code = (f"import os, json\nr = {{}}\nfor n in {names!r}:\n    try:\n"
            "        r[n] = os.stat(n)[6]\n    except OSError:\n        r[n] = -1\n"
            "print(json.dumps(r))\n")
    result = board.eval_json(code, what="reading the board's files")
    return result if isinstance(result, dict) else {}


def check_mpy(board: Board, bundle: Bundle) -> None:
    """Refuse a bundle whose .mpy format the board's MicroPython cannot import."""
    want = str(bundle.manifest.get("mpy") or "")
    if not want:
        return
    raw = board.exec("import sys\nprint(getattr(sys.implementation, '_mpy', 0))",
                     what="reading the board's MicroPython version", changes=False).strip()
    try:
        has = int(raw) & 0xFF
    except ValueError:
        return
    if has and str(has) != want.split(".")[0]:
        raise Failure(f"{board.port}: the board's MicroPython imports .mpy v{has}, the bundle "
                      f"is v{want}: flash a current MicroPython (kioskctl flash)")


def plan(bundle: Bundle, old: dict[str, dict[str, object]], sizes: dict[str, int]) -> Plan:
    new = bundle.manifest["files"]
    assert isinstance(new, dict)
    copy, same = [], 0
    for name, meta in sorted(new.items()):
        was = old.get(name)
        if (was is not None and was.get("sha256") == meta["sha256"]
                and sizes.get(name) == meta["size"]):
            same += 1
        else:
            copy.append(name)
    remove = sorted(set(old) - set(new))
    return Plan(copy, remove, same)


def deploy(board: Board, bundle: Bundle, progress: Progress = lambda f, s: None,
           restart: bool = True, wait_s: float = RESTART_S) -> str:
    """Deploy and restart; a one-line summary of what was done."""
    check_mpy(board, bundle)
    progress(0.02, "reading the board's manifest")
    old = device_manifest(board)
    names = sorted(bundle.files)
    sizes = present_sizes(board, names)
    p = plan(bundle, old, sizes)
    dirs = sorted({str(Path(n).parent) for n in p.copy if "/" in n})
    board.makedirs(dirs)
    total = sum(len(bundle.files[n]) for n in p.copy) or 1
    done = 0
    for name in p.copy:
        progress(0.05 + 0.85 * done / total, f"copying {name}")
        board.write_file(name, bundle.files[name])
        done += len(bundle.files[name])
    if p.remove:
        progress(0.9, f"removing {len(p.remove)} old files")
        board.exec(f"import os\nfor n in {p.remove!r}:\n    try:\n        os.remove(n)\n"
                   "    except OSError:\n        pass\n", what="removing old files")
    board.write_file(MANIFEST, bundle.manifest_bytes())
    summary = (f"fw {bundle.version}: {len(p.copy)} files copied, {p.unchanged} unchanged"
               + (f", {len(p.remove)} removed" if p.remove else ""))
    if restart:
        progress(0.95, "restarting the app")
        summary += "; " + restart_app(board, wait_s)
    progress(1.0, "done")
    return summary


def _booted(out: bytes) -> bool:
    """The app said it runs, or refused its config (whole line), or crashed to the REPL."""
    if APP_RUNNING in out:
        return True
    at = out.find(CONFIG_ERROR)
    if at >= 0 and b"\n" in out[at:]:
        return True
    return b"Traceback" in out and out.rstrip().endswith(b">>>")


def _exception_line(out: bytes) -> str:
    lines = out.decode(errors="replace").splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line):
            return line.strip()
    return "see `kioskctl monitor`"


def restart_app(board: Board, wait_s: float) -> str:
    """Soft-reset the board and read its console until the app says it runs (or why not)."""
    board.restart()
    out = board.read_console(_booted, wait_s)
    at = out.find(CONFIG_ERROR)
    if at >= 0:
        line = out[at:].split(b"\n")[0].decode(errors="replace").strip()
        return f"the app refuses its config: {line[len('E config: '):]} (run kioskctl provision)"
    if APP_RUNNING in out:
        return "app running"
    if b"Traceback" in out:
        raise Failure(f"{board.port}: the app crashed at start: {_exception_line(out)}")
    return f"restarted (the app said nothing within {wait_s:.0f} s)"
