# The board layer: everything physical. A board object gives the app
#   path(name)            where a file of the kiosk's state lives
#   ticks_ms(), unix_time()
#   scanner_read() -> bytes or None (never blocks), scanner_write(bytes)
#   wait(timeout_ms, sock)   sleep until scanner input, socket input or timeout
#   show(screen)          LCD lines, LED colour, buzzer pattern (kiosk/ui.py)
#   tick(now)             advance non-blocking outputs (buzzer patterns)
#   HAS_WIFI, start_network(cfg), network_up()
#   reset_cause(), reset(cause)      why this boot happened; restart the board
#   wdt_start(ms), wdt_feed()        the hardware watchdog (cannot be stopped)
#   wdt_maintenance(window_ms)       ctrl-C: feed a running watchdog by itself for
#                                    window_ms (kiosk/health.py), note "maintenance"
# Port differences live here and nowhere else.

import select
import sys


def watch_socket(poll, old, new):
    """Make `poll` watch socket `new` (or none) for input instead of `old`.
    Returns `new`, to keep as the next call's `old`."""
    if new is not old:
        if old is not None:
            try:
                poll.unregister(old)
            except (OSError, KeyError, ValueError):
                pass  # already closed: nothing to unregister
        if new is not None:
            poll.register(new, select.POLLIN)
    return new


def load():
    """The board for the port we run on."""
    if sys.platform == "esp32":
        from boards.esp32 import Board
    else:
        from boards.sim import Board
    return Board()
