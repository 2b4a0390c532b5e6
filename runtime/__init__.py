"""sdllm.runtime — runs a build directory on Lava's CPU simulator."""
