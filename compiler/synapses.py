"""Synapse tables of static cores, in the two encodings the compiler chooses between per block:
sparse (a weight and a neuron index per non-zero, CSR by axon) and dense (a weight for every
neuron of the block, up to 4-bit weights two per byte). Both store a pointer per axon."""

import numpy as np

from sdllm import nibbles


def block_bits(n_axons, n_neurons, nnz, weight_bits: int, lim):
    """(bits, dense?) of blocks in the cheaper encoding. Works elementwise on arrays."""
    sparse = n_axons * lim.axon_overhead_bits + nnz * (weight_bits + lim.synapse_index_bits)
    dense = n_axons * (lim.axon_overhead_bits + n_neurons * weight_bits)
    return np.minimum(sparse, dense), dense < sparse


def synapse_table(w: np.ndarray):
    """CSR by axon of a (neurons, axons) block: (axon_ptr, neuron_index, weight), zeros not stored."""
    axon, neuron = np.nonzero(w.T)  # row-major over wᵀ: by axon, then neuron
    ptr = np.zeros(w.shape[1] + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(axon, minlength=w.shape[1]))
    return ptr, neuron.astype(np.int64), w[neuron, axon]


def synapse_arrays(core, w: np.ndarray) -> dict:
    """The synapse table of a static core (tiling fixed its block and encoding), cut from its
    stage's full weight matrix."""
    n0, n1, a0, a1 = core.block
    block = w[n0:n1, a0:a1]
    if core.params["encoding"] == "dense":
        return {"weight_nibbles": nibbles.pack(block)} if core.params["weight_bits"] <= 4 else {"weight_dense": block}
    ptr, idx, wts = synapse_table(block)
    return {"axon_ptr": ptr, "neuron_index": idx, "weight": wts}
