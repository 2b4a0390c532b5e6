"""sdllm.models — the LLaMA-family float model and its spike-driven (SDLLM) conversion."""
