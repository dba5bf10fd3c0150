# Firmware version, sent in every check-in and shown at boot.
VERSION = "0.1.0"
