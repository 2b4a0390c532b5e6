"""A compiled network as one Lava Process, for Lava users: build it from a build directory,
connect its ports to your own Processes, run it with Lava's run conditions and configs.

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io import sink, source
    from sdllm.runtime.lava_procs.network import SDLLM

    net = SDLLM(build="build/")
    P = net.period                                  # timesteps per token
    ids = np.full((1, 3 * P), -1); ids[0, ::P] = [84, 104, 101]   # a token at each period's first step
    src = source.RingBuffer(data=ids)
    out = sink.RingBuffer(shape=(1,), buffer=3 * P + 1)
    src.s_out.connect(net.token_in)
    net.token_out.connect(out.a_in)
    net.run(condition=RunSteps(num_steps=3 * P + 1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    next_tokens = out.data.get()[0, P::P]           # the token chosen after each position
    net.stop()

Ports and timing (P = `period`, the compiled schedule's timesteps per token; steps t = 0, 1, ...):
  token_in   (1,)      read at every step; at t = i·P a value >= 0 is the token at position i
                       (-1: take the network's own choice, the sampler's; position 0 needs a token)
  token_out  (1,)      from t = (i+1)·P on: the token chosen from position i's logits (-1 before)
  logits_out (vocab,)  from t = (i+1)·P on: position i's logits, FRAC fixed-point integers
So position i's outputs are there at the step that reads position i+1's token, and a source
that sends the prompt's tokens and -1 after them generates a continuation. The Process holds
`n_positions` positions (its KV cache; default the model's context); after n_positions·P steps
it idles, its outputs holding the last values (RunContinuous can run past that).

Inside, a SubProcessModel builds the network's Lava graph — one Process per chip (or per core:
`granularity`), the same Processes and models `sdllm-run --backend lava` runs (`cores.py`) —
and wires the host's group to these ports. Tokens and logits equal the integer reference's bit
for bit (tests/test_lava_process.py).

Its arguments are checked as it is made; a token id outside the vocabulary on token_in is its
worker's error. `run`, `wait`, `pause` and `stop` end a run whose worker failed with that error as
one `SdllmError` line and nothing left running (`sdllm.runtime.lava_lifetime`).
"""

import contextlib
import multiprocessing

from lava.magma.core.decorator import implements
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from sdllm import arguments
from sdllm.errors import SdllmError
from sdllm.formats.build import Build
from sdllm.formats.build import read as read_build
from sdllm.runtime import lava_lifetime
from sdllm.runtime.lava_backend import build_processes, choose_granularity
from sdllm.runtime.requests import check_granularity
from sdllm.runtime.sampling import Sampler
from sdllm.schedule import Timeline


class SDLLM(AbstractProcess):
    """A compiled SDLLM network (a build directory written by `sdllm-compile`) as a Lava Process.

    build: the build directory (or a read `Build`). n_positions: positions it holds (default:
    the model's context). granularity: "auto", "chip" or "core" — one Lava Process per chip or per
    core inside. temperature, top_k, top_p, seed: how it chooses `token_out`
    (`sdllm.runtime.sampling.Sampler`; greedy by default)."""

    def __init__(self, *, build, n_positions: int | None = None, granularity: str = "auto", temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, name: str | None = None):
        b = getattr(build, "network", build)  # an `sdllm.Build` of the API carries the one read here
        b = b if isinstance(b, Build) else read_build(arguments.path("build", b))
        ctx = b.config.max_seq_len
        n_positions = ctx if n_positions is None else arguments.integer("n_positions", n_positions, 1, ctx,
                                                                        f"an integer in 1..{ctx} (the model's context)")
        check_granularity(granularity)
        if name is not None:
            arguments.text("name", name)
        sampler = Sampler(temperature, top_k, top_p, seed)
        super().__init__(build=b, n_positions=n_positions, granularity=granularity, sampler=sampler, name=name)
        self.build = b
        self.period = b.schedule.period
        self.n_positions = n_positions
        self.token_in = InPort(shape=(1,))
        self.token_out = OutPort(shape=(1,))
        self.logits_out = OutPort(shape=(b.config.vocab_size,))
        self.graph = None  # (groups, Processes) once Lava has built the SubProcessModel
        self.children_before = []  # multiprocessing's children before Lava forked this network's

    def __del__(self):
        if hasattr(self, "proc_params"):  # not a construction that failed before Lava's
            super().__del__()

    def run(self, condition, run_cfg=None, compile_config=None):
        if not (isinstance(condition, RunSteps) and condition.blocking):
            with self._failures():
                super().run(condition, run_cfg, compile_config)
            return
        condition.blocking = False  # Lava's own blocking wait would not notice a process lost mid-run
        try:
            with self._failures():
                super().run(condition, run_cfg, compile_config)
        finally:
            condition.blocking = True
        self.wait()

    def wait(self):
        with self._failures():
            lava_lifetime.watch(self)
            super().wait()

    def pause(self):
        with self._failures():
            lava_lifetime.pause(self)  # Lava's own pause would wait for a lost process's reply for ever

    @contextlib.contextmanager
    def _failures(self):
        try:
            with lava_lifetime.failures(self):
                yield
        except SdllmError:
            lava_lifetime.stop(self, self.children_before)
            raise

    def stop(self):
        """Stop the run (Lava's stop, then whatever it leaves ended: `lava_lifetime.stop`); a
        worker's failure not yet raised by run, wait or pause is raised here."""
        if self.runtime is None:
            return
        failed = lava_lifetime.worker_failure(self) if self.runtime._is_started else None
        lava_lifetime.stop(self, self.children_before)
        if failed:
            raise SdllmError(f"Lava run failed: {failed}")

    def core_sops(self) -> dict:
        """Core name -> synaptic operations per position so far (what the group Processes counted in
        shared memory, `CoreGroup.share`; the Process must have run, and be paused or stopped
        after RunSteps)."""
        if self.graph is None:
            raise SdllmError("SDLLM.core_sops: the Process has not run yet")
        return {name: counts.copy() for group, _ in zip(*self.graph) for name, counts in group.sops().items()}


@implements(proc=SDLLM, protocol=LoihiProtocol)
class SDLLMModel(AbstractSubProcessModel):
    """The network's own Lava graph inside the Process, the host's group wired to its ports."""

    def __init__(self, proc: SDLLM):
        p = proc.proc_params
        build = p["build"]
        lava_lifetime.start_resource_tracker()  # before Lava forks: it outlives them all
        proc.children_before = multiprocessing.active_children()
        # tokens come one at a time from outside: positions a period apart
        timeline = Timeline.of(build.schedule, 0, p["n_positions"], pipelined=False)
        groups, procs, _ = build_processes(build, [], timeline, choose_granularity(build, p["granularity"]),
                                           sampler=p["sampler"], host_io=True)
        for k, sub in enumerate(procs):
            setattr(self, f"group_{k}", sub)
        host = next(sub for group, sub in zip(groups, procs) if group.host() is not None)
        proc.in_ports.token_in.connect(host.token_in)
        host.token_out.connect(proc.out_ports.token_out)
        host.logits_out.connect(proc.out_ports.logits_out)
        proc.graph = (groups, procs)
