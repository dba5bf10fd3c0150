# Firmware version, sent in every check-in and shown at boot.
VERSION = "0.2.0"
