"""sdllm.models (installed from models/) — the SDLLM by job, each subpackage importing only those
before it: `integer` (the integer semantics and reference), `source` (float models, importers,
text), `conversion` (float -> SDLLM), `evaluation` (fidelity against float)."""
