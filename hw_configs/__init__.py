"""sdllm.hw_configs (installed from hw_configs/) — the hardware models as data (docs/DESIGN.md §4): one
chip per YAML, systems naming their chip with `base:`; read and checked by `sdllm.formats.hw`."""
