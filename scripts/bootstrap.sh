#!/usr/bin/env bash
# Create .venv with Python 3.10 and install sdllm into it (once; again when pyproject.toml changes).
# lava-nc 0.10.0 installs only on Python >=3.10,<3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.sdllm-installed

find_python310() {
    local c
    for c in "${PYTHON310:-}" python3.10 \
             "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.10*/bin/python3.10 \
             "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha256sum pyproject.toml | cut -d' ' -f1)" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! PY=$(find_python310); then
        echo "sdllm needs Python 3.10 (lava-nc 0.10.0 installs only on >=3.10,<3.11)." >&2
        echo "Install it, e.g. 'pyenv install 3.10.13' or your distribution's python3.10, or set PYTHON310=/path/to/python3.10." >&2
        exit 1
    fi
    echo "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
echo "installing sdllm and its dependencies into $VENV (the first time downloads torch: several GB)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# setuptools notes on every editable install that a folder named like the package in the working
# directory could shadow it; here that folder is the package itself (and models/, compiler/,
# runtime/ are only ever imported as sdllm.*), so the note is silenced. `pip install .` has none.
PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation" \
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
sha256sum pyproject.toml | cut -d' ' -f1 > "$STAMP"
