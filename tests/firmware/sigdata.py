# Signature test vectors for the firmware tests (made on the host by
# tests/sigvectors.py, written by tests/conftest.py beside the samples file).
# MicroPython-compatible.

import binascii
import json
import os

_cache = {}


def vectors(section):
    """One section of sig_vectors.json: p256, rsa, der, hc1 or docs."""
    if not _cache:
        samples = os.getenv("KIOSK_TEST_SAMPLES")
        path = samples[: samples.rfind("/") + 1] + "sig_vectors.json"
        with open(path) as f:
            _cache.update(json.load(f))
    return _cache[section]


def unhex(s):
    return binascii.unhexlify(s)


def b64(s):
    return binascii.a2b_base64(s) if s else b""


def hexint(s):
    return int(s, 16)
