# Console log lines: "<level> <tag>: <message>", one per line, so a serial
# monitor can colour them by level. Never pass personal data (identifiers,
# names, raw codes) to these functions.
# Heap: none beyond the formatted line.


def _emit(level, tag, msg):
    print(level, tag + ":", msg)


def info(tag, msg):
    _emit("I", tag, msg)


def warn(tag, msg):
    _emit("W", tag, msg)


def error(tag, msg):
    _emit("E", tag, msg)
