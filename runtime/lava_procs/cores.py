"""Lava Processes (what) and ProcessModels (how) for sdllm's cores.

One Process per core. A core has one InPort `a_in` (its axons; Lava adds up what several
source cores send to it, which is how partial sums from fan-in tiles meet) and one OutPort
per destination core, `out_0 .. out_{k-1}`, each shaped like that destination's axons; the
core's routing table scatters its outputs onto them. Lava needs the ports declared on both
classes, so a Process/ProcessModel pair is made for each number of destinations.

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


class CoreProcess(AbstractProcess):
    """A neuron core. proc_params: behaviour (a sdllm.runtime.behaviours object), routes,
    dest_axons (axon count of each destination), initial (first output, optional)."""

    def __init__(self, *, n_axons: int, dest_axons: list, n_positions: int, **kwargs):
        super().__init__(n_axons=n_axons, dest_axons=dest_axons, n_positions=n_positions, **kwargs)
        self.a_in = InPort(shape=(n_axons,))
        for k, n in enumerate(dest_axons):
            setattr(self, f"out_{k}", OutPort(shape=(n,)))
        self.sops = Var(shape=(n_positions,), init=0)


class CoreModelBase(PyLoihiProcessModel):
    sops: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.error_dir = proc_params["error_dir"]
        # This runs in Lava's worker process: its tracebacks go to a log the parent reads on failure.
        sys.stderr = open(os.path.join(self.error_dir, f"worker-{os.getpid()}.log"), "a")  # noqa: SIM115
        self.behaviour = proc_params["behaviour"]
        self.routes = proc_params["routes"]  # [(src index array, dest axon array)] per out port
        self.dest_axons = proc_params["dest_axons"]
        self.ports = None  # Lava sets the port objects after __init__
        initial = proc_params.get("initial")
        self.pending = self._scatter(initial) if initial is not None else [np.zeros(n, PORT_TYPE) for n in self.dest_axons]

    def _scatter(self, y):
        out = []
        for (src, dst), n in zip(self.routes, self.dest_axons):
            v = np.zeros(n, PORT_TYPE)
            v[dst] = y[src]
            out.append(v)
        return out

    def run_spk(self):
        if self.ports is None:
            self.ports = [getattr(self, f"out_{k}") for k in range(len(self.dest_axons))]
        for port, v in zip(self.ports, self.pending):
            port.send(v)
        x = self.a_in.recv().astype(np.int64)
        try:
            y = self.behaviour.step(self.time_step - 1, x)
        except SdllmError as e:
            with open(os.path.join(self.error_dir, "error.txt"), "a") as f:
                f.write(f"{e}\n")
            raise
        self.sops[:] = self.behaviour.sops
        self.pending = self._scatter(y)


class HostModelMixin:
    def run_spk(self):
        super().run_spk()
        self.logits[:] = self.behaviour.logits
        self.tokens[:] = self.behaviour.tokens


_CLASSES = {}


def core_classes(n_dest: int, host: bool = False):
    """(Process class, ProcessModel class) for a core with n_dest destinations."""
    key = (n_dest, host)
    if key in _CLASSES:
        return _CLASSES[key]
    name = f"{'Host' if host else 'Core'}{n_dest}"

    def proc_init(self, *, n_axons, dest_axons, n_positions, vocab_size=0, **kwargs):
        CoreProcess.__init__(self, n_axons=n_axons, dest_axons=dest_axons, n_positions=n_positions, **kwargs)
        if host:
            self.logits = Var(shape=(n_positions, vocab_size), init=0)
            self.tokens = Var(shape=(n_positions + 1,), init=0)

    proc = type(name + "Process", (CoreProcess,), {"__init__": proc_init, "__module__": __name__})
    ns = {"__module__": __name__, "a_in": LavaPyType(PyInPort.VEC_DENSE, PORT_TYPE, precision=24)}
    for k in range(n_dest):
        ns[f"out_{k}"] = LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=24)
    bases = (CoreModelBase,)
    if host:
        ns["logits"] = LavaPyType(np.ndarray, np.int64, precision=64)
        ns["tokens"] = LavaPyType(np.ndarray, np.int64, precision=64)
        bases = (HostModelMixin, CoreModelBase)
    model = type(name + "Model", bases, ns)
    model = tag("fixed_pt")(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model)))
    globals()[proc.__name__], globals()[model.__name__] = proc, model  # Lava looks models up in this module
    _CLASSES[key] = (proc, model)
    return proc, model
