"""sdllm: a compiler from spike-driven LLMs to Loihi-style neuromorphic chips, checked on Lava."""

import os

__version__ = "0.1.0"

# The exact executor alternates oneDNN's OpenMP threads with numba's: threads that spin after a
# parallel region (OpenMP's default) starve the other pool. Set before torch loads its OpenMP;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
