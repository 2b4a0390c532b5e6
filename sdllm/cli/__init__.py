"""The command-line layer: the only code that parses arguments or prints reports (one module per
command). `guarded` is what every command does with a user-facing error or a signal: one line,
no traceback.

A command module imports nothing heavy at its top (numpy, torch, Lava are imported inside the
guarded body), so that its signal handling is in place before any slow import starts.
"""

import atexit
import os
import signal
import sys

from sdllm.errors import SdllmError
from sdllm.interrupts import SIGNALS, install, received, uninstall


def guarded(prog: str, body, process: bool = False) -> int:
    """Run body() with SIGINT, SIGTERM and SIGHUP turned into `Interrupted`: SdllmError -> 'prog:
    error: ...' and exit code 2; a signal -> one line and exit code 128 + its number.

    process: the command is this whole process (its console script called main() without
    arguments): then it also ends the process. Python's shutdown restores the default signal
    handling a second before the process is gone (while it tears down torch, numba, Lava), where a
    signal would end it silently; so the atexit functions run here, a signal meanwhile still
    ending it with its one line and 128 + its number, and the process then exits at once."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    install()
    try:
        code = _outcome(prog, body)
    finally:
        for s, handler in previous.items():
            if not process and handler is not None:
                signal.signal(s, handler)
            elif process and handler is not signal.SIG_IGN:
                signal.signal(s, _ignore if received() else lambda signum, _frame: _exit(prog, 128 + signum, signum))
        uninstall()
    if process:
        atexit._run_exitfuncs()
        _exit(prog, code)
    return code


def _outcome(prog: str, body) -> int:
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


def _ignore(_signum, _frame) -> None:
    pass


def _exit(prog: str, code: int, signum: int | None = None) -> None:
    """Flush what was printed, say why if a signal ends it, and end the process now."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if signum is not None:
        _interrupted(prog, signum)
    os._exit(code)


def _interrupted(prog: str, signum: int) -> int:
    _say(f"{prog}: interrupted ({signal.Signals(signum).name}); nothing half-written is left, no process left running")
    return 128 + signum


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP)
        pass
