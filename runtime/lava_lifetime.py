"""How a Lava run of sdllm's Processes ends — on success, on a worker's failure, on `stop`, or when
the process that runs it dies — with nothing left behind: no process, no shared-memory segment
(/dev/shm/psm_*), no temporary folder. For `sdllm-run --backend lava`, `Build.run(backend="lava")`
and the `SDLLM` Process alike.

- A worker's failure: the worker raises its error as one line (`cores.WorkerError`, after its
  step's messages are settled), Lava's `SystemProcess` sends it back through its pipe, and Lava's
  runtime ends the run with a RuntimeError; `failures` turns that into `SdllmError("Lava run
  failed: <the worker's line>")` and ends what is left. Anything else (the user's own exception
  in a callback) passes through as itself.
- A process lost mid-run (killed by a signal, the OOM killer's SIGKILL say) reports nothing, and
  the others would wait for it at the step's barrier for ever: `watch`, before each wait for a
  run and while a run pauses (`pause`), raises it as one SdllmError line, and `stop` ends the rest
  without asking Lava.
- `stop`: Lava's stop gets STOP_GRACE_S; then its workers are ended, its shared-memory manager is
  shut down (which unlinks the segments) and the runtime is marked stopped, so a later `stop`
  (Lava's own, from a finalizer) does not wait for replies from processes that have ended.
- The death of the process that runs it, even by a signal whose default action ends it at once
  (a user's script has Python's default SIGTERM and SIGHUP): every process Lava forks while it
  starts a runtime holding sdllm's Processes gets a parent-death signal (prctl
  PR_SET_PDEATHSIG, and a watcher thread that sends it to the main thread, where Python handles
  signals) and leaves, through Python's exit (multiprocessing's finalizers remove the
  shared-memory manager's socket folder), once its parent has gone; before that, SIGINT, SIGTERM
  and SIGHUP do nothing to it (its parent ends it, in order). multiprocessing's resource tracker,
  started first and with SIGHUP blocked, outlives them all and unlinks the segments they held.
"""

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing import resource_tracker

from sdllm.errors import SdllmError
from sdllm.runtime.lava_procs.cores import GroupProcess, WorkerError

STOP_GRACE_S = 10.0  # how long Lava may take to stop before its processes are ended
WATCH_MAX_S = 0.05  # the longest pause between two looks at a waiting run's processes
ORPHAN_EXIT_S = 5  # how long an orphaned process's exit may take before SIGALRM ends it
ORPHAN_POLL_S = 0.1  # how often a forked process's watcher looks for its parent
_PR_SET_PDEATHSIG = 1
_LEAVE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def start_resource_tracker() -> None:
    """multiprocessing's resource tracker (it unlinks the shared memory of processes that die)
    ignores SIGINT and SIGTERM but not SIGHUP; started here with SIGHUP blocked, it outlives a
    terminal's hang-up to the process group until every process that used it has gone."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


# processes die with their parent ------------------------------------------------------------------

_forking_pid = os.getpid()


def _note_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _forked_for_sdllm() -> bool:
    """Whether this fork is Lava's runtime starting a network that holds sdllm's Processes (its
    shared-memory manager, workers and runtime services are all forked in `Runtime.initialize`)."""
    frame = sys._getframe(1)
    while frame is not None:
        executable = getattr(frame.f_locals.get("self"), "_executable", None)
        if frame.f_code.co_name == "initialize" and executable is not None:
            return any(isinstance(p, GroupProcess) for p in getattr(executable, "process_list", ()))
        frame = frame.f_back
    return False


def _leave_if_orphaned(signum, _frame) -> None:
    if os.getppid() != _forking_pid:
        # the user's script has ended: what its orphan prints on the way out (the exit met inside a
        # JIT compiler's callback is reported as "Exception ignored", with a traceback) is not theirs
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        # should the exit be caught on its way out (a worker's loop that catches everything), the
        # alarm's default action still ends the process: an orphan never outlives its parent long
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(ORPHAN_EXIT_S)
        raise SystemExit(128 + signum)


def _signal_main_thread_once_orphaned(main_thread: int) -> None:
    """The parent-death signal goes to whichever thread does not have a signal pending; Python runs
    handlers in the main thread only, so one that lands on a port's thread while the main thread
    waits on a lock would never be handled. This sends it to the main thread itself."""
    while os.getppid() == _forking_pid:
        time.sleep(ORPHAN_POLL_S)
    signal.pthread_kill(main_thread, signal.SIGTERM)


def _die_with_parent() -> None:
    if not _forked_for_sdllm():
        return
    for s in _LEAVE_SIGNALS:
        signal.signal(s, _leave_if_orphaned)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != _forking_pid:  # the parent died before the death signal was asked for
        os._exit(128 + signal.SIGTERM)
    threading.Thread(target=_signal_main_thread_once_orphaned, args=(threading.get_ident(),), daemon=True,
                     name="sdllm-orphan-watch").start()


os.register_at_fork(before=_note_forking_pid, after_in_child=_die_with_parent)


# a worker's failure -------------------------------------------------------------------------------

def _infrastructure(process):
    return getattr(getattr(process, "runtime", None), "_messaging_infrastructure", None)


def worker_failure(process) -> str | None:
    """The first failed worker's error line, if a worker of the process's run has failed."""
    for actor in getattr(_infrastructure(process), "actors", ()):
        try:
            reported = actor.exception  # (exception, traceback), sent by Lava's SystemProcess
        except (OSError, EOFError):
            continue
        if reported:
            e = reported[0]
            return str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


@contextlib.contextmanager
def failures(process):
    """Around Lava's run, wait and pause: a worker's failure (reported now, or already while the
    run went on, its workers ended) is raised as one SdllmError line; the caller then `stop`s."""
    if _ended_by_failure(process):
        raise SdllmError(f"Lava run failed: {worker_failure(process)}")
    try:
        yield
    except RuntimeError:
        line = worker_failure(process)
        if line is None:
            raise
        raise SdllmError(f"Lava run failed: {line}") from None


def _lost(process) -> str | None:
    """How the first of the run's processes that ended without reporting an error (killed by a
    signal — the OOM killer's SIGKILL, say — or exited with a code) ended, if one has."""
    for actor in getattr(_infrastructure(process), "actors", ()):
        try:
            code = actor.exitcode
        except ValueError:  # closed: Lava has joined it
            continue
        if code:
            how = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit code {code}"
            return f"a Lava process (pid {actor.pid}) ended by {how} mid-run"
    return None


def check_lost(process) -> None:
    """Raise a process of the run lost mid-run as one SdllmError line (see `watch`)."""
    line = _lost(process)
    if line is not None:
        raise SdllmError(f"Lava run failed: {line}")


def watch(process) -> None:
    """Return once the run under way has replied (Lava's wait then takes the reply at once), with
    its processes watched meanwhile: one that ends without reporting an error would leave the
    others waiting at the step's barrier for ever (Lava waits for its reply); it is raised as one
    SdllmError line instead (the caller then `stop`s, which ends the rest). The reply is polled for,
    backing off to WATCH_MAX_S, in this thread: a signal interrupts the wait as it did Lava's."""
    replies = getattr(getattr(process, "runtime", None), "service_to_runtime", ())
    _watched(process, lambda: all(port.probe() for port in replies))


def _watched(process, ready) -> None:
    pause = 0.001
    while not ready():
        check_lost(process)
        time.sleep(pause)
        pause = min(2 * pause, WATCH_MAX_S)


def pause(process) -> None:
    """Lava's pause (`Runtime.pause`: a PAUSE command to each runtime service, then their replies),
    its waits watched as `watch` watches a run's: a process lost before or while the run pauses is
    one SdllmError line, never a wait for ever."""
    from lava.magma.runtime.mgmt_token_enums import MGMT_COMMAND, MGMT_RESPONSE, enum_equal

    runtime = getattr(process, "runtime", None)
    if runtime is None or not runtime._is_running:
        return
    check_lost(process)
    for port in runtime.runtime_to_service:
        port.send(MGMT_COMMAND.PAUSE)
    for port in runtime.service_to_runtime:
        _watched(process, port.probe)
        reply = port.recv()
        if enum_equal(reply, MGMT_RESPONSE.ERROR):
            raise RuntimeError("Lava's pause: a process reported an error")  # `failures` reads the worker's line
        if not enum_equal(reply, MGMT_RESPONSE.PAUSED):  # a run that ended as it paused replies DONE first
            _watched(process, port.probe)
            reply = port.recv()
            if not enum_equal(reply, MGMT_RESPONSE.PAUSED):
                raise RuntimeError(f"Lava's pause: {reply} is not the reply to a pause")
    runtime._is_running = False


def _ended_by_failure(process) -> bool:
    actors = list(getattr(_infrastructure(process), "actors", ()))
    return bool(actors) and not any(_alive(a) for a in actors) and worker_failure(process) is not None


# stopping ---------------------------------------------------------------------------------------

def stop(process, children_before=()) -> None:
    """Stop Lava. If it does not stop within STOP_GRACE_S (a run interrupted as it starts can leave a
    worker waiting for a command that never comes), end its workers; where every worker has
    ended already (a failed run, whose runtime would wait for their replies) Lava's stop is not
    asked at all. Then make sure its shared-memory manager is shut down, which unlinks the
    segments, end any process it left (those of multiprocessing's children not among
    children_before) and mark its runtime stopped."""
    runtime = getattr(process, "runtime", None)
    if runtime is None:  # never started: Lava has forked nothing
        return
    infra = _infrastructure(process)
    actors = list(getattr(infra, "actors", ()))
    if _lost(process) is not None:  # Lava's stop would wait for the lost process's reply
        _end([a for a in actors if _alive(a)])
    elif not actors or any(_alive(a) for a in actors):
        stopper = threading.Thread(target=_quiet_stop, args=(process,), daemon=True)
        stopper.start()
        deadline = time.monotonic() + STOP_GRACE_S
        while stopper.is_alive() and time.monotonic() < deadline:
            stopper.join(0.2)
            if actors and not any(_alive(a) for a in actors):
                stopper.join(3.0)  # every worker has ended meanwhile: Lava may wait for replies that never come
                break
        if stopper.is_alive():
            _end([a for a in actors if _alive(a)])
    if getattr(infra, "smm", None) is not None:
        try:  # a no-op where Lava's own stop got this far; where it did not, this unlinks the segments
            infra.smm.shutdown()
        except Exception:  # noqa: BLE001 — the manager is gone: nothing to unlink through it
            pass
    _end([p for p in multiprocessing.active_children() if p not in children_before])
    if runtime is not None:
        runtime._is_started = runtime._is_running = False


def _alive(process) -> bool:
    try:
        return process.is_alive()
    except ValueError:  # closed: Lava has joined it
        return False


def _end(processes: list) -> None:
    """SIGTERM, then SIGKILL to those still there a moment later (workers ignore the signals while
    their parent lives). Process.join itself: Lava's actors override it without a timeout."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + 2.0
    for p in processes:
        multiprocessing.Process.join(p, max(deadline - time.monotonic(), 0.0))
    for p in processes:
        if p.is_alive():
            p.kill()
            multiprocessing.Process.join(p)


def _quiet_stop(process) -> None:
    try:
        process.runtime.stop()
    except Exception:  # noqa: BLE001 — a failed stop is handled by ending the processes
        pass
