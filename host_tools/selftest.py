"""`kioskctl selftest`: the board's own self-test (firmware/kiosk/selftest.py), run through the
REPL, read back as one JSON line and shown as a pass/fail table with what to do."""

from __future__ import annotations

import json
from typing import Any

from host_tools.errors import Failure
from host_tools.repl import SELFTEST_S, Board

MARK = "KIOSK-SELFTEST "  # == firmware/kiosk/selftest.py MARK
RUN = "from kiosk import selftest\nselftest.main()\n"


def run_selftest(board: Board, timeout: float = SELFTEST_S) -> dict[str, Any]:
    """Run the self-test on the board; its report {"ok", "checks": [[name, status, detail]]}."""
    try:
        out = board.exec(RUN, timeout=timeout, what="the self-test", changes=False)
    except Failure as e:
        if "ImportError" in str(e) or "no module named" in str(e).lower():
            raise Failure(f"{board.port}: the firmware on the board has no self-test: "
                          "deploy a current bundle first (kioskctl deploy)") from None
        raise
    for line in out.splitlines():
        if line.startswith(MARK):
            try:
                report = json.loads(line[len(MARK):])
            except ValueError:
                break
            if isinstance(report, dict) and isinstance(report.get("checks"), list):
                return report
    raise Failure(f"{board.port}: the self-test gave no report (firmware too old?)")


def failed_checks(report: dict[str, Any]) -> list[str]:
    return [f"{name}: {detail}" for name, status, detail in report["checks"] if status == "fail"]
