# Crash-loop detection and the watchdog policy (firmware/kiosk/health.py).

import fwtest

from kiosk.health import MAINT_MS, Health


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

    def wdt_maintenance(self, window_ms):
        self.window = window_ms
        return window_ms if self.wdt else 0


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


def test_ctrl_c_asks_the_board_to_feed_the_watchdog_for_ten_minutes():
    d = fwtest.tmpdir()
    h = _boot(d, "power")
    assert h.maintenance() == 0  # no watchdog running yet: nothing to feed
    h.start_watchdog()
    assert h.maintenance() == MAINT_MS == 600000 and h.board.window == MAINT_MS


def test_a_maintenance_reset_is_not_a_crash():
    d = fwtest.tmpdir()
    _boot(d, "crash")
    _boot(d, "watchdog")
    h = _boot(d, "maintenance")  # a technician left the kiosk at the REPL
    assert h.streak == 0 and not h.safe_mode
