"""The technicians' command line (`kioskctl`): find ports, and later flash, provision, deploy."""

__version__ = "0.2.0"
