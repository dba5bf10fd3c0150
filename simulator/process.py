"""Child processes that never outlive the process that started them.

Written here because neither subprocess nor a maintained library offers it:
on Linux, prctl(PR_SET_PDEATHSIG) makes the kernel send the child SIGTERM
when its parent dies, even by SIGKILL, so a killed demo or test run cannot
leave brokers, services or kiosks behind. Elsewhere this does nothing.

The kernel sends the signal when the *thread* that started the child exits,
so start long-lived processes from the main thread (all callers here do).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for subprocess.Popen: SIGTERM this child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
