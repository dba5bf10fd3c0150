# Entry point on the device (and on the MicroPython unix port in the simulator).
# ctrl-C (kioskctl, mpremote): the app stops for maintenance and returns, the
# board feeding the watchdog for a while (kiosk/health.py); the REPL runs next.
from boards import load
from kiosk import app

app.main(load())
