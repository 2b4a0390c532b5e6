"""Test helpers shared by several test modules."""

import os


def write_hw(tmp_path, name="tight", chip=None, chips=None, **core_overrides):
    """A copy of loihi2.yaml with some core limits changed (a test target, not a real chip)."""
    import yaml

    from sdllm.formats.hw import resolve

    with open(resolve("loihi2")) as f:
        raw = yaml.safe_load(f)
    raw["name"] = name
    raw["core"].update(core_overrides)
    raw["chip"].update(chip or {})
    if chips is not None:
        raw["system"]["chips"] = chips
    path = os.path.join(tmp_path, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def compile_split(model, tmp_path, **hw_overrides):
    """Compile with tiny per-core limits so that stages split into fan-in tiles with reduce cores
    and fan-out tiles, KV stages by heads, and neuron units span several cores."""
    from sdllm.compiler import pipeline

    hw = write_hw(tmp_path, max_input_axons=24, synapse_memory_bits=8000, **hw_overrides)
    return pipeline.compile_model(model, hw)
