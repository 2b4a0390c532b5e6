"""Ending on a signal: SIGINT (Ctrl-C), SIGTERM (`kill`) and SIGHUP (a closed terminal) become an
`Interrupted` exception in the main thread, so that every `finally` and `with` on the way out
runs — Lava stopped, its workers reaped, temporary files removed — and the command exits with
128 + the signal's number.

The first signal interrupts; later ones are ignored while that cleanup runs (it is bounded).
Python drops an exception raised inside a finalizer or a C callback (numba's compiler calls back
into Python): an `Interrupted` dropped that way is raised again as soon as control is back in
Python code, and once a signal has interrupted, what half-built objects say as they are collected
is not reported (the command has said in one line why it ended).
`deferred()` holds signals back over a step that must not be cut in two (starting Lava's
workers, swapping a build into place) and raises the first one after it.
"""

import signal
import sys
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


def _unraisable(report) -> None:
    if isinstance(report.exc_value, Interrupted) and threading.current_thread() is threading.main_thread():
        _dropped.append(report.exc_value.signum)
        signal.signal(report.exc_value.signum, _interrupt)
        signal.signal(signal.SIGALRM, _deliver_dropped)
        signal.setitimer(signal.ITIMER_REAL, _REDELIVERY_S)
    elif not _received:
        _reports[-1](report)


def _deliver_dropped(_alarm, frame):
    if frame is not None and frame.f_code is _unraisable.__code__:  # not yet back where it was dropped
        signal.setitimer(signal.ITIMER_REAL, _REDELIVERY_S)
        return
    if not _dropped:
        return
    signum = _dropped.pop()
    handler = signal.getsignal(signum)  # inside `deferred()`, the one that notes it
    if callable(handler):
        handler(signum, frame)


_REDELIVERY_S = 0.001
_dropped = []  # the signal whose `Interrupted` Python dropped, until it is raised again
_reports = []  # the hooks that reported dropped exceptions before each `install`


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise `Interrupted` (main thread only). A signal this
    process was started with ignored (`nohup`, a background job's SIGINT) stays ignored."""
    _received.clear()
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _interrupt)
    if sys.unraisablehook is not _unraisable:
        _reports.append(sys.unraisablehook)
        sys.unraisablehook = _unraisable


def uninstall() -> None:
    """No dropped signal is raised again after this; dropped exceptions are reported as before
    `install` unless a signal interrupted (signal handlers are the caller's to restore)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    _dropped.clear()
    if signal.getsignal(signal.SIGALRM) is _deliver_dropped:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if sys.unraisablehook is _unraisable and not _received:
        sys.unraisablehook = _reports.pop()


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
