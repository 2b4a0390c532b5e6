#!/usr/bin/env bash
# Build sdllm's wheel, install it (not editable) into a fresh venv and run every command from a
# directory outside the repository: what a user of `pip install .` gets.
#
#   scripts/check_wheel.sh                      # the venv gets sdllm's dependencies from the index (torch: GBs)
#   scripts/check_wheel.sh --deps-from DIR      # ... or reuses those installed in site-packages DIR
#                                               #     (e.g. .venv's), sdllm itself still from the wheel
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DEPS_FROM=""
if [ "${1:-}" = "--deps-from" ]; then
    DEPS_FROM=$(cd "$2" && pwd)
fi
PY=${PYTHON310:-$REPO/.venv/bin/python}  # a Python 3.10 (make test or make demo creates .venv)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "== wheel ($WORK)"
"$PY" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$REPO"
rm -rf "$REPO/build"  # setuptools' in-tree build directory
"$PY" -m venv "$WORK/venv"  # a fresh venv on the base interpreter (also when PY is a venv's)
VENV="$WORK/venv"
if [ -n "$DEPS_FROM" ]; then
    echo "$DEPS_FROM" > "$VENV/lib/python3.10/site-packages/zz_sdllm_deps.pth"
    "$VENV/bin/pip" install --quiet --no-deps "$WORK"/dist/sdllm-*.whl
else
    "$VENV/bin/pip" install --quiet "$WORK"/dist/sdllm-*.whl
fi
cd "$WORK"
mkdir run && cd run
B="$VENV/bin"
"$B/python" -c 'import sdllm, sys; assert sdllm.__file__.startswith(sys.prefix), sdllm.__file__; print("sdllm from", sdllm.__file__)'
echo "== sdllm-demo"
"$B/sdllm-demo" --out demo --max-new-tokens 8
echo "== sdllm-convert, sdllm-compile (a named target and a YAML path), sdllm-run, sdllm-eval"
"$B/sdllm-convert" -o model.pt --calib-windows 4
"$B/sdllm-compile" model.pt --target kapoho_point -o build_kp -q
cp "$("$B/python" -c 'from sdllm.formats.hw import resolve; print(resolve("loihi2"))')" my_chip.yaml
"$B/sdllm-compile" model.pt --target my_chip.yaml -o build -q
"$B/sdllm-run" build --prompt "The if statement" --max-new-tokens 6 --temperature 0.8 --seed 1 --report report
"$B/sdllm-run" build_kp --prompt "def f" --max-new-tokens 2 --backend fast
printf 'import \n\n' | "$B/sdllm-run" build --interactive --backend lockstep --max-new-tokens 4
"$B/sdllm-eval" model.pt --windows 1 --build build
"$B/sdllm-compile" --synthetic smollm2-135m --target kapoho_point -o synth -q --rate-tokens 0
echo "== the API and the Lava Process"
"$B/python" - <<'EOF'
import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io import sink, source

import sdllm

build = sdllm.load_build("build")
run = build.run("while ", 4, backend="lockstep")
net = build.process()
P = net.period
ids = np.full((1, 4 * P + 1), -1)
ids[0, 0] = ord("w")
src, out = source.RingBuffer(data=ids), sink.RingBuffer(shape=(1,), buffer=4 * P + 1)
src.s_out.connect(net.token_in)
net.token_out.connect(out.a_in)
net.run(condition=RunSteps(num_steps=4 * P + 1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
print("Lava Process:", out.data.get()[0, P::P].astype(int).tolist(), "| API run:", repr(run.text))
net.stop()
EOF
ls report demo/run_report
echo "every command ran from $WORK/run, sdllm installed from its wheel"
