# Crash-loop detection and the watchdog policy (firmware/kiosk/health.py).

import fwtest

from kiosk.health import Health


class Board:
    def __init__(self, folder, cause):
        self.folder = folder
        self.cause = cause
        self.now = 0
        self.fed = 0
        self.wdt = None

    def path(self, name):
        return self.folder + "/" + name

    def ticks_ms(self):
        return self.now

    def reset_cause(self):
        return self.cause

    def wdt_start(self, ms):
        self.wdt = ms

    def wdt_feed(self):
        self.fed += 1


def _boot(d, cause, crashes=3, window_s=600):
    return Health(Board(d, cause), crashes, window_s)


def test_boot_ids_count_up_and_survive_restarts():
    d = fwtest.tmpdir()
    assert [_boot(d, "power").boot for _ in range(3)] == [1, 2, 3]


def test_crashes_in_a_row_enter_safe_mode_and_a_power_cycle_does_not_count():
    d = fwtest.tmpdir()
    assert not _boot(d, "power").safe_mode
    assert not _boot(d, "crash").safe_mode
    assert not _boot(d, "watchdog").safe_mode
    h = _boot(d, "crash")
    assert h.safe_mode and h.streak == 3
    assert not _boot(d, "power").safe_mode  # an unplugged kiosk is not a crashing one


def test_a_boot_that_runs_long_enough_clears_the_streak():
    d = fwtest.tmpdir()
    _boot(d, "crash")
    h = _boot(d, "watchdog")
    h.start_watchdog()
    assert h.board.wdt == 8000
    h.board.now = 599000
    h.feed(h.board.now)
    assert h.streak == 2 and h.board.fed == 1
    h.board.now = 601000
    h.feed(h.board.now)
    assert h.stable and h.streak == 0
    assert not _boot(d, "crash").safe_mode  # the count starts again


def test_a_damaged_boot_file_starts_afresh():
    d = fwtest.tmpdir()
    with open(d + "/boot.dat", "w") as f:
        f.write("garbage")
    h = _boot(d, "crash")
    assert h.boot == 1 and h.streak == 1 and not h.safe_mode
