#!/usr/bin/env bash
# GPU check: every model, the bound, the benchmark and the paper preset on one CUDA device, in under 8 minutes.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT=runs/gpu
#
# Steps (each under `timeout`, each stamped with the seconds since the start; a failing step does not stop the
# others), with the time each should take on one H200:
#   (a) oracle   the exact-oracle bounds (SEDD and the a=b hybrid) on markov, on CUDA and on the CPU   ~0.5 min
#   (b) models   ar, sedd, continuous, hybrid: `hdlm train --preset cpu` ($STEPS steps, bf16 autocast),
#                no NaN in metrics.jsonl, then `hdlm eval` and `hdlm sample` on each checkpoint           ~2.5 min
#   (c) bench    `hdlm bench --size small --quick` (tokens/s, utilisation, peak memory)                 ~1.5 min
#   (d) paper    `hdlm reproduce --preset paper`, $PAPER_STEPS steps per model, $EVAL_CHUNKS eval chunks ~2 min
#   (e) memory   activations of the small trunk at L = 64 and 1024, batch 32, bf16: CUDA vs the count
#                of the backbone chapter                                                                 ~0.3 min
#   (f) compile  only with COMPILE=1: compiled vs eager training step of the small trunk               ~1.5 min
# Without the hub (HF_HUB_OFFLINE=1, or no route to huggingface.co) the paper preset trains and evaluates on the
# embedded wiki-vital corpus instead of OpenWebText / WikiText-103. Everything is written under OUT; a summary
# table is printed at the end (and saved as OUT/summary.txt).
#
# Knobs (environment): DEVICE (cuda), STEPS (200), PAPER_STEPS (100), EVAL_CHUNKS (256), BENCH_SIZE (small),
# PAPER_DOCS (2000 OpenWebText documents when online), PAPER_EXTRA (more reproduce options), BENCH_EXTRA (more bench
# options), COMPILE (0).
# A dry run of the whole script on a CPU, in a few minutes:
#   DEVICE=cpu STEPS=4 PAPER_STEPS=2 EVAL_CHUNKS=8 BENCH_SIZE=tiny BENCH_EXTRA="--rounds 1 --sample-steps 2 --batch 4" \
#   PAPER_EXTRA="--size tiny" bash scripts/gpu_check.sh /tmp/gpu-dry
set -uo pipefail
out=${1:-runs/gpu}
dev=${DEVICE:-cuda}
steps=${STEPS:-200}
paper_steps=${PAPER_STEPS:-100}
eval_chunks=${EVAL_CHUNKS:-256}
bench_size=${BENCH_SIZE:-small}
paper_docs=${PAPER_DOCS:-2000}
read -r -a paper_extra <<< "${PAPER_EXTRA:-}"
read -r -a bench_extra <<< "${BENCH_EXTRA:-}"
export PYTHONUNBUFFERED=1
mkdir -p "$out/logs" "$out/py"
: > "$out/summary.tsv"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $1"; }

# run_step NAME TIMEOUT CMD...: run CMD with a time limit, log to OUT/logs/NAME.log, record the outcome
run_step() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  stamp "$name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$out/logs/$name.log" 2>&1
  local rc=$? status=ok note=''
  if [ $rc -eq 124 ]; then status=TIMEOUT; note="over ${limit}s"
  elif [ $rc -ne 0 ]; then status=FAIL; note=$(grep -v '^\s*$' "$out/logs/$name.log" | tail -1 | cut -c1-110); fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$note" >> "$out/summary.tsv"
  if [ $status != ok ]; then echo "   $status ($note); end of $out/logs/$name.log:"; tail -5 "$out/logs/$name.log" | sed 's/^/   | /'; fi
  return $rc
}

# ---- the python pieces (each also runs on a CPU: --device cpu) ----
cat > "$out/py/oracle.py" <<'PY'
"""The exact-oracle bounds on markov on each device: the same chunks, time draws and seed; with MC errors."""
import argparse, math, time
from hybrid_dlm.data import markov_source, load_chunks
from hybrid_dlm.likelihood import oracle_model, estimate_bound
from hybrid_dlm.runtime import apply_runtime
p = argparse.ArgumentParser()
p.add_argument('--devices', nargs='+', default=['cpu', 'cuda']); p.add_argument('--chunks', type=int, default=512)
p.add_argument('--time-samples', type=int, default=8)
a = p.parse_args()
apply_runtime(device=next((d for d in a.devices if d.startswith('cuda')), 'cpu'))   # the runtime policy (TF32 on CUDA)
src, ch = markov_source(), load_chunks('markov', 'test', 64)
ids, mask = ch.ids[:a.chunks], ch.mask[:a.chunks]
exact = float(src.nll(ids, mask.sum(1)).sum() / mask.sum())
print(f"markov test, {len(ids)} chunks, exact NLL {exact:.5f} nats/token")
print(f"{'model':<14}{'device':<8}{'bound':>10}{'MC SE':>10}{'data SE':>10}{'bound-exact':>13}{'s':>7}")
res = {}
for kind, chain in (('sedd', 'mask'), ('hybrid', 'mask 0.35 mask')):
    for d in a.devices:
        t = time.perf_counter()
        r = estimate_bound(oracle_model(src, chain).to(d), ids, mask, a.time_samples, 64, seed=0,
                           progress=False, device=d)
        res[kind, d] = r
        print(f"{'oracle-' + kind:<14}{d:<8}{r.nll_per_token:>10.5f}{r.mc_stderr:>10.5f}{r.nll_stderr:>10.5f}"
              f"{r.nll_per_token - exact:>13.5f}{time.perf_counter() - t:>7.1f}")
ok = True
for kind in ('sedd', 'hybrid'):
    r0, *rest = [res[kind, d] for d in a.devices]
    if abs(r0.nll_per_token - exact) > 4 * r0.mc_stderr + 1e-3: ok = False; print(f"oracle-{kind}: bound far from exact")
    for r, d in zip(rest, a.devices[1:]):
        se = math.hypot(r0.mc_stderr, r.mc_stderr)
        same = abs(r.nll_per_token - r0.nll_per_token) <= 4 * se + 1e-6
        print(f"oracle-{kind}: {d} - {a.devices[0]} = {r.nll_per_token - r0.nll_per_token:+.2e} (MC SE of the difference {se:.1e}): "
              f"{'consistent' if same else 'INCONSISTENT'}")
        ok &= same
raise SystemExit(0 if ok else 1)
PY

cat > "$out/py/finite.py" <<'PY'
"""Exit 1 unless every logged loss and gradient norm in a metrics.jsonl is finite; print the first and last loss."""
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r['step'] for r in recs if not (math.isfinite(r['loss']) and math.isfinite(r['grad_norm']))]
print(f"{len(recs)} records, loss {recs[0]['loss']:.4f} -> {recs[-1]['loss']:.4f}, "
      f"{recs[-1]['tokens_per_s']:.0f} tokens/s at the end; non-finite at steps {bad}" if recs else "no records")
raise SystemExit(0 if recs and not bad else 1)
PY

cat > "$out/py/bench_table.py" <<'PY'
"""The benchmark's rows as tables: tokens/s and utilisation by model and phase, peak memory."""
import json, sys
import pandas as pd
df = pd.DataFrame(json.load(open(sys.argv[1])))
main = df[df['sweep'].isna()] if 'sweep' in df else df
for col in ('tokens_per_s', 'utilization', 'peak_mem_mb'):
    print(col); print(main.pivot(index='model', columns='phase', values=col).round(3).to_string()); print()
PY

cat > "$out/py/memory.py" <<'PY'
"""Activations of a trunk's training forward pass on a device vs the count on fake tensors (backbone chapter)."""
import argparse
import torch
from hybrid_dlm.backbone import Backbone, autocast, activation_bytes
from hybrid_dlm.runtime import apply_runtime
p = argparse.ArgumentParser()
p.add_argument('--device', default='cuda'); p.add_argument('--size', default='small')
p.add_argument('--batch', type=int, default=32); p.add_argument('--seq-lens', type=int, nargs='+', default=[64, 1024])
a = p.parse_args()
apply_runtime(device=a.device)     # the entry point applies the runtime policy (TF32 on CUDA)
GiB = 2 ** 30
print(f"{a.size} trunk, batch {a.batch}, bf16 autocast, padding mask; GiB saved for backward (weight copies included)")
print(f"{'L':>6}{'counted (fake)':>16}{'measured':>10}{'peak fwd+bwd':>14}")
for L in a.seq_lens:
    pred = activation_bytes(a.size, a.batch, L, torch.bfloat16) / GiB
    meas = peak = float('nan')
    if torch.device(a.device).type == 'cuda':
        torch.manual_seed(0)
        net = Backbone(a.size, vocab_size=1024).to(a.device)
        x = torch.randint(0, 1024, (a.batch, L), device=a.device); c = torch.rand(a.batch, device=a.device)
        m = torch.ones(a.batch, L, dtype=torch.bool, device=a.device)
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
        with autocast(a.device): y = net(x, c, m)
        torch.cuda.synchronize()
        meas = (torch.cuda.memory_allocated() - base - y.numel() * y.element_size()) / GiB
        y.float().square().mean().backward(); torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / GiB
        del net, x, y; torch.cuda.empty_cache()
    print(f"{L:>6}{pred:>16.3f}{meas:>10.3f}{peak:>14.3f}")
PY

cat > "$out/py/compile.py" <<'PY'
"""Compiled vs eager training step (forward, backward) of a trunk on a device: first calls and steady tokens/s."""
import argparse, copy, time
import torch
from hybrid_dlm.backbone import Backbone, autocast, compile_backbones, time_calls
from hybrid_dlm.runtime import apply_runtime
p = argparse.ArgumentParser()
p.add_argument('--device', default='cuda'); p.add_argument('--size', default='small')
p.add_argument('--batch', type=int, default=32); p.add_argument('--seq-len', type=int, default=64)
a = p.parse_args()
apply_runtime(device=a.device)     # the entry point applies the runtime policy (TF32 on CUDA)
sync = torch.cuda.synchronize if torch.device(a.device).type == 'cuda' else (lambda: None)
torch.manual_seed(0)
eager = Backbone(a.size, vocab_size=50258).to(a.device)
comp = compile_backbones(copy.deepcopy(eager))
x = torch.randint(0, 50258, (a.batch, a.seq_len), device=a.device); c = torch.rand(a.batch, device=a.device)
m = torch.ones(a.batch, a.seq_len, dtype=torch.bool, device=a.device); m[::3, a.seq_len // 2:] = False
def step(net):
    with autocast(a.device): y = net(x, c, m)
    y.float().square().mean().backward(); sync()
for k in range(3):
    t = time.perf_counter(); step(comp); print(f"compiled call {k + 1}: {time.perf_counter() - t:.2f} s")
s = time_calls({'eager': lambda: step(eager), 'compiled': lambda: step(comp)}, rounds=10)
n = a.batch * a.seq_len
print(f"eager {n / s['eager']:.0f} tokens/s, compiled {n / s['compiled']:.0f} tokens/s, speed-up {s['eager'] / s['compiled']:.2f}")
PY

# ---- preflight ----
python - "$dev" <<'PY' || exit 1
import sys, torch
dev = sys.argv[1]
print('torch', torch.__version__, '| device', dev, end=' | ')
if dev.startswith('cuda'):
    assert torch.cuda.is_available(), 'no CUDA device: run on a GPU machine, or set DEVICE=cpu for a dry run'
    print(torch.cuda.get_device_name(0), '| bf16', torch.cuda.is_bf16_supported())
else: print('dry run on the CPU')
PY
corpus=(); docs=()
if [ "${HF_HUB_OFFLINE:-0}" = 1 ] || ! timeout 10 python -c "import urllib.request as u; u.urlopen('https://huggingface.co', timeout=5)" 2>/dev/null; then
  corpus=(--corpus wiki-vital); echo "hub not reachable: the paper preset trains and evaluates on wiki-vital"
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
else docs=(--set "max_docs=$paper_docs"); fi

# ---- (a) the oracle bound on CUDA and on the CPU ----
devices=(cpu); [ "$dev" != cpu ] && devices+=("$dev")
run_step oracle 120 python "$out/py/oracle.py" --devices "${devices[@]}"
cat "$out/logs/oracle.log"

# ---- (b) every model: train, no NaN, eval, sample ----
for k in ar sedd continuous hybrid; do
  d="$out/train/$k"; rm -rf "$d"
  if run_step "train-$k" 150 hdlm train --model "$k" --preset cpu --device "$dev" --steps "$steps" --out "$d"; then
    run_step "finite-$k" 30 python "$out/py/finite.py" "$d/metrics.jsonl" && tail -1 "$out/logs/finite-$k.log"
    run_step "eval-$k" 90 hdlm eval --ckpt "$d" --device "$dev" --corpus wiki-vital --split test --max-chunks "$eval_chunks" \
      --time-samples 2 --json && tail -1 "$out/logs/eval-$k.log" | cut -c1-200
    run_step "sample-$k" 60 hdlm sample --ckpt "$d" --device "$dev" -n 2 --steps 32 --json && tail -1 "$out/logs/sample-$k.log" | cut -c1-200
  fi
done

# ---- (c) the benchmark ----
if run_step bench 180 hdlm bench --size "$bench_size" --quick --device "$dev" --json "${bench_extra[@]}"; then
  tail -1 "$out/logs/bench.log" > "$out/bench.json"
  python "$out/py/bench_table.py" "$out/bench.json" | tee "$out/bench.txt"
fi

# ---- (d) the paper preset, shortened ----
rm -rf "$out/paper"
run_step paper 300 hdlm reproduce --preset paper --out "$out/paper" --steps "$paper_steps" --device "$dev" \
  --set "max_chunks=$eval_chunks" --set time_samples=2 "${corpus[@]}" "${docs[@]}" "${paper_extra[@]}"
tail -12 "$out/logs/paper.log"

# ---- (e) activation memory ----
if [ "$dev" = cpu ]; then run_step memory 60 python "$out/py/memory.py" --device cpu --size tiny --batch 4
else run_step memory 120 python "$out/py/memory.py" --device "$dev"; fi
cat "$out/logs/memory.log"

# ---- (f) torch.compile, on request ----
if [ "${COMPILE:-0}" = 1 ]; then
  if [ "$dev" = cpu ]; then run_step compile 300 python "$out/py/compile.py" --device cpu --size tiny --batch 4
  else run_step compile 240 python "$out/py/compile.py" --device "$dev"; fi
  cat "$out/logs/compile.log"
fi

# ---- summary ----
stamp "done"
{
  echo "step	status	seconds	note"
  cat "$out/summary.tsv"
} | column -t -s $'\t' | tee "$out/summary.txt"
python - "$out" <<'PY' | tee -a "$out/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"\n{'model':<12}{'last loss':>10}{'eval NLL/tok':>14}{'eval PPL':>12}  sample")
for k in ('ar', 'sedd', 'continuous', 'hybrid'):
    m, e, s = out / 'train' / k / 'metrics.jsonl', out / 'logs' / f'eval-{k}.log', out / 'logs' / f'sample-{k}.log'
    loss = json.loads(m.read_text().splitlines()[-1])['loss'] if m.exists() and m.read_text().strip() else float('nan')
    try: r = json.loads(e.read_text().strip().splitlines()[-1]); nll, ppl = r['nll_per_token'], r['ppl']
    except Exception: nll = ppl = float('nan')
    try: sample = json.loads(s.read_text().strip().splitlines()[-1])[0][:40].replace('\n', ' ')
    except Exception: sample = '-'
    print(f"{k:<12}{loss:>10.4f}{nll:>14.4f}{ppl:>12.2f}  {sample!r}")
res = out / 'paper' / 'results.csv'
if res.exists():
    import pandas as pd
    print('\npaper preset (shortened):'); print(pd.read_csv(res)[['model', 'ppl', 'ppl_stderr', 'nll_per_token', 'train_tokens', 'train_seconds']].to_string(index=False))
PY
! grep -qv '	ok	' "$out/summary.tsv"
