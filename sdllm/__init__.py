"""sdllm: a compiler from spike-driven LLMs to Loihi-style neuromorphic chips, checked on Lava."""

__version__ = "0.1.0"
