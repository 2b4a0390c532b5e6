"""Lava Processes (what) and ProcessModels (how) for sdllm's core groups.

One Process simulates one group of cores (`sdllm.runtime.group.CoreGroup`): a single core, or
all cores of a chip. It has one InPort `a_in` (its cores' axons, concatenated; Lava adds up
what several groups send to it, which is how partial sums of fan-in tiles meet) and one
OutPort per destination group, `out_0 .. out_{k-1}`, each shaped like that group's axons.

The classes are declared below; only the OutPorts are added per build. Lava's builder requires a
ProcessModel to declare exactly the ports its Process has (a `LavaPyType` each;
`PyProcessBuilder.check_all_vars_and_ports_set`), and how many destination groups a group has
depends on the build — so `group_classes` derives one subclass pair per number of destinations
(cached). The run config maps each Process instance to its model, so Lava's model discovery
(which would need such classes in a module's namespace) is never consulted.

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
        try:
            self._step()
        except Exception as e:
            self._report(e)
            raise

    def _step(self):
        if self.ports is None:
            self._bind()
        for port, v in zip(self.ports, self.pending):
            port.send(v.astype(PORT_TYPE))
        x = self.a_in.recv()
        self.group.step(self.time_step - 1, x)
        self.pending = self.group.outgoing(self.dest_axons)

    def _report(self, e: Exception) -> None:
        """The failure as one line for the parent (Lava itself passes on only "see output above")."""
        if isinstance(e, SdllmError):
            line = str(e)
        else:
            cores = "+".join(c.name for c in self.group.cores)
            line = f"{type(e).__name__}: {e} (in {cores[:80]})"
        with open(os.path.join(self.error_dir, "error.txt"), "a") as f:
            f.write(" ".join(line.split()) + "\n")


class GroupModel(GroupModelBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, PORT_TYPE, precision=24)


class HostGroupProcess(GroupProcess):
    """A group that also simulates the off-chip host: the logits and tokens it produces."""

    def __init__(self, *, n_positions: int, vocab_size: int, **kwargs):
        super().__init__(n_positions=n_positions, **kwargs)
        self.logits = Var(shape=(n_positions, vocab_size), init=0)
        self.tokens = Var(shape=(n_positions + 1,), init=0)


class HostGroupModel(GroupModel):
    logits: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)
    tokens: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=64)

    def _bind(self):
        super()._bind()
        host = self.group.host()
        self.logits[:], self.tokens[:] = host.logits, host.tokens
        host.logits, host.tokens = self.logits, self.tokens


_CLASSES = {}


def group_classes(n_dest: int, host: bool = False):
    """(Process class, ProcessModel class) for a group with n_dest destination groups: the
    declared pair, with the model's OutPorts out_0 .. out_{n_dest-1} added."""
    key = (n_dest, host)
    if key not in _CLASSES:
        proc_base, model_base = (HostGroupProcess, HostGroupModel) if host else (GroupProcess, GroupModel)
        proc = type(f"{proc_base.__name__}{n_dest}", (proc_base,), {"__module__": __name__})
        ports = {f"out_{k}": LavaPyType(PyOutPort.VEC_DENSE, PORT_TYPE, precision=24) for k in range(n_dest)}
        model = type(f"{model_base.__name__}{n_dest}", (model_base,), {"__module__": __name__, **ports})
        _CLASSES[key] = (proc, tag("fixed_pt")(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model))))
    return _CLASSES[key]
