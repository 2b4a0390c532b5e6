"""Lava Processes (what) and ProcessModels (how) for sdllm's core groups.

One Process simulates one group of cores (`sdllm.runtime.group.CoreGroup`): a single core, or
all cores of a chip. It has one InPort per source group, `in_0 .. in_{m-1}`, and one OutPort per
destination group, `out_0 .. out_{k-1}`; a port carries the destination's axons that the
source's routes reach (`CoreGroup.ports`), so what crosses between processes each step is the
traffic between them, not every axon of the destination. The group adds up what its sources
send (which is how partial sums of fan-in tiles meet).

The classes are declared below; only the ports are added per build. Lava's builder requires a
ProcessModel to declare exactly the ports its Process has (a `LavaPyType` each;
`PyProcessBuilder.check_all_vars_and_ports_set`), and how many source and destination groups a
group has depends on the build — so `group_classes` derives one subclass pair per number of
each (cached). The run config maps each Process instance to its model, so Lava's model discovery
(which would need such classes in a module's namespace) is never consulted.

Every model sends first and receives second in each step (as Lava's own Dense does), so a
value computed in step t reaches its destination in step t+1 and cycles cannot deadlock. A model
that fails still sends and receives what its step owes before it raises: the other workers end
the step, and Lava's own error propagation (the runtime service's ERROR, the worker's exception
sent back by its `SystemProcess`) ends the run instead of leaving it waiting for ever.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from sdllm.errors import SdllmError
from sdllm.formats.fields import shown

PORT_TYPE = np.int32  # graded payloads are checked against the config's payload bits (<= 24) before sending


class WorkerError(SdllmError):
    """A Lava worker's failure as one line (its exception's type and message, and where), raised
    in the worker so that Lava passes it back to the process that runs the network."""


class GroupProcess(AbstractProcess):
    """proc_params: group (a CoreGroup), src_axons and dest_axons (the slots of each in and out port)."""

    def __init__(self, *, src_axons: list, dest_axons: list, n_positions: int, **kwargs):
        super().__init__(src_axons=src_axons, dest_axons=dest_axons, n_positions=n_positions, **kwargs)
        for k, n in enumerate(src_axons):
            setattr(self, f"in_{k}", InPort(shape=(n,)))
        for k, n in enumerate(dest_axons):
            setattr(self, f"out_{k}", OutPort(shape=(n,)))


class GroupModel(PyLoihiProcessModel):
    """Steps its group. What the group measures and produces (SOPs, spikes, traffic, logits,
    tokens) lives in memory shared with the process that started the run (`CoreGroup.share`),
    which reads it there: Lava's Var.get moves an array one element per message."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.group = proc_params["group"]
        self.n_positions = proc_params["n_positions"]
        self.n_sources = len(proc_params["src_axons"])
        self.ports = None  # Lava sets the port objects after __init__: [in ports], [out ports]
        self.pending = self.group.outgoing()
        self.used = []  # the ports this step has sent on or received from

    def _bind(self):
        """First step: find the ports Lava set."""
        self.ports = ([getattr(self, f"in_{k}") for k in range(self.n_sources)],
                      [getattr(self, f"out_{k}") for k in range(len(self.pending))])

    def run_spk(self):
        self.used = []
        try:
            self._step()
        except Exception as e:
            self._settle()
            if isinstance(e, SdllmError):
                raise WorkerError(" ".join(str(e).split())) from None
            cores = "+".join(c.name for c in self.group.cores)
            raise WorkerError(f"{type(e).__name__}: {' '.join(str(e).split())} (in {cores[:80]})") from None

    def send(self, port, value) -> None:
        self.used.append(port)
        port.send(value)

    def recv(self, port):
        self.used.append(port)
        return port.recv()

    def _settle(self) -> None:
        """After a failure: the sends and receives this step still owes (zeros out), so that no
        other worker waits for them."""
        for port in self.py_ports:
            if any(port is p for p in self.used):
                continue
            if isinstance(port, PyOutPort):
                for csp in port.csp_ports:
                    csp.send(np.zeros(csp.shape, csp.d_type))
            elif isinstance(port, PyInPort):
                port.recv()

    def _step(self):
        if self.ports is None:
            self._bind()
        t = self.time_step - 1
        idle = t >= self.group.timeline.total  # every position done (RunContinuous runs on)
        if idle:
            self.pending = [np.zeros_like(v) for v in self.pending]
        self._before_send(t)
        ins, outs = self.ports
        for port, v in zip(outs, self.pending):
            self.send(port, v.astype(PORT_TYPE))
        received = [self.recv(port) for port in ins]
        if idle:
            return
        self.group.step(t, received)
        self._after_step(t)
        self.pending = self.group.outgoing()

    def _before_send(self, t: int) -> None:
        """Step t, before this group sends what it computed in step t-1."""

    def _after_step(self, t: int) -> None:
        """Step t, after the group has stepped."""


class HostIOGroupProcess(GroupProcess):
    """The host's group inside the `SDLLM` Process (`network.py`): token ids in (`token_in`),
    the next token (`token_out`) and the logits (`logits_out`) out."""

    def __init__(self, *, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.token_in = InPort(shape=(1,))
        self.token_out = OutPort(shape=(1,))
        self.logits_out = OutPort(shape=(vocab_size,))


class HostIOGroupModel(GroupModel):
    """Each step it first sends the next token and the logits of the last position completed (-1
    and zeros before the first), then reads token_in; at a token period's first step a token id
    >= 0 there is the token at that position (the host's embedding of it replaces its own choice's;
    -1: keep the choice). Position 0 needs one; anything else there is the worker's error."""

    token_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, PORT_TYPE, precision=32)
    token_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=32)
    logits_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.host = self.group.host()
        self.next_token = np.full(1, -1, PORT_TYPE)
        self.last_logits = np.zeros(self.host.logits.shape[1], PORT_TYPE)

    def _before_send(self, t: int) -> None:
        self.send(self.token_out, self.next_token)
        self.send(self.logits_out, self.last_logits)
        value = self.recv(self.token_in)[0]
        position, phase = divmod(t, self.group.period)
        if phase == 0 and position < self.n_positions:
            token = self._token(position, value.item())
            if token >= 0:
                self.group.feed(position, token)
                self.pending = self.group.outgoing()

    def _token(self, position: int, value) -> int:
        """token_in's value at a position's first step, as it came (never cast to a narrower type
        first): a token id of the vocabulary, or -1 after position 0."""
        vocab = self.host.logits.shape[1]
        lo = 0 if position == 0 else -1
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not lo <= value < vocab:
            choice = "" if lo == 0 else " (-1: the network's own choice)"
            raise SdllmError(f"token_in: position {position}: a token id in {lo}..{vocab - 1}{choice}, got {shown(value)}")
        return value

    def _after_step(self, t: int) -> None:
        position, phase = divmod(t, self.group.period)
        if phase == self.host.logits_at:
            logits = self.host.logits[position]
            if np.abs(logits).max(initial=0) > np.iinfo(PORT_TYPE).max:
                raise SdllmError(f"logits_out: position {position}: a logit of {int(np.abs(logits).max())} does not fit "
                                 f"the port's {np.dtype(PORT_TYPE).name}")
            self.last_logits = logits.astype(PORT_TYPE)
            self.next_token = np.full(1, self.host.tokens[position + 1], PORT_TYPE)


_CLASSES = {}
_PAIRS = {False: (GroupProcess, GroupModel), True: (HostIOGroupProcess, HostIOGroupModel)}


def group_classes(n_src: int, n_dest: int, host_io: bool = False):
    """(Process class, ProcessModel class) for a group with n_src source and n_dest destination
    groups: the declared pair (host_io: the host's group with token ports), with the model's
    InPorts in_0 .. in_{n_src-1} and OutPorts out_0 .. out_{n_dest-1} added. Both become names of
    this module, so that Lava's model discovery finds the model of a Process built inside a
    SubProcessModel (where the user's run config, not ours, picks the models)."""
    key = (n_src, n_dest, host_io)
    if key not in _CLASSES:
        proc_base, model_base = _PAIRS[host_io]
        proc = type(f"{proc_base.__name__}{n_src}x{n_dest}", (proc_base,), {"__module__": __name__})
        ports = {f"in_{k}": LavaPyType(PyInPort.VEC_DENSE, PORT_TYPE, precision=24) for k in range(n_src)}
        ports.update({f"out_{k}": LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=24) for k in range(n_dest)})
        model = type(f"{model_base.__name__}{n_src}x{n_dest}", (model_base,), {"__module__": __name__, **ports})
        model = tag("fixed_pt", "floating_pt")(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model)))
        globals()[proc.__name__], globals()[model.__name__] = proc, model
        _CLASSES[key] = (proc, model)
    return _CLASSES[key]
