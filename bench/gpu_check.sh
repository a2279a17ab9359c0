#!/usr/bin/env bash
# The benchmarks on one lent GPU (an H200): random-init 1B- and 7B-class Llamas (TinyLlama-1.1B and Llama-2-7B
# shapes; no weights travel), 4-bit QLoRA (NF4), LoRA r=16 on every linear, sequence 1024, batch 1, streaming anchor
# (r=512, the paper's rank, p=64). Prints step time DBA/direct, peak VRAM, anchor estimation throughput.
# Made to finish in under 8 minutes on an H200; each model has its own time limit so one overrun cannot eat the rest.
#
# From the repository root:  bash bench/gpu_check.sh
# Missing Python packages travel as wheels in .whl/ (bitsandbytes, peft; see bench/README.md, "GPU check").
# Results: stdout (Markdown tables), and $OUT/ (the device tool's folder; /tmp/dba-gpu-check elsewhere).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/dba-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DBA_CACHE_DIR="${DBA_CACHE_DIR:-/tmp/dba-cache}"
PY="${PYTHON:-python3}"
t_start=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'EOF' || exit 1
import importlib.metadata as md
import torch
for pkg in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "tokenizers"):
    try:
        print(f"{pkg} {md.version(pkg)}", end="; ")
    except md.PackageNotFoundError:
        print(f"{pkg} MISSING", end="; ")
print(f"cuda {torch.version.cuda}, {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'}")
import bitsandbytes, peft, dba  # noqa: F401  (fail here, early, if anything is missing)
EOF

# GPU_CHECK_SMALL / GPU_CHECK_BIG / GPU_CHECK_SEQ override the sizes (a CPU dry run of this script: llama-micro, 64)
SMALL="${GPU_CHECK_SMALL:-llama-1b}"
BIG="${GPU_CHECK_BIG:-llama-7b}"
SEQ="${GPU_CHECK_SEQ:-1024}"
COMMON=(--quantization 4bit --lora-rank 16 --seq "$SEQ" --batch 1 --anchor streaming --rank 512 --energy -1
        --oversample 64 --anchor-batches 8 --repeats 10 --warmup 2 --memory-steps 3 --memory-anchor-batches 2)

echo "== $SMALL (1B class: TinyLlama-1.1B shapes) =="
timeout "${GPU_CHECK_LIMIT_SMALL:-150}" "$PY" -m bench --model "$SMALL" "${COMMON[@]}" --memory-ranks 512 \
  --memory-checkpointing off --sections cadb --json "$OUT/small.json" 2>"$OUT/small.err" | tee "$OUT/small.md"
rc1=${PIPESTATUS[0]}
[ "$rc1" -ne 0 ] && { echo "$SMALL exited $rc1; its stderr ends:"; tail -n 25 "$OUT/small.err"; }
[ "$SMALL" != "$BIG" ] && rm -rf "$DBA_CACHE_DIR/bench/$SMALL-s0"   # free the disk for the 7B checkpoint

echo "== $BIG (7B class: Llama-2-7B shapes) =="
timeout "${GPU_CHECK_LIMIT_BIG:-300}" "$PY" -m bench --model "$BIG" "${COMMON[@]}" --memory-ranks 512 \
  --memory-checkpointing off,on --sections cadbe --json "$OUT/big.json" 2>"$OUT/big.err" | tee "$OUT/big.md"
rc2=${PIPESTATUS[0]}
[ "$rc2" -ne 0 ] && { echo "$BIG exited $rc2; its stderr ends:"; tail -n 25 "$OUT/big.err"; }

"$PY" -m bench.summary "$OUT/small.json" "$OUT/big.json" | tee "$OUT/summary.md"
echo "gpu_check: $(( $(date +%s) - t_start )) s in all ($SMALL rc=$rc1, $BIG rc=$rc2)"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
