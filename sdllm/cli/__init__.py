"""The command-line layer: the only code that parses arguments or prints reports (one module per
command). `guarded` is what every command does with a user-facing error or a signal: one line,
no traceback.

A command module imports nothing heavy at its top (numpy, torch, Lava are imported inside the
guarded body), so that its signal handling is in place before any slow import starts.
"""

import signal
import sys

from sdllm.errors import SdllmError
from sdllm.interrupts import SIGNALS, install, received, uninstall


def guarded(prog: str, body) -> int:
    """Run body() with SIGINT, SIGTERM and SIGHUP turned into `Interrupted`: SdllmError -> 'prog:
    error: ...' and exit code 2; a signal -> one line and exit code 128 + its number."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    install()
    try:
        code = body() or 0
        if received() is None:
            return code
        return _interrupted(prog, received())  # the signal came as the body ended
    except BaseException as e:
        signum = received() or (signal.SIGINT if isinstance(e, KeyboardInterrupt) else None)
        if signum is not None:
            return _interrupted(prog, signum)
        if isinstance(e, SdllmError):
            _say(f"{prog}: error: {e}")
            return 2
        raise
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
        uninstall()


def _interrupted(prog: str, signum: int) -> int:
    _say(f"{prog}: interrupted ({signal.Signals(signum).name}); nothing half-written is left, no process left running")
    return 128 + signum


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP)
        pass
