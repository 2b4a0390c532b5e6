import os
import signal
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def run(*args):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True, text=True, timeout=600)


def one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_run_on_a_missing_build_is_one_line(tmp_path):
    one_line_error(run("sdllm-run", str(tmp_path / "nope"), "--prompt", "x"), "not a build directory")


def test_prompt_longer_than_the_context_is_one_line(default_build):
    one_line_error(run("sdllm-run", default_build, "--prompt", "x" * 130, "--max-new-tokens", "2"),
                   "need 131 positions, the context holds 128")


def test_convert_rejects_bad_bit_widths(tmp_path):
    one_line_error(run("sdllm-convert", "-o", str(tmp_path / "m.pt"), "--act-bits", "12"), "--act-bits", "2..8", "12")
    assert not (tmp_path / "m.pt").exists()


def test_run_prints_text_timesteps_sops_and_energy(default_build):
    p = run("sdllm-run", default_build, "--prompt", "The ", "--max-new-tokens", "2")
    assert p.returncode == 0, p.stderr
    for needle in ("generated:", "timesteps: ", "SOPs per token", "energy estimate per token"):
        assert needle in p.stdout


def _session_processes(sid):
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout
    return out.split()


def test_ctrl_c_stops_lava_and_leaves_no_process(default_build):
    # a foreground process of a terminal has Ctrl-C's default action, however pytest was started
    # (a shell's background job would pass SIGINT on ignored)
    p = subprocess.Popen([os.path.join(BIN, "sdllm-run"), default_build, "--prompt", "The if", "--max-new-tokens", "100"],
                         start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while len(_session_processes(p.pid)) < 5 and time.time() < deadline:  # Lava has started its processes
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "interrupted" in err
    deadline = time.time() + 20  # multiprocessing's resource tracker exits once it has cleaned up
    while _session_processes(p.pid) and time.time() < deadline:
        time.sleep(0.5)
    left = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(p.pid)], capture_output=True, text=True).stdout
    assert left == "", left


_FAILING_WORKER = """
import sys
from sdllm.errors import SdllmError
from sdllm.cores import synapse

step = synapse.SynapseCore.step


def failing(self, *args):
    raise SdllmError(f"core {self.core.name}: an injected failure in its first step")


synapse.SynapseCore.step = failing  # the forked Lava workers inherit it
from sdllm.cli.run import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_failing_lava_worker_is_one_line_and_leaves_no_process(default_build):
    p = subprocess.Popen([sys.executable, "-c", _FAILING_WORKER, default_build, "--prompt", "ab", "--max-new-tokens", "2"],
                         start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if "Warning" not in ln and "warnings.warn" not in ln]
    assert p.returncode == 2 and len(lines) == 1, err
    assert "an injected failure in its first step" in lines[0] and "core L0.qkv" in lines[0]
    deadline = time.time() + 20
    while _session_processes(p.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert _session_processes(p.pid) == []


def test_eval_reports_perplexities_firing_and_the_compiled_network(default_model_path, default_build, tmp_path):
    plot = tmp_path / "spikes.png"
    p = run("sdllm-eval", default_model_path, "--windows", "1", "--build", default_build, "--plot", str(plot),
            "--ablation", "--nonlinearities")
    assert p.returncode == 0, p.stderr
    for needle in ("float ", "weight-only ", "fake-quant ", "integer ", "compiled network equal to the integer reference on every text",
                   "in-domain (held-out pydoc topics)", "out-of-domain (stdlib docstrings)", "logits KL", "L1.down      cos", "attention KL", "carries qkv, o, gate_up, down, head 4-bit; q, p 8-bit",
                   "ternary                            7, 127", "unsigned                          14, 254",
                   "bitplane                             3, 7", "float softmax", "no rotation", "γ = 1", "RTN weights",
                   "random Hadamard rotations (not learned)",
                   "queries and probabilities at 4 bits", "unsigned count code within T = 7 (3-bit values)", "dead zone θ = 1",
                   "W4A4 P8 KV8 round-to-nearest ANN"):
        assert needle in p.stdout, p.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_the_demo_checks_every_figure_equal(tmp_path):
    """`make demo`, as the README promises it: tokens, logits, SOPs and timesteps of the Lava run
    equal to the integer reference's (the demo's own check, which exits 1 on a difference)."""
    p = run("sdllm-demo", "--out", str(tmp_path / "demo"), "--max-new-tokens", "3")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    checks = p.stdout.split("== 5.")[1].splitlines()[1:5]
    assert len(checks) == 4 and all(line.rstrip().endswith("EQUAL") and "DIFFERENT" not in line for line in checks), checks
