#!/usr/bin/env bash
# Every speed benchmark of docs/benchmarks.md in one go, on whatever JAX sees (a GPU, a TPU or the CPU),
# each tool's JSON in its own file, under a wall-clock budget so a lent machine is never overrun.
#
#   bash tools/bench_suite.sh OUT_DIR [BUDGET_SECONDS]      # default budget 540 s
#
# Runs, most wanted first (a part that would start with under 20 s left is skipped and says so, a part
# that runs over its share is killed and says so, and the rest goes on); one JSON object per line:
#   kd.jsonl            tools/bench.py, resnet32x4 -> resnet8x4, KD: batch 64 float32, batch 64 bfloat16,
#                       and last batch 512 bfloat16
#   torch.jsonl         tools/bench_torch.py, the same steps in PyTorch eager (float32; bf16 autocast with
#                       channels-last), on cuda when torch sees a GPU
#   distillers.jsonl    tools/bench.py over every other registered distiller, batch 64, one line per group
#   steps_per_call.json tools/bench_steps_per_call.py, the programs alone; steps_per_call_loop.json
#                       the same with whole training runs (--loop)
#   teacher_cache.json  tools/bench_teacher_cache.py
#   issue24.jsonl       (issue 24) tools/bench.py against tools/bench_torch.py (eager and --compile, bf16 autocast,
#                       channels-last) on the same device, with achieved TFLOP/s and MFU: resnet32x4 -> resnet8x4 at
#                       batch 64 and 256, and ImageNet ResNet-34 -> ResNet-18 at 224x224, batch 128, bfloat16
#   epoch_c100.json     (issue 24) one CIFAR-100-sized epoch (50,000 tfds mock images, resnet8x4, CE, batch 64)
#                       trained by kd_jax's loop: wall time per epoch, compilation included
#   profile_kd_float32.tar.gz  jax.profiler traces of the first part's three programs (bench.py --profile)
# and the progress of all of them in OUT_DIR/log.txt. BENCH_STEPS (default 30) sets the timed steps.
set -u
out=${1:?usage: bash tools/bench_suite.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
steps=${BENCH_STEPS:-30}
mkdir -p "$out"
log="$out/log.txt"
deadline=$(( $(date +%s) + budget ))
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1
# The tools import kd_jax from the checkout even where it is not pip-installed.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

# part NAME MAX_SECONDS OUTFILE COMMAND...: runs COMMAND with stdout to OUTFILE and stderr to the log,
# for at most MAX_SECONDS and never past the deadline.
part() {
  local name=$1 cap=$2 file=$3; shift 3
  local left=$(( deadline - $(date +%s) ))
  if (( left < 20 )); then echo "== $name: skipped, ${left}s of the budget left" | tee -a "$log"; return; fi
  (( cap > left )) && cap=$left
  echo "== $name (at most ${cap}s): $*" | tee -a "$log"
  local start=$(date +%s)
  timeout "$cap" "$@" >>"$file" 2>>"$log"
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start ))s" | tee -a "$log"
}

{
  date -u; uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__); print(jax.devices())"
} >>"$log" 2>&1
cat "$log"

cd "$here"
pair=(--teacher resnet32x4 --student resnet8x4)
profiles=$(mktemp -d)
part kd_float32 120 "$out/kd.jsonl" python3 tools/bench.py "${pair[@]}" --batch 64 --distillers kd --steps "$steps" --json \
  --profile "$profiles/kd_float32"
# One file: a lent machine returns files at most two folders down, and jax.profiler nests deeper.
tar czf "$out/profile_kd_float32.tar.gz" -C "$profiles" . 2>>"$log"
rm -rf "$profiles"
part kd_bfloat16 120 "$out/kd.jsonl" python3 tools/bench.py "${pair[@]}" --batch 64 --distillers kd --steps "$steps" \
  --dtype bfloat16 --json
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo none)
torch_part() {  # torch_part NAME BATCH ARGS...
  local name=$1 batch=$2; shift 2
  [[ $device == none ]] && { echo "== $name: skipped, no torch" | tee -a "$log"; return; }
  part "$name" 60 "$out/torch.jsonl" python3 tools/bench_torch.py "${pair[@]}" --batch "$batch" --device "$device" \
    --steps "$steps" --json "$@"
}
torch_part torch_float32 64
torch_part torch_bfloat16 64 --dtype bfloat16 --channels-last
# Small groups, one process each, so a group cut off by the budget loses only its own rows.
group() {
  part "distillers:$1" 120 "$out/distillers.jsonl" python3 tools/bench.py "${pair[@]}" --batch 64 --steps "$steps" \
    --json --distillers "$1"
}
group crd,review_kd,fitnet,at,sp
part steps_per_call 90 "$out/steps_per_call.json" python3 tools/bench_steps_per_call.py --json
part steps_per_call_loop 150 "$out/steps_per_call_loop.json" python3 tools/bench_steps_per_call.py --loop --json \
  --students mlp_small,cnn_small --losses ce,kd --k 16 --rounds 2 --epochs 4
part teacher_cache 90 "$out/teacher_cache.json" python3 tools/bench_teacher_cache.py --json
for group in vid,pkt,rkd,area_rkd,cc nst,ft,fsp,ab,feed dkd,dist,ls_kd,cskd energy_kd,he_da,ensemble_kd,r2kd; do
  group "$group"
done
# Issue 24: kd_jax next to PyTorch eager and compiled, same device, same batch, with MFU.
i24() {  # i24 NAME CAP TOOL ARGS...: one issue-24 row
  local name=$1 cap=$2; shift 2
  part "$name" "$cap" "$out/issue24.jsonl" python3 "$@" --steps "$steps" --json
}
imagenet=(--teacher imagenet_resnet34 --student imagenet_resnet18 --image-size 224 --num-classes 1000 --batch 128)
for batch in 64 256; do
  i24 "i24_jax_c100_b$batch" 120 tools/bench.py "${pair[@]}" --batch "$batch" --distillers kd --dtype bfloat16
  if [[ $device != none ]]; then
    i24 "i24_torch_c100_b$batch" 60 tools/bench_torch.py "${pair[@]}" --batch "$batch" --device "$device" \
      --dtype bfloat16 --channels-last
    i24 "i24_torch_compile_c100_b$batch" 240 tools/bench_torch.py "${pair[@]}" --batch "$batch" --device "$device" \
      --dtype bfloat16 --channels-last --compile
  fi
done
i24 i24_jax_imagenet_b128 180 tools/bench.py "${imagenet[@]}" --distillers kd --dtype bfloat16 --crop-pad 0
if [[ $device != none ]]; then
  i24 i24_torch_imagenet_b128 90 tools/bench_torch.py "${imagenet[@]}" --device "$device" --dtype bfloat16 \
    --channels-last
  i24 i24_torch_compile_imagenet_b128 300 tools/bench_torch.py "${imagenet[@]}" --device "$device" \
    --dtype bfloat16 --channels-last --compile
fi
part epoch_c100 240 "$out/epoch_c100.json" python3 - <<'PY'
import json, tempfile, time
import tensorflow_datasets as tfds
from kd_jax.config import load_config_file
from kd_jax.train.loop import train_and_evaluate
config = load_config_file("experiments/cifar100/ce.py:res32x4_res8x4")
config.epochs, config.progress_bar, config.data.val_fraction = 1, False, 0.0
with tfds.testing.mock_data(num_examples=50000), tempfile.TemporaryDirectory() as workdir:
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  print(json.dumps({"what": "one CIFAR-100-sized epoch (50,000 mock images, 781 steps of batch 64) and one test "
                    "pass over 50,000, resnet8x4 CE, compilation included", "wall_s": time.perf_counter() - start}))
PY
# A batch that fills an accelerator better than 64 does.
part kd_bfloat16_b512 120 "$out/kd.jsonl" python3 tools/bench.py "${pair[@]}" --batch 512 --distillers kd \
  --steps "$steps" --dtype bfloat16 --json
torch_part torch_bfloat16_b512 512 --dtype bfloat16 --channels-last
echo "== done, $(( deadline - $(date +%s) ))s of the budget left" | tee -a "$log"
