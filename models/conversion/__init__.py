"""sdllm.models.conversion (installed from models/conversion/) — float model -> SDLLM: rotations,
channel balancing, the learned rotation, calibration, GPTQ, calibrated dead zones, and the
fake-quantised float forward they train and measure with (`convert.convert` is the entry)."""
