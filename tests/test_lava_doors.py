"""The library's Lava doors keep the commands' promises: `sdllm.SDLLM` and `Build.run(backend="lava")`,
run as a user's script runs them — with Python's default signal handling, in a process of its own.

A worker that fails ends the run with its error as one `SdllmError` line (it used to leave the
run waiting for ever); a token id on token_in the network cannot take is refused where it enters;
a script killed by SIGTERM or SIGHUP leaves no Lava process, no shared-memory segment and no
temporary folder (its workers used to live on under init, holding their segments); a Lava process
killed mid-run ends the run with one line (the others used to wait for it); the user's own
exception in a callback comes back as itself on every backend."""

import multiprocessing
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from helpers import leaves_nothing, marked_processes, shared_memory, snapshot, start_script, wait_for
from lava.magma.core.run_conditions import RunContinuous, RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io import source

import sdllm
from sdllm.errors import SdllmError

TOKEN_SCRIPT = """
import sys
import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io import sink, source
import sdllm

build, tag, position, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
net = sdllm.SDLLM(build=build, n_positions=3)
P = net.period
ids = np.full((1, 3 * P + 1), -1.0)
ids[0, 0] = 65
ids[0, position * P] = value
src = source.RingBuffer(data=ids if tag == "floating_pt" else ids.astype(np.int32))
out = sink.RingBuffer(shape=(1,), buffer=3 * P + 1)
src.s_out.connect(net.token_in)
net.token_out.connect(out.a_in)
try:
    net.run(condition=RunSteps(num_steps=3 * P + 1), run_cfg=Loihi2SimCfg(select_tag=tag))
    print("ran", out.data.get()[0, P::P].astype(int).tolist())
except sdllm.SdllmError as e:
    print(e)
finally:
    net.stop()
net.stop()  # a second stop, as a finally of the user's might: nothing to wait for
"""


@pytest.mark.parametrize("tag, position, value, shown", [
    ("fixed_pt", 1, 256, "256"),
    ("fixed_pt", 2, -2, "-2"),
    ("fixed_pt", 0, -1, "-1"),
    ("floating_pt", 1, 2.0 ** 32 + 65, "4,294,967,361"),
    ("floating_pt", 1, 65.5, "65.5"),
    ("floating_pt", 1, float("nan"), "nan"),
], ids=["past the vocabulary", "below -1", "none at position 0", "past the port's width", "not whole", "NaN"])
def test_a_token_id_the_process_cannot_take_ends_its_run_with_one_line(default_build, tmp_path, tag, position, value,
                                                                        shown):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = start_script(TOKEN_SCRIPT, tmp, default_build, tag, position, value)
    try:
        out, err = p.communicate(timeout=240)
    finally:
        leaves_nothing(tmp)
    assert p.returncode == 0 and err == "", err
    choice = "0..255" if position == 0 else "-1..255 (-1: the network's own choice)"
    assert out == f"Lava run failed: token_in: position {position}: a token id in {choice}, got {shown}\n"


def test_a_token_id_in_the_vocabulary_on_a_float_source_is_taken(default_build, tmp_path):
    """The check is no stricter than the tokens: 66.0 from a floating-point source is token 66."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    runs = {}
    for tag in ("fixed_pt", "floating_pt"):
        p = start_script(TOKEN_SCRIPT, tmp, default_build, tag, 1, 66)
        try:
            runs[tag], err = p.communicate(timeout=240)
        finally:
            leaves_nothing(tmp)
        assert p.returncode == 0 and err == "", err
    assert runs["fixed_pt"] == runs["floating_pt"] and runs["fixed_pt"].startswith("ran [")


@pytest.mark.parametrize("options, message", [
    ({"seed": 1.5}, "--seed: an integer in 0..2**63-1, got 1.5"),
    ({"temperature": "hot"}, "--temperature: a finite number >= 0 (0: greedy), got 'hot'"),
    ({"top_k": 2.0}, "--top-k: an integer >= 0 (0: no limit), got 2.0"),
    ({"granularity": "socket"}, "--granularity: one of auto, core, chip, got 'socket'"),
    ({"n_positions": "3"}, "n_positions: an integer in 1..128 (the model's context), got '3'"),
    ({"n_positions": 0}, "n_positions: an integer in 1..128 (the model's context), got 0"),
    ({"build": 123}, "build: a path (a string or os.PathLike), got 123"),
], ids=["seed", "temperature", "top_k", "granularity", "n_positions type", "n_positions range", "build"])
def test_a_bad_argument_of_the_process_is_one_line_as_it_is_made(default_build, tmp_path, options, message):
    """Refused in the constructor, in the user's process (a float seed used to fail in a worker,
    hanging the run; a bad granularity used to pass until Lava compiled the graph), and without a
    second traceback from the half-made Process's finalizer."""
    code = ("import sys, sdllm\n"
            "options = eval(sys.argv[2])\n"
            "options.setdefault('build', sys.argv[1])\n"
            "try:\n"
            "    sdllm.SDLLM(**options)\n"
            "except sdllm.SdllmError as e:\n"
            "    print(e)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = start_script(code, tmp, default_build, repr(options))
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0 and err == "", err
    assert out == message + "\n"


API_SCRIPT = """
import sys, sdllm
build = sdllm.load_build(sys.argv[1])
print("started", flush=True)
build.run("The if", 100, backend="lava")
"""

PROCESS_SCRIPT = """
import sys
import numpy as np
from lava.magma.core.run_conditions import RunContinuous, RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io import sink, source
import sdllm

net = sdllm.SDLLM(build=sys.argv[1], granularity=sys.argv[2])
ids = np.full((1, 1000), -1)
ids[0, 0] = 84
src = source.RingBuffer(data=ids)
out = sink.RingBuffer(shape=(1,), buffer=1000)
src.s_out.connect(net.token_in)
net.token_out.connect(out.a_in)
print("started", flush=True)
net.run(condition=RunContinuous(), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))  # runs until it is killed
net.wait()
"""


@pytest.mark.parametrize("door, sig, to_group", [
    ("api", signal.SIGTERM, False), ("api", signal.SIGHUP, False), ("api", signal.SIGHUP, True),
    ("process-core", signal.SIGTERM, False), ("process-chip", signal.SIGHUP, False),
    ("process-core", signal.SIGTERM, True), ("process-core", signal.SIGKILL, False),
], ids=["api-TERM", "api-HUP", "api-HUP-group", "process-TERM", "process-chip-HUP", "process-TERM-group",
        "process-KILL"])
def test_a_script_killed_mid_run_leaves_no_process_segment_or_temporary_folder(default_build, tmp_path, door, sig,
                                                                               to_group):
    """Python's default action for SIGTERM and SIGHUP ends the script at once: no finally of the
    library's runs. Lava's processes (workers, runtime service, shared-memory manager) leave when
    their parent has gone, the resource tracker unlinks their segments."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    if door == "api":
        p = start_script(API_SCRIPT, tmp, default_build)
    else:
        p = start_script(PROCESS_SCRIPT, tmp, default_build, door.split("-")[1])
    try:
        # Lava has started: its workers are at work on their shared-memory channels
        assert wait_for(lambda: len(marked_processes(tmp)) >= 4 and shared_memory(marked_processes(tmp)), 180), \
            p.communicate(timeout=5)
        segments = shared_memory(marked_processes(tmp))
        assert segments and p.poll() is None, p.communicate(timeout=5)
        (os.killpg if to_group else os.kill)(p.pid, sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == -sig and "Traceback" not in err, err
    finally:
        leaves_nothing(tmp, segments if "segments" in locals() else ())


class Mine(RuntimeError):
    """The user's own exception (a RuntimeError: Lava reports a failed worker as one)."""


@pytest.mark.parametrize("backend", ["lava", "lockstep", "fast"])
@pytest.mark.parametrize("callback", ["on_text", "on_token"])
def test_the_users_own_exception_in_a_callback_comes_back_as_itself(default_build, backend, callback):
    def raising(_):
        raise Mine("the user's own")

    build = sdllm.load_build(default_build)
    with pytest.raises(Mine, match="the user's own"):
        build.run("The if", 3, backend=backend, **{callback: raising})


def test_a_worker_failing_after_a_continuous_run_began_is_raised_by_pause_and_stop(default_build):
    """RunContinuous: the failure is met by the next pause (Lava's own pause waited for ever on
    the runtime service that had ended); a later stop neither waits nor raises it again."""
    net = sdllm.SDLLM(build=default_build, n_positions=4)
    ids = np.full((1, 8 * net.period), -1)
    ids[0, 0], ids[0, 2 * net.period] = 65, 999
    src = source.RingBuffer(data=ids)
    src.s_out.connect(net.token_in)
    net.run(condition=RunContinuous(), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    time.sleep(8)
    with pytest.raises(SdllmError, match=r"^Lava run failed: token_in: position 2: a token id in -1\.\.255 .* got 999$"):
        net.pause()
    net.stop()
    assert multiprocessing.active_children() == []


def lava_workers() -> list:
    """The Lava processes (workers and runtime services) this test's runs forked."""
    return [p for p in multiprocessing.active_children() if type(p).__name__ == "SystemProcess"]


def test_a_lava_process_killed_mid_run_ends_the_run_with_one_line(default_build):
    """A worker killed from outside (the OOM killer's SIGKILL) reports nothing; the others would
    wait for it at the step's barrier for ever. The run ends with one line and nothing left."""
    lava_processes = []

    def kill_a_worker(_):
        if not lava_processes:
            lava_processes.extend(lava_workers())
            os.kill(lava_processes[0].pid, signal.SIGKILL)

    build = sdllm.load_build(default_build)
    t0 = time.monotonic()
    with pytest.raises(SdllmError, match=r"^Lava run failed: a Lava process \(pid \d+\) ended by SIGKILL mid-run$"):
        build.run("The if", 8, backend="lava", on_token=kill_a_worker)
    assert lava_processes and time.monotonic() - t0 < 120
    assert multiprocessing.active_children() == []


def test_the_lava_process_s_blocking_run_ends_with_one_line_when_a_worker_is_killed(default_build):
    net = sdllm.SDLLM(build=default_build, n_positions=4)
    ids = np.full((1, 4 * net.period), -1)
    ids[0, 0] = 65
    source.RingBuffer(data=ids).s_out.connect(net.token_in)
    killed = []

    def kill_a_worker():
        workers = lava_workers()
        if workers:
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append(workers[0].pid)

    timer = threading.Timer(5.0, kill_a_worker)
    timer.start()
    try:
        with pytest.raises(SdllmError, match=r"^Lava run failed: a Lava process \(pid \d+\) ended by SIGKILL mid-run$"):
            net.run(condition=RunSteps(num_steps=10**6), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        timer.cancel()
        net.stop()
    assert killed and multiprocessing.active_children() == []


def running_continuously(build):
    """The Process on 4 positions, a prompt of one token, run with RunContinuous."""
    net = sdllm.SDLLM(build=build, n_positions=4)
    ids = np.full((1, 4 * net.period), -1)
    ids[0, 0] = 65
    source.RingBuffer(data=ids).s_out.connect(net.token_in)
    net.run(condition=RunContinuous(), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    return net


def test_a_pause_after_a_worker_was_killed_is_one_line(default_build):
    net = running_continuously(default_build)
    try:
        time.sleep(3)
        worker = lava_workers()[0]
        os.kill(worker.pid, signal.SIGKILL)
        assert wait_for(lambda: not worker.is_alive(), 10)
        with pytest.raises(SdllmError, match=rf"^Lava run failed: a Lava process \(pid {worker.pid}\) ended by SIGKILL mid-run$"):
            net.pause()
    finally:
        net.stop()
    assert multiprocessing.active_children() == []


COMPILE_SCRIPT = """
import sys, sdllm
from sdllm.formats.model import QuantSpec
from sdllm.models.source.synthetic import shape_of, synthetic_model

model = synthetic_model(shape_of("smollm2-135m"), QuantSpec(rotate=False, gptq=False))
sdllm.compile(model, "kapoho_point", sys.argv[1])
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_script_killed_while_a_build_is_written_leaves_the_old_build_and_no_temporary(default_build, tmp_path, sig):
    """The build is written into NAME.tmp-PID-… beside the target; a script ended at once by a
    signal runs no finally, so a watcher of the library's removes what it leaves."""
    tmp, world = tmp_path / "tmp", tmp_path / "world"
    tmp.mkdir()
    world.mkdir()
    shutil.copytree(default_build, world / "build")
    before = snapshot(world)
    p = start_script(COMPILE_SCRIPT, tmp, world / "build")
    try:
        assert wait_for(lambda: any(".tmp-" in n for n in os.listdir(world)), 300, 0.01), p.communicate(timeout=5)
        time.sleep(0.3)
        os.kill(p.pid, sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == -sig, err
        assert wait_for(lambda: snapshot(world) == before, 30), sorted(os.listdir(world))
    finally:
        leaves_nothing(tmp)


def test_a_worker_killed_while_the_process_pauses_is_one_line(default_build):
    """The window after pause's first look: a worker stopped (SIGSTOP) cannot answer the pause, and
    is killed while pause waits for it; the pause ends with one line, not a wait for ever."""
    net = running_continuously(default_build)
    try:
        time.sleep(3)
        worker = lava_workers()[0]
        os.kill(worker.pid, signal.SIGSTOP)
        threading.Timer(2.0, os.kill, (worker.pid, signal.SIGKILL)).start()
        with pytest.raises(SdllmError, match=rf"^Lava run failed: a Lava process \(pid {worker.pid}\) ended by SIGKILL mid-run$"):
            net.pause()
    finally:
        net.stop()
    assert multiprocessing.active_children() == []
