"""Test helpers shared by several test modules."""

import os


def write_hw(tmp_path, name="tight", chip=None, chips=None, **core_overrides):
    """A copy of loihi2.yaml with some core limits changed (a test target, not a real chip)."""
    import yaml

    from sdllm.compiler.hw import resolve

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


def compile_split(blob, tmp_path, **hw_overrides):
    """Compile with tiny per-core limits so that stages split into fan-in and fan-out tiles and
    KV stages by heads. The neuron units exceed these limits, so the design-rule check is left
    out: this exercises tiling, routing and partial sums, not a real target."""
    from sdllm.compiler import pipeline
    from sdllm.compiler.drc import check

    hw = write_hw(tmp_path, max_input_axons=20, synapse_memory_bits=8000, **hw_overrides)
    return pipeline.compile_model(blob, hw, passes=tuple(p for p in pipeline.PASSES if p is not check))
