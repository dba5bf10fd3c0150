# Entry point on the device (and on the MicroPython unix port in the simulator).
from boards import load
from kiosk import app

app.main(load())
