"""sdllm: a compiler from spike-driven LLMs to Loihi-style neuromorphic chips, checked on Lava.

The Python API (`sdllm.api`) is available from here: `sdllm.convert`, `sdllm.compile`,
`sdllm.load_model`, `sdllm.load_build`, `sdllm.run`, and `sdllm.Model`, `sdllm.Build`,
`sdllm.Run`, `sdllm.MappingReport`, `sdllm.RunReport`; `sdllm.SDLLM` is the compiled network as a
Lava Process. Each is imported on first use, so `import sdllm` stays light.
"""

import os

__version__ = "0.1.0"

# The exact executor alternates oneDNN's OpenMP threads with numba's: threads that spin after a
# parallel region (OpenMP's default) starve the other pool. Set before torch loads its OpenMP;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_API = ("Build", "MappingReport", "Model", "Run", "RunReport", "compile", "convert", "load_build", "load_model", "run")
__all__ = [*_API, "SDLLM", "SdllmError"]


def __getattr__(name):
    if name in _API:
        from sdllm import api

        return getattr(api, name)
    if name == "SDLLM":
        from sdllm.runtime.lava_procs.network import SDLLM

        return SDLLM
    if name == "SdllmError":
        from sdllm.errors import SdllmError

        return SdllmError
    raise AttributeError(f"module 'sdllm' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
