"""sdllm.models.source (installed from models/source/) — where an SDLLM comes from: the float
LLaMA-family model (`llama`), checkpoint importers (our float .pt, Hugging Face, GGUF), the text
that ships with Python (`corpus`), synthetic models of any shape, and the default model's training."""
