"""Ending on a signal: SIGINT (Ctrl-C), SIGTERM (`kill`) and SIGHUP (a closed terminal) become an
`Interrupted` exception in the main thread, so that every `finally` and `with` on the way out
runs — Lava stopped, its workers reaped, temporary files removed — and the command exits with
128 + the signal's number.

The first signal interrupts; later ones are ignored while that cleanup runs (it is bounded).
`deferred()` holds signals back over a step that must not be cut in two (starting Lava's
workers, swapping a build into place) and raises the first one after it.
"""

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received = []  # signals that interrupted this process since `install`


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to end."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, _frame):
    _received.append(signum)
    for s in SIGNALS:
        if signal.getsignal(s) is _interrupt:
            signal.signal(s, _ignore)
    raise Interrupted(signum)


def _ignore(_signum, _frame):
    pass


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise `Interrupted` (main thread only). A signal this
    process was started with ignored (`nohup`, a background job's SIGINT) stays ignored."""
    _received.clear()
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _interrupt)


def received() -> int | None:
    """The signal that interrupted this process, if one did: whatever exception it became on its
    way out (C code importing numpy or torch replaces it with an ImportError of its own)."""
    return _received[0] if _received else None


@contextmanager
def deferred():
    """Signals that would interrupt are only noted inside the block and raised once it is over.
    Processes forked inside the block inherit the noting handler: for them those signals do
    nothing (their parent ends them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    previous = {}
    for s in SIGNALS:
        handler = signal.getsignal(s)
        if handler is _interrupt or handler is signal.default_int_handler:
            previous[s] = signal.signal(s, lambda signum, _frame: noted.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if noted:
            previous[noted[0]](noted[0], None)
