"""Test helpers shared by several test modules."""

import hashlib
import os


def snapshot(root, times: bool = True) -> dict:
    """Everything under root: path -> file size, time (unless not asked) and digest, link target or 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = "-> " + os.readlink(full)
            elif os.path.isdir(full):
                out[rel] = "dir"
            else:
                st = os.stat(full)
                with open(full, "rb") as f:  # the digest of at most 64 MiB, with size and time for the rest
                    out[rel] = (st.st_size, st.st_mtime_ns if times else 0, hashlib.sha256(f.read(1 << 26)).hexdigest())
    return out


def write_hw(tmp_path, name="tight", chip=None, chips=None, **core_overrides):
    """A copy of loihi2.yaml with some core limits changed (a test target, not a real chip)."""
    import yaml

    from sdllm.formats.hw import resolve

    with open(resolve("loihi2")) as f:
        raw = yaml.safe_load(f)
    raw["name"] = name
    raw["core"].update(core_overrides)
    raw["chip"].update(chip or {})
    if chips is not None:
        raw["system"]["chips"] = chips
    path = os.path.join(tmp_path, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def compile_split(model, tmp_path, **hw_overrides):
    """Compile with tiny per-core limits so that stages split into fan-in tiles with reduce cores
    and fan-out tiles, KV stages by heads, and neuron units span several cores."""
    from sdllm.compiler import pipeline

    hw = write_hw(tmp_path, max_input_axons=24, synapse_memory_bits=8000, **hw_overrides)
    return pipeline.compile_model(model, hw)


# a user's script, run as one: its processes, shared memory and temporary files ---------------------

MARKER = "SDLLM_TEST_SCRIPT"  # in the environment of a script's processes (its children inherit it)


def default_signals():
    """As a terminal's foreground process has them (pytest's own handlers are not the user's)."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def start_script(code: str, tmp, *args):
    """A small Python script as a user would run it: its own session, Python's default signal
    handling, TMPDIR and a marker that every process it starts inherits (tmp: a private folder)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals,
                            env={**os.environ, "TMPDIR": str(tmp), MARKER: str(tmp)})


def marked_processes(tmp) -> list:
    """Pids of the live processes carrying the marker of the script run with this tmp (orphans
    reparented to init included; zombies not)."""
    needle = f"{MARKER}={tmp}".encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        out.append(int(pid))
    return out


def shared_memory(pids) -> set:
    """The POSIX shared-memory segments the processes have mapped."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                out |= {line.split("/dev/shm/")[1].split()[0] for line in f if "/dev/shm/psm_" in line}
        except OSError:
            pass
    return out


def wait_for(condition, timeout_s: float, step_s: float = 0.05) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True


def kill_marked(tmp) -> None:
    """What a failed test leaves: ended, so that it does not outlive the test."""
    import signal

    for pid in marked_processes(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def leaves_nothing(tmp, segments=(), timeout_s: float = 30) -> None:
    """No process of the script left (within timeout_s), none of the segments it mapped left in
    /dev/shm, nothing left in its TMPDIR. Whatever is left is then removed, so that a failing
    test does not leave it to the next."""
    try:
        assert wait_for(lambda: not marked_processes(tmp), timeout_s), [
            open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:100] for p in marked_processes(tmp)]
        left = [s for s in segments if os.path.exists(f"/dev/shm/{s}")]
        assert not left, f"{len(left)} of {len(segments)} shared-memory segments left"
        assert os.listdir(tmp) == []
    finally:
        segments = set(segments) | shared_memory(marked_processes(tmp))  # also those of a run that hung
        kill_marked(tmp)
        for s in segments:
            if os.path.exists(f"/dev/shm/{s}"):
                os.unlink(f"/dev/shm/{s}")
