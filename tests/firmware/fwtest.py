# Helpers for firmware tests that run under both CPython (pytest) and the
# MicroPython unix port (run_mpy.py). Only MicroPython-compatible code here.

import json
import os

_counter = [0]


def raises(exc, fn, *args):
    """Assert that fn(*args) raises exc (no pytest on MicroPython)."""
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError(f"{exc.__name__} not raised")


def samples():
    """Sample codes made by simulator/codes.py (written to a file by the test runner)."""
    with open(os.getenv("KIOSK_TEST_SAMPLES")) as f:
        return json.load(f)


def tmpdir():
    """A fresh folder under KIOSK_TEST_TMP."""
    _counter[0] += 1
    tag = int.from_bytes(os.urandom(4), "big")
    path = os.getenv("KIOSK_TEST_TMP") + "/t%d-%d" % (_counter[0], tag)
    os.mkdir(path)
    return path
