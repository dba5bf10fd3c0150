"""The one error type kioskctl shows: something a technician can fix, said in one line."""

from __future__ import annotations


class Failure(Exception):
    """A technician-caused or field failure: printed as one line, exit status 1.

    The message says what is wrong and, where it can, what to do about it. It
    never carries a secret (passwords, keys) or personal data.
    """
