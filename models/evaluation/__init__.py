"""sdllm.models.evaluation (installed from models/evaluation/) — what an SDLLM costs against its
float model: perplexities, per-stage fidelity, firing, SOPs per code, the ablation table, and
the float stand-ins that price each integer nonlinearity."""
