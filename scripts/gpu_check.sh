#!/usr/bin/env bash
# GPU check: the throughput benchmark and the paper preset (bf16 autocast) on one CUDA device, in under 8 minutes.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT=runs/gpu
#
# Writes OUT/bench.json (hdlm bench rows), OUT/bench.txt, OUT/paper/results.csv and the plots, and prints both tables.
# Without network access (HF_HUB_OFFLINE=1 or no route to the hub) the paper preset trains and evaluates on the
# embedded wiki-vital corpus instead of OpenWebText / WikiText-103; STEPS caps the training steps per model so that
# the whole check fits its time budget (2000 is the paper's; 5 models share the budget).
set -euo pipefail
out=${1:-runs/gpu}
steps=${STEPS:-600}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
start=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - start ))s)"; }

stamp "hdlm bench: small model (12 x 768), L = 64..512, bf16 autocast for training"
timeout 180 hdlm bench --size small --batch 32 --seq-len 64 --device cuda --json > "$out/bench.json"
python - "$out/bench.json" <<'PY' | tee "$out/bench.txt"
import json, sys
import pandas as pd
df = pd.DataFrame(json.load(open(sys.argv[1])))
main = df[df['sweep'].isna()] if 'sweep' in df else df
print(main.pivot(index='model', columns='phase', values='tokens_per_s').round(0).to_string())
print(main.pivot(index='model', columns='phase', values='utilization').round(3).to_string())
if 'sweep' in df: print(df[df['sweep'] == 'seq_len'].pivot(index='model', columns='seq_len', values='tokens_per_s').round(0).to_string())
PY

stamp "hdlm reproduce --preset paper ($steps steps per model)"
corpus=()
if [ "${HF_HUB_OFFLINE:-0}" = 1 ] || ! python -c "import urllib.request as u; u.urlopen('https://huggingface.co', timeout=5)" 2>/dev/null; then
  corpus=(--corpus wiki-vital); echo "hub not reachable: training and evaluating on wiki-vital"
fi
timeout 300 hdlm reproduce --preset paper --out "$out/paper" --steps "$steps" --device cuda "${corpus[@]}"
stamp "done"
