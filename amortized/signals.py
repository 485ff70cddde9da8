"""Stop a long job cleanly on SIGTERM or SIGINT: the signal becomes an exception, never in the middle of a write.

Lightning's own SIGTERM handler only sets a flag that its predict loop never reads, and its Ctrl-C
handling exits with code 1. :class:`StopOnSignals` turns either signal into :class:`Stopped` in the main
thread, so ``finally`` blocks and Lightning's ``on_exception`` hooks run; code that must not be cut
(writing a shard) runs inside :meth:`StopOnSignals.critical`, which defers the signal to its end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop requested by a signal. A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception``
    does not swallow it. ``exit_code`` is the shell's 128 + signal number (143 SIGTERM, 130 SIGINT)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        self.summary: Any = None  # what the interrupted job finished, if it reports that
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignals:
    """Context manager that raises :class:`Stopped` on SIGTERM/SIGINT (main thread only; elsewhere it
    does nothing). Signals after the first are only noted, so clean-up is not cut short."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None
        self._raised = False
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        self.raise_if_stopped()

    def raise_if_stopped(self) -> None:
        """Raise :class:`Stopped` once, if a signal arrived and no critical section is open."""
        if self.received is not None and not self._raised and self._depth == 0:
            self._raised = True
            raise Stopped(self.received)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block a signal must not cut: a signal arriving inside raises when the block ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.raise_if_stopped()
