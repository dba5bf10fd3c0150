# Freeze or install the kiosk firmware: `mpy-cross`/`mip`/freezing all read this.
metadata(version="0.2.0", description="QR check-in kiosk firmware")

module("main.py")
package("kiosk")
package("boards")
