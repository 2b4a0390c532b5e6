"""A computation the input decides the cost of (a model's own chat template), run in a forked child
within a budget of time, memory and result size: past any of them it is one `SdllmError` line, and
this process's memory, time and state are untouched whatever the input does.

The child has its address space capped (RLIMIT_AS: what it has at the fork plus the budget), no
core dumps, a CPU-time limit and a parent-death signal (it never outlives the caller, also when
a signal ends the caller at once); the caller waits for its answer until the deadline, then ends
it. The answer comes back pickled through a pipe (our own child's: trusted), cut at max_bytes.
"""

import ctypes
import math
import os
import pickle
import resource
import select
import signal
import sys
import time

from sdllm.errors import SdllmError

_PR_SET_PDEATHSIG = 1


def run(fn, what: str, time_s: float, memory_bytes: int, max_bytes: int):
    """fn() in a child: its result, or its SdllmError, as here; any other exception of it as one
    line `what: <type>: <message>`; past the budget one line saying which."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(fn, what, time_s, memory_bytes, write_end)
    os.close(write_end)
    try:
        data, finished = _read(read_end, time.monotonic() + time_s, max_bytes)
    except BaseException:
        finished = False
        raise
    finally:
        os.close(read_end)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not finished:
        if len(data) > max_bytes:
            raise SdllmError(f"{what}: its result is larger than {max_bytes:,} bytes")
        raise SdllmError(f"{what}: takes longer than {time_s:g} s")
    try:
        kind, value = pickle.loads(data)  # noqa: S301 — written by our own child
    except Exception:  # noqa: BLE001 — the child died before it answered (killed: out of CPU time, say)
        raise SdllmError(f"{what}: ended without an answer (out of its {time_s:g} s or "
                         f"{memory_bytes / (1 << 30):g} GiB of memory)") from None
    if kind == "error":
        raise SdllmError(value)
    return value


def _child(fn, what, time_s, memory_bytes, write_end) -> None:
    code = 0
    try:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = math.ceil(time_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        address_space = _address_space() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        try:
            answer = ("value", fn())
        except SdllmError as e:
            answer = ("error", _line(str(e)))
        except MemoryError:
            answer = ("error", f"{what}: needs more than {memory_bytes / (1 << 30):g} GiB of memory")
        except RecursionError:
            answer = ("error", f"{what}: recursion deeper than {sys.getrecursionlimit():,} calls")
        except Exception as e:  # noqa: BLE001 — whatever the input made it raise: one line
            answer = ("error", _line(f"{what}: {type(e).__name__}: {e}"))
        data = pickle.dumps(answer)
        with os.fdopen(write_end, "wb") as f:
            f.write(data)
    except BaseException:  # noqa: BLE001 — nothing of the child's may reach the caller's code
        code = 1
    finally:
        os._exit(code)


def _line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _read(fd: int, deadline: float, max_bytes: int):
    """(bytes, whether the writer finished) — stops at the deadline or past max_bytes."""
    chunks, size = [], 0
    while size <= max_bytes:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), False
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False

