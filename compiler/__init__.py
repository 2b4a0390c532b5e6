"""sdllm.compiler — lowers an SDLLM (model.pt) onto Loihi-style neuron cores (a build directory)."""
