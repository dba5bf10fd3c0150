# The kiosk application: hardware-free logic. Nothing in this package imports
# `machine`; everything physical comes in through a board object (boards/).

import sys


def unload(*names):
    """Forget modules of this package used only now and then (boot, a command,
    a fleet document), so the garbage collector can free their code: on the
    unix port, and for .mpy files on a device, bytecode lives on the heap (only
    frozen modules stay in flash). The next import loads them again. Call it
    where nothing holds the module any more (no `from kiosk import x` at the
    top of a module that stays). CPython keeps them: host tests hold and patch
    modules, and its heap is not the device's."""
    if sys.implementation.name != "micropython":
        return
    pkg = sys.modules.get("kiosk")
    for name in names:
        sys.modules.pop("kiosk." + name, None)
        try:
            delattr(pkg, name)  # `from kiosk import x` set it on the package
        except (AttributeError, KeyError):  # MicroPython: KeyError when not set
            pass
