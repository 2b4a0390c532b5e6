"""Lava Processes (what) and ProcessModels (how) for sdllm's core groups.

One Process simulates one group of cores (`sdllm.runtime.group.CoreGroup`): a single core, or
all cores of a chip. It has one InPort `a_in` (its cores' axons, concatenated; Lava adds up
what several groups send to it, which is how partial sums of fan-in tiles meet) and one
OutPort per destination group, `out_0 .. out_{k-1}`, each shaped like that group's axons.
Lava needs the ports declared on both classes, so a Process/ProcessModel pair is made for
each number of destinations.

Every model sends first and receives second in each step (as Lava's own Dense does), so a
value computed in step t reaches its destination in step t+1 and cycles cannot deadlock.
"""

import os
import sys

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from sdllm.errors import SdllmError

PORT_TYPE = np.int32  # graded payloads are checked against the config's payload bits (<= 24) before sending


class GroupProcess(AbstractProcess):
    """proc_params: group (a CoreGroup), dest_axons (axon count of each destination group), error_dir."""

    def __init__(self, *, n_axons: int, dest_axons: list, n_cores: int, n_positions: int, **kwargs):
        super().__init__(n_axons=n_axons, dest_axons=dest_axons, n_positions=n_positions, **kwargs)
        self.a_in = InPort(shape=(n_axons,))
        for k, n in enumerate(dest_axons):
            setattr(self, f"out_{k}", OutPort(shape=(n,)))
        self.sops = Var(shape=(n_cores, n_positions), init=0)
        self.traffic = Var(shape=(n_positions, 3), init=0)


class GroupModelBase(PyLoihiProcessModel):
    sops: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)
    traffic: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.error_dir = proc_params["error_dir"]
        # This runs in Lava's worker process: its tracebacks go to a log the parent reads on failure.
        sys.stderr = open(os.path.join(self.error_dir, f"worker-{os.getpid()}.log"), "a")  # noqa: SIM115
        self.group = proc_params["group"]
        self.dest_axons = proc_params["dest_axons"]
        self.ports = None  # Lava sets the port objects after __init__
        self.pending = self.group.outgoing(self.dest_axons)

    def _bind(self):
        """First step: find the ports Lava set, and let the cores count straight into the Vars."""
        self.ports = [getattr(self, f"out_{k}") for k in range(len(self.dest_axons))]
        for k, b in enumerate(self.group.behaviours):
            self.sops[k] = b.sops
            b.sops = self.sops[k]
        self.traffic[:] = self.group.traffic
        self.group.traffic = self.traffic

    def run_spk(self):
        if self.ports is None:
            self._bind()
        for port, v in zip(self.ports, self.pending):
            port.send(v.astype(PORT_TYPE))
        x = self.a_in.recv()
        try:
            self.group.step(self.time_step - 1, x)
        except SdllmError as e:
            with open(os.path.join(self.error_dir, "error.txt"), "a") as f:
                f.write(f"{e}\n")
            raise
        self.pending = self.group.outgoing(self.dest_axons)


class HostModelMixin:
    def _bind(self):
        super()._bind()
        host = self.group.host()
        self.logits[:], self.tokens[:] = host.logits, host.tokens
        host.logits, host.tokens = self.logits, self.tokens


_CLASSES = {}


def group_classes(n_dest: int, host: bool = False):
    """(Process class, ProcessModel class) for a group with n_dest destination groups."""
    key = (n_dest, host)
    if key in _CLASSES:
        return _CLASSES[key]
    name = f"{'Host' if host else 'Group'}{n_dest}"

    def proc_init(self, *, n_axons, dest_axons, n_cores, n_positions, vocab_size=0, **kwargs):
        GroupProcess.__init__(self, n_axons=n_axons, dest_axons=dest_axons, n_cores=n_cores, n_positions=n_positions, **kwargs)
        if host:
            self.logits = Var(shape=(n_positions, vocab_size), init=0)
            self.tokens = Var(shape=(n_positions + 1,), init=0)

    proc = type(name + "Process", (GroupProcess,), {"__init__": proc_init, "__module__": __name__})
    ns = {"__module__": __name__, "a_in": LavaPyType(PyInPort.VEC_DENSE, PORT_TYPE, precision=24)}
    for k in range(n_dest):
        ns[f"out_{k}"] = LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=24)
    bases = (GroupModelBase,)
    if host:
        ns["logits"] = LavaPyType(np.ndarray, np.int64, precision=64)
        ns["tokens"] = LavaPyType(np.ndarray, np.int64, precision=64)
        bases = (HostModelMixin, GroupModelBase)
    model = type(name + "Model", bases, ns)
    model = tag("fixed_pt")(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model)))
    globals()[proc.__name__], globals()[model.__name__] = proc, model  # Lava looks models up in this module
    _CLASSES[key] = (proc, model)
    return proc, model
