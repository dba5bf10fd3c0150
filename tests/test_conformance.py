"""The EU DCC conformance suite (dgc-testdata) on the firmware's own decoder and verifier.

All cases of ../shared/conformance/dgc-testdata/ run in ONE MicroPython
process (tests/firmware/conformance_driver.py). Per case and step the result
must match the case's EXPECTEDRESULTS (a step whose flag is absent is not
tested), except where upstream's known_issues.csv lists the step, as upstream's
own test suite does. Steps and flags:

    unprefix     EXPECTEDUNPREFIX          "HC1:" + BASE45 == PREFIX
    b45decode    EXPECTEDB45DECODE         Base45 -> COMPRESSED
    compression  EXPECTEDCOMPRESSION       zlib (capped) -> COSE
    decode       EXPECTEDDECODE            COSE -> CWT -> hcert equals JSON
    verify       EXPECTEDVERIFY            kid and signature with the case's DSC
    expiration   EXPECTEDEXPIRATIONCHECK   iat, exp, DSC validity at VALIDATIONCLOCK
    keyusage     EXPECTEDKEYUSAGE          the DSC's EKU allows the certificate kind

Not tested here: JSON schema validation (the kiosk does not validate against
the DCC schema: kiosk/verdict.py checks the fields its rules use), QR
picture decoding (the scanner does that) and encoding. A few cases carry a
JSON that is not what their own COSE holds (cbor2 decodes the COSE exactly as
the firmware does): those are counted as bad data, not as failures.
The per-step tally is printed and written to conformance-results.json in the
test's tmp folder.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest

from mqtt_bridge.hcert import TrustList, verify_hc1

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "conformance"
TESTDATA = SHARED / "dgc-testdata"
VN_DSC = SHARED / "vn_dsc_ZtJVElOdWm0.der"
FIRMWARE = ROOT / "firmware"
DRIVER = ROOT / "tests" / "firmware" / "conformance_driver.py"

# step -> (expected-results flag, upstream test name in known_issues.csv)
STEPS = {
    "unprefix": ("EXPECTEDUNPREFIX", "test_un_prefix"),
    "b45decode": ("EXPECTEDB45DECODE", "test_b45decode"),
    "compression": ("EXPECTEDCOMPRESSION", "test_compression"),
    "decode": ("EXPECTEDDECODE", "test_cose_json"),
    "verify": ("EXPECTEDVERIFY", "test_verification_check"),
    "expiration": ("EXPECTEDEXPIRATIONCHECK", "test_expiration_check"),
    "keyusage": ("EXPECTEDKEYUSAGE", "test_expected_key_usage"),
}
NOT_TESTED = ("EXPECTEDSCHEMAVALIDATION", "EXPECTEDPICTUREDECODE", "EXPECTEDENCODE",
              "EXPECTEDVALIDJSON", "EXPECTEDVALIDOBJECT")

needs_testdata = pytest.mark.skipif(
    not TESTDATA.is_dir(), reason=f"conformance data not present ({TESTDATA})"
)


def _clock(text: str | None) -> int:
    if not text:
        return int(dt.datetime.now(dt.UTC).timestamp())
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:  # upstream: no zone means UTC
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp())


def _known_issues() -> dict[str, str]:
    path = TESTDATA / "known_issues.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {f"{r['test_name']}:{r['country']}:{r['test_set']}": r["reason"]
                for r in csv.DictReader(f)}


def _known(issues: dict[str, str], test: str, country: str, test_set: str) -> bool:
    keys = (f"{test}:{country}:{test_set}", f"{test}:{country}:", f":{country}:{test_set}",
            f":{country}:")
    return any(k in issues for k in keys)


def load_cases() -> list[dict[str, Any]]:
    """Every case with EXPECTEDRESULTS, in path order, with its id, country and test set."""
    cases = []
    for path in sorted(TESTDATA.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("EXPECTEDRESULTS"), dict):
            continue
        rel = path.relative_to(TESTDATA)
        ctx = data.get("TESTCTX") or {}
        cases.append({
            "id": rel.as_posix(),
            "country": rel.parts[0],
            "test_set": path.stem,
            "expected": data["EXPECTEDRESULTS"],
            "json": data.get("JSON"),
            "input": {
                "id": rel.as_posix(),
                "prefix": data.get("PREFIX"),
                "base45": data.get("BASE45"),
                "compressed": data.get("COMPRESSED"),
                "cose": data.get("COSE"),
                "cbor": data.get("CBOR"),
                "cert": ctx.get("CERTIFICATE"),
                "clock": _clock(ctx.get("VALIDATIONCLOCK")),
            },
        })
    return cases


def _norm(obj: object) -> object:
    """Comparable form, as upstream compares: lists unordered, dates as instants."""
    if isinstance(obj, dict):
        return sorted((str(k), _norm(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted((_norm(v) for v in obj), key=repr)
    if isinstance(obj, str) and len(obj) >= 10 and obj[:4].isdigit() and obj[4:5] == "-":
        try:
            t = dt.datetime.fromisoformat(obj)
        except ValueError:
            return obj
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return obj


def _reference_dcc(case: dict[str, Any]) -> object:
    """The hcert as cbor2 decodes the case's COSE (None if it does not)."""
    try:
        obj = cbor2.loads(bytes.fromhex(case["input"]["cose"]))
        while isinstance(obj, cbor2.CBORTag):
            obj = obj.value
        claims = cbor2.loads(obj[2])
        return _plain(claims[-260][1])
    except Exception:  # any failure: no reference
        return None


def _plain(obj: object) -> object:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    return obj


def _step_result(step: str, case: dict[str, Any], out: dict[str, Any]) -> bool | None:
    if step == "decode":
        if case["input"]["cose"] is None and case["input"]["cbor"] is None:
            return None
        if "dcc" not in out:
            return False
        if case["json"] is None:
            return True
        return _norm(out["dcc"]) == _norm(case["json"])
    return out.get(step)


def _inconsistent_data(step: str, case: dict[str, Any], out: dict[str, Any]) -> bool:
    """True when the case's JSON is not what its own COSE holds (cbor2 agrees
    with the firmware's decoding, and both differ from the JSON)."""
    if step != "decode" or case["input"]["cose"] is None or "dcc" not in out:
        return False
    ref = _reference_dcc(case)
    return ref is not None and _norm(ref) == _norm(out["dcc"]) != _norm(case["json"])


def run_driver(micropython_bin: str, cases: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    src = work / "cases.jsonl"
    src.write_text("\n".join(json.dumps(c["input"]) for c in cases) + "\n")
    proc = subprocess.run(
        [micropython_bin, str(DRIVER), str(src)],
        env={"PATH": os.environ.get("PATH", ""), "MICROPYPATH": f"{FIRMWARE}:.frozen"},
        cwd=work, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    results = {}
    done = None
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        if "done" in obj:
            done = obj["done"]
        else:
            results[obj["id"]] = obj
    assert done == len(cases), f"driver stopped after {done} of {len(cases)} cases"
    return results


@needs_testdata
def test_conformance_suite_on_the_firmware(micropython_bin: str, tmp_path: Path) -> None:
    cases = load_cases()
    assert len(cases) >= 500, f"only {len(cases)} cases found"
    issues = _known_issues()
    results = run_driver(micropython_bin, cases, tmp_path)

    tally: dict[str, dict[str, int]] = {
        s: {"tested": 0, "passed": 0, "known_issue": 0, "known_issue_agrees": 0, "bad_data": 0,
            "failed": 0}
        for s in STEPS
    }
    failures: list[str] = []
    crashes = [f"{cid}: {r['crash']}" for cid, r in results.items() if "crash" in r]
    for case in cases:
        out = results[case["id"]]
        for step, (flag, upstream) in STEPS.items():
            if flag not in case["expected"]:
                continue
            expected = bool(case["expected"][flag])
            got = _step_result(step, case, out)
            if got is None:
                continue  # the case lacks the data this step needs (upstream skips too)
            t = tally[step]
            t["tested"] += 1
            if _known(issues, upstream, case["country"], case["test_set"]):
                t["known_issue"] += 1
                t["known_issue_agrees"] += got == expected
            elif got == expected:
                t["passed"] += 1
            elif _inconsistent_data(step, case, out):
                t["bad_data"] += 1
            else:
                t["failed"] += 1
                detail = out.get(f"{step}_reason") or out.get("decode_error") or ""
                failures.append(f"{case['id']} {step}: expected {expected}, got {got} {detail}")
    # A scan reads the PREFIX text in one go (hc1.read): every case must read,
    # except those built to fail (they expect some step to fail).
    unread = [c for c in cases if results[c["id"]].get("read") is not None]
    for c in unread:
        if all(c["expected"].values()):
            failures.append(f"{c['id']} read: {results[c['id']]['read']} on a valid case")
    not_tested = {f: sum(1 for c in cases if f in c["expected"]) for f in NOT_TESTED}
    summary = {"cases": len(cases), "read": len(cases) - len(unread), "steps": tally,
               "not_tested": not_tested}
    (tmp_path / "conformance-results.json").write_text(json.dumps(summary, indent=1))
    print(f"\nconformance: {len(cases)} cases on the firmware under MicroPython;"
          f" {len(cases) - len(unread)} read whole by hc1.read, the other {len(unread)} are"
          f" built to fail: {', '.join(c['id'].rsplit('/', 1)[1] for c in unread)}")
    for step, t in tally.items():
        judged = t["tested"] - t["known_issue"] - t["bad_data"]
        print(f"  {step:12s} {t['passed']:4d}/{judged:4d} passed; known upstream issues:"
              f" {t['known_issue']} (firmware agrees anyway on {t['known_issue_agrees']});"
              f" JSON not their own COSE's: {t['bad_data']}")
    print(f"  not tested: {not_tested}")
    assert not crashes, "\n".join(crashes[:20])
    assert not failures, f"{len(failures)} step results differ:\n" + "\n".join(failures[:40])


@needs_testdata
def test_host_verifier_agrees_on_signatures(tmp_path: Path) -> None:
    """mqtt_bridge/hcert.py (cryptography) judges the suite's signatures like upstream."""
    issues = _known_issues()
    checked = 0
    for case in load_cases():
        inp = case["input"]
        flag = case["expected"].get("EXPECTEDVERIFY")
        if flag is None or not inp["prefix"] or not inp["cert"]:
            continue
        if _known(issues, "test_verification_check", case["country"], case["test_set"]):
            continue
        if inp["cose"] is None or inp["compressed"] is None:
            continue  # the PREFIX of such cases is not the COSE being judged
        der = base64.b64decode(inp["cert"])
        from mqtt_bridge.hcert import build_trust_body

        trust = TrustList.from_body(build_trust_body([der]))
        result = verify_hc1(inp["prefix"], trust, None)
        ok = result.reason not in ("no_signer", "bad_signature", "unsupported_alg") and (
            result.ok or result.reason == "wrong_key_usage"
        )
        if result.reason and result.reason.startswith("hc1_"):
            ok = False
        assert ok == bool(flag), (case["id"], result.reason)
        checked += 1
    assert checked >= 400


@pytest.mark.skipif(not VN_DSC.exists(), reason=f"Viet Nam's DSC not present ({VN_DSC})")
def test_viet_nam_signer_certificate_reads_on_the_firmware(micropython_bin: str) -> None:
    """Viet Nam's real DSC: RSA-2048, valid 2021-07-15 to 2026-07-14, its kid is
    the one in the file name, and its EKU (no DCC OIDs) allows every kind."""
    script = (
        "import binascii, hashlib\n"
        "from kiosk import der, trust\n"
        f"d = open({str(VN_DSC)!r}, 'rb').read()\n"
        "info, err = der.parse_certificate(d)\n"
        "s, err2 = trust.signer_from_der(hashlib.sha256(d).digest()[:8], d)\n"
        "print(err, err2, info.key_type, len('%x' % info.rsa_n) * 4, info.rsa_e,\n"
        "      info.not_before, info.not_after, s.kinds,\n"
        "      binascii.b2a_base64(s.kid).decode().strip())\n"
    )
    out = subprocess.run(
        [micropython_bin, "-c", script],
        env={"PATH": os.environ.get("PATH", ""), "MICROPYPATH": f"{FIRMWARE}:.frozen"},
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    start = int(dt.datetime(2021, 7, 15, 11, 43, 43, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(2026, 7, 14, 11, 43, 43, tzinfo=dt.UTC).timestamp())
    assert out == ["None", "None", "rsa", "2048", "65537", str(start), str(end), "vtr",
                   "ZtJVElOdWm0="]
