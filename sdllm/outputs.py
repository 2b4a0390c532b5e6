"""Where the tools write. An output path is checked before any work is done on it (its directory
exists and takes new files), and a directory is put in place in one atomic step.

`swap_in` uses Linux's renameat2(RENAME_EXCHANGE): the new directory and the old one trade
names in one step, so the target never goes missing and a concurrent writer never finds it
half-replaced. Where the kernel or file system cannot exchange, it falls back to two renames;
callers hold `locked(parent)` so that two sdllm processes never interleave them.
"""

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import signal
import tempfile
from contextlib import contextmanager

from sdllm import interrupts
from sdllm.errors import SdllmError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def check_directory(path: str, flag: str = "") -> str:
    """The directory an output path goes into: it must exist and take new files; else one line."""
    _check_path(path, flag)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SdllmError(f"{_name(path, flag)}: cannot write: directory {directory} does not exist")
    _check_takes_files(directory, path, flag)
    return directory


def _check_path(path, flag: str) -> None:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path) or "\0" in os.fspath(path):
        raise SdllmError(f"{flag or 'output'}: expected a path (a non-empty string), got {repr(path)[:80]}")


def _check_takes_files(directory: str, path: str, flag: str) -> None:
    """That a file can be created in directory, found by creating one: an unnamed O_TMPFILE where
    the file system has them (nothing ever appears), else a named one removed at once (signals
    held meanwhile). Write permission alone says nothing on /proc, a read-only mount or a full
    quota."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SdllmError(f"{_name(path, flag)}: cannot write: directory {directory} is read-only for this user")
    try:
        os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
        return
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise SdllmError(f"{_name(path, flag)}: cannot write: directory {directory} takes no new files "
                             f"({e.strerror})") from None
    with interrupts.deferred():
        try:
            fd, probe = tempfile.mkstemp(prefix=".sdllm-probe-", dir=directory)
        except OSError as e:
            raise SdllmError(f"{_name(path, flag)}: cannot write: directory {directory} takes no new files "
                             f"({e.strerror})") from None
        os.close(fd)
        os.unlink(probe)


def check_file(path: str, flag: str = "") -> str:
    """An output file: its directory takes new files and the path is not a directory."""
    directory = check_directory(path, flag)
    if os.path.isdir(path):
        raise SdllmError(f"{_name(path, flag)}: cannot write: it is a directory")
    return directory


def check_report_directory(path: str, flag: str = "") -> str:
    """A directory files are written into, created if missing: an existing one must take new
    files, a missing one's parent must; a file there is refused."""
    _check_path(path, flag)
    if os.path.isdir(path):
        _check_takes_files(path, path, flag)
        return path
    if os.path.lexists(path):
        raise SdllmError(f"{_name(path, flag)}: cannot write: it exists and is not a directory")
    check_directory(path, flag)
    return path


def make_report_directory(path: str, flag: str = "") -> str:
    """`check_report_directory`, then the directory created if it is missing."""
    check_report_directory(path, flag)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise SdllmError(f"{_name(path, flag)}: cannot create it ({e.strerror})") from None
    return path


def _name(path: str, flag: str) -> str:
    return f"{flag} {path}" if flag else path


@contextmanager
def removed_if_this_process_dies(path: str):
    """Over the block, `path` (a temporary file or directory of this process's) is removed should
    this process die — also by a signal whose default action ends it at once (a user's script),
    where no `finally` runs: a forked watcher waits on a pipe only this process holds, and at its
    end of file, nobody having said the block ended, removes the path."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        _watch(read_end, path)
    os.close(read_end)
    try:
        yield
    finally:
        os.write(write_end, b"done")
        os.close(write_end)
        os.waitpid(pid, 0)


def _watch(read_end: int, path: str) -> None:
    """The watcher (never returns): nothing of its parent's kept open but its end of the pipe;
    deaf to the signals that end its parent's process group."""
    try:
        os.closerange(3, read_end)
        os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
        for s in interrupts.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if os.read(read_end, 1) == b"":
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
    finally:
        os._exit(0)


def write_file(data: bytes, path: str, flag: str = "") -> None:
    """Atomically: a temporary file beside `path` (created with the umask's mode), then one
    rename; an error or a signal never leaves a half-written file at `path` nor the temporary."""
    directory = check_file(path, flag)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with removed_if_this_process_dies(tmp):
        _write_file(data, path, tmp, flag)


def _write_file(data: bytes, path: str, tmp: str, flag: str) -> None:
    fd = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise SdllmError(f"{_name(path, flag)}: cannot write ({e.strerror})") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _renameat2(src: str, dst: str, flags: int) -> int:
    """0, or the errno of renameat2(2) (ENOSYS where the C library has none)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return errno.ENOSYS
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return 0
    return ctypes.get_errno()


def swap_in(new: str, target: str) -> str | None:
    """Put directory `new` at `target`; returns where the previous target now is (for the caller
    to remove), or None when there was none."""
    err = _renameat2(new, target, _RENAME_EXCHANGE)
    if err == 0:
        return new
    if err == errno.ENOENT and not os.path.lexists(target):
        os.rename(new, target)
        return None
    if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        raise OSError(err, os.strerror(err), target)
    old = None
    if os.path.lexists(target):
        old = f"{new}.old"
        os.rename(target, old)
    os.rename(new, target)
    return old


@contextmanager
def locked(directory: str):
    """An exclusive lock on a directory (flock on the directory itself: nothing is left behind)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
