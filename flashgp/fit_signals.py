# SIGTERM during fg.fit(..., checkpoint=PATH) handled like Ctrl-C: schedulers, `timeout` and
# `docker stop` send SIGTERM, and the default action would end the process without saving. While a
# checkpointed fit runs (in the main thread), SIGTERM raises Terminated (a KeyboardInterrupt) in it;
# fit goes back to the last completed step, writes it and raises FitInterrupted, as for Ctrl-C.
from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM received during a checkpointed fit (``signum``: the signal's number); fit turns
    it into ``flashgp.errors.FitInterrupted`` once the checkpoint is written."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum

    def __reduce__(self):
        return type(self), (self.signum,)


class TerminationHandler:
    """A context manager that makes SIGTERM raise ``Terminated`` while it is active.

    It installs a handler only when ``active``, in the main thread (the only one Python delivers
    signals to), and when the current handler is Python's default or a Python function: an
    ignored SIGTERM stays ignored, and a handler installed from C (which Python cannot restore)
    is left alone. The first SIGTERM raises; later ones are dropped (the checkpoint is being
    written). On exit the previous handler is back. ``forward()`` then calls a previous Python
    handler with the signal, as if it had been delivered to it (it may raise, e.g. SystemExit).
    """

    def __init__(self, active: bool = True):
        self.active = active
        self.installed = False
        self.previous = None
        self.received: int | None = None

    def __enter__(self) -> TerminationHandler:
        if not self.active or threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None or previous is signal.SIG_IGN:
            return self
        self.previous = previous
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            return
        self.received = signum
        raise Terminated(signum)

    def __exit__(self, *exc) -> bool:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)
            self.installed = False
        return False

    def forward(self) -> None:
        """Give a received SIGTERM to the previous handler when that is a Python function
        (call after ``__exit__``); nothing for the default action or when none was received."""
        if self.received is not None and callable(self.previous) and self.previous not in (
                signal.SIG_DFL, signal.SIG_IGN):
            self.previous(self.received, None)
