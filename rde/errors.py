"""The project's error type for bad input and configuration.

:class:`InputError` marks what the user can fix: an unreadable file, a bad value, a preset or checkpoint that does
not fit. It is a ``ValueError``, so ``except ValueError`` keeps working. The ``cartoonx`` command prints these (and
``FileNotFoundError``) in one line with exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or configuration; the message names the file or value at fault and how to fix it."""
