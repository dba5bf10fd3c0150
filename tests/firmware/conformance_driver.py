# Runs the EU DCC conformance cases (dgc-testdata) through the firmware's own
# decoder and verifier, in one MicroPython (or CPython) process:
#   micropython conformance_driver.py cases.jsonl
# Each input line is one case prepared by tests/test_conformance.py (hex and
# base64 fields, the validation clock already in Unix seconds). Each output
# line is JSON: {"id": ..., "<step>": true/false or null (not run), "dcc": ...}
# with the steps unprefix, b45decode, compression, decode, verify,
# expiration, keyusage. The test compares them with the expected results.

import binascii
import hashlib
import json
import sys

from kiosk import base45, cbor, hc1, trust


def _plain(obj):
    # decoded CBOR -> JSON-able (bytes as hex, map keys as strings)
    if isinstance(obj, dict):
        out = {}
        for k in obj:
            out[str(k)] = _plain(obj[k])
        return out
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return binascii.hexlify(obj).decode()
    return obj


def _unhex(s):
    try:
        return binascii.unhexlify(s)
    except (ValueError, TypeError):
        return None


def _signer(c):
    # The case's DSC as a trust list entry; kid = SHA-256(DER)[:8] (EU DCC).
    raw = c.get("cert")
    if not raw:
        return None
    try:
        cert_der = binascii.a2b_base64(raw)
    except ValueError:
        return None
    kid = hashlib.sha256(cert_der).digest()[:8]
    signer, err = trust.signer_from_der(kid, cert_der)
    return signer


def run(c):
    r = {"id": c["id"]}
    prefix = c.get("prefix")
    b45 = c.get("base45")
    compressed = _unhex(c["compressed"]) if c.get("compressed") is not None else None
    cose = _unhex(c["cose"]) if c.get("cose") is not None else None

    if prefix is not None:
        cert, err = hc1.read(prefix)  # the whole reading, as a scan does it
        r["read"] = err
    if prefix is not None and b45 is not None:
        r["unprefix"] = hc1.unprefix(prefix) == b45
    if b45 is not None and compressed is not None:
        r["b45decode"] = base45.decode(b45) == compressed
    if compressed is not None and cose is not None:
        out, err = hc1.inflate(compressed)
        r["compression"] = err is None and out == cose

    cert = None
    if cose is not None:
        cert, err = hc1.decode_cose(cose)
        r["decode_error"] = err
        if cert is not None:
            r["dcc"] = _plain(cert.dcc)
    elif c.get("cbor") is not None:
        raw = _unhex(c["cbor"])
        try:
            obj = cbor.decode(raw)
            if isinstance(obj, dict) and isinstance(obj.get(-260), dict):
                obj = obj[-260].get(1)
            r["dcc"] = _plain(obj)
        except (ValueError, TypeError, UnicodeError):
            r["decode_error"] = "cbor"

    signer = _signer(c)
    r["cert_ok"] = signer is not None
    if cose is not None and c.get("cert"):
        if cert is None or signer is None:
            r["verify"] = False
            r["expiration"] = False
            r["keyusage"] = False
        else:
            tl = trust.TrustList()
            tl.add(signer)
            found, err = hc1.find_signer(cert, tl)
            r["verify"] = found is not None
            r["verify_reason"] = err
            terr = hc1.check_time(cert, signer, c["clock"], 0)
            r["expiration"] = terr is None
            r["expiration_reason"] = terr
            r["keyusage"] = hc1.check_key_usage(cert, signer) is None
    return r


def main(path):
    n = 0
    with open(path) as f:
        while True:
            line = f.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            c = json.loads(line)
            try:
                r = run(c)
            except Exception as e:  # a crash is a finding, not the end of the run
                r = {"id": c["id"], "crash": repr(e)}
            print(json.dumps(r))
            n += 1
    print(json.dumps({"done": n}))


if __name__ == "__main__":
    main(sys.argv[1])
