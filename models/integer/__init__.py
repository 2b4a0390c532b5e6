"""sdllm.models.integer (installed from models/integer/) — the integer semantics of an SDLLM:
fixed-point arithmetic (`fixedpoint`, fused as `kernels`), exact products, the neuron-unit
programs (`units`) and the integer reference every compiled network must equal (`reference`).
numpy and numba; torch only as a GEMM library (`products`), never the float model."""
