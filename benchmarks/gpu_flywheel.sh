#!/usr/bin/env bash
# The data flywheel of issue 20 in one call on a lent GPU (every stage has its own time limit; the whole script
# ends within 9 minutes and keeps what finished). See docs/gpu.md.
#
#   benchmarks/gpu_flywheel.sh prepare   # HERE (CPU, needs the package registry): wheels, downsized train photos and
#                                        # the existing targets as they are, in outputs/flywheel_carry (~58 MiB
#                                        # with the checkout; the device tool carries 64 MiB)
#   benchmarks/gpu_flywheel.sh           # THERE, through the device tool's `run`, carry ["outputs/flywheel_carry"]
#   GPU_FLYWHEEL_TINY=1 benchmarks/gpu_flywheel.sh   # here: every stage on the CPU at tiny sizes (< 3 min)
#
# Stages: (a) bf16-mixed vs 32-true parity on 16 photos; the views use bf16-mixed only if it passes. (b) `generate
# --views --views-only` over the train photos until FLYWHEEL_SECONDS, stopped by SIGTERM (a clean, resumable stop).
# (c) `cartoonx train` on the GPU on the old targets and the new views together, plus any flags in FLYWHEEL_TRAIN_ARGS
# (e.g. "--model.loss.unroll_steps 5 --model.loss.unroll_weight 0.03"). (d) export of the checkpoint.
# (e) the fast metric (bench_fast_init.py) of the new start and of the bundled one on the val photos, in parallel
# CPU processes. (f) the new view shards packed into tars that fit the return limits.
# Returned under $OUT (at most 7 files): flywheel.log, metrics.json, initializer.pt, views-1.tar ... views-4.tar.
set -u
cd "$(dirname "$0")/.."
CARRY=outputs/flywheel_carry
PY=${PYTHON:-python3}
TINY=${GPU_FLYWHEEL_TINY:-0}
source benchmarks/gpu_wheels.sh

if [ "${1:-}" = prepare ]; then
  set -e
  mkdir -p "$CARRY/whl"
  download_wheels "$CARRY/whl"
  $PY benchmarks/flywheel_steps.py photos ../shared/data/imagenet-sample "$CARRY/photos" --train "${FLYWHEEL_PHOTOS:-192}"
  rm -rf "$CARRY/targets" && cp -r ../shared/targets/efficientnet_lite0-cpu "$CARRY/targets" && chmod -R u+w "$CARRY/targets"
  du -sh "$CARRY"/*
  total=$(( $(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c) + $(du -sb "$CARRY" | cut -f1) ))
  echo "checkout + carry: $(( total / 1048576 )) MiB (the device tool carries at most 64 MiB)"
  [ "$total" -lt $(( 62 * 1048576 )) ] || { echo "too large: lower FLYWHEEL_PHOTOS"; exit 1; }
  exit 0
fi

WORK=$(mktemp -d /tmp/flywheel.XXXXXX)
if [ "$TINY" = 1 ]; then
  OUT=${OUT:-outputs/flywheel_tiny}
  DEVICE=cpu ACCEL=cpu MODEL=tiny-test PRESET=tiny
  FLYWHEEL_SECONDS=${FLYWHEEL_SECONDS:-25}
  PHOTOS=$WORK/photos TARGETS=$WORK/targets
  PARITY="--limit 2 --steps 3 --batch 2"
  GEN="--views 2 --steps 3 --batch-size 2 --shard-size 4"
  METRIC="--limit 1 --steps 3" CHUNKS=2 CHUNK=1 BASELINE="--start ones"
  T_PARITY=60 T_TRAIN=90 T_METRIC=60
  TRAIN_YAML="model: {net: {width: 4, head_width: 8}, validation: {refine_steps: 0}}
trainer: {max_epochs: 1}
data: {init_args: {batch_size: 2}}"
else
  OUT=${OUT:-outputs/flywheel}  # the device tool sets OUT; a manual run writes here
  DEVICE=cuda ACCEL=gpu MODEL=efficientnet_lite0 PRESET=cpu
  FLYWHEEL_SECONDS=${FLYWHEEL_SECONDS:-120}
  PHOTOS=$CARRY/photos TARGETS=$CARRY/targets
  PARITY="--limit 16 --batch 16"
  GEN="--views ${FLYWHEEL_VIEWS:-6} --batch-size 64 --shard-size 32"
  METRIC="--limit 6" CHUNKS=16 CHUNK=6 BASELINE=""  # 16 x 6 >= the 92 val photos; baseline: the bundled start
  T_PARITY=70 T_TRAIN=120 T_METRIC=130  # with install (45), generate, export (20) and pack: < 530 s in all
  TRAIN_YAML="trainer: {accelerator: gpu, max_time: '00:00:01:30'}
data: {init_args: {num_workers: 4}}"
fi
mkdir -p "$OUT"
LOG="$OUT/flywheel.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout (the GPU image has no install of it; the benchmarks need it)
stage() { echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$LOG"; STAGE_START=$(date +%s); }
took() { echo "$1 $(( $(date +%s) - STAGE_START ))" >> "$WORK/times"; }

stage env
{ nvidia-smi 2>/dev/null | head -15; $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"; git log --oneline -1; } >> "$LOG" 2>&1
if [ -d "$CARRY/whl" ]; then
  stage "install wheels"
  install_wheels "$CARRY/whl" "$LOG"
fi

if [ "$TINY" = 1 ]; then  # no carry: a few photos and tiny-test targets of them stand in for the existing ones
  stage "tiny photos and targets"
  $PY benchmarks/flywheel_steps.py photos "${FLYWHEEL_SOURCE:-../shared/data/imagenet-sample}" "$PHOTOS" --train 4 --val 2 >> "$LOG" 2>&1
  $PY -m amortized.cli generate "$PHOTOS" --out "$TARGETS" --model $MODEL --preset $PRESET --steps 3 --no-progress >> "$LOG" 2>&1 \
    || echo "tiny targets: exit $?" | tee -a "$LOG"
fi

stage "(a) parity bf16-mixed vs 32-true"
timeout $T_PARITY $PY benchmarks/bench_precision_parity.py --device $DEVICE --images "$PHOTOS" --model $MODEL --preset $PRESET \
  $PARITY --json "$WORK/parity.json" >> "$LOG" 2>&1 || echo "parity: exit $?" >> "$LOG"
PRECISION=32-true
$PY -c "import json, sys; sys.exit(not json.load(open('$WORK/parity.json'))['pass'])" 2>/dev/null && PRECISION=bf16-mixed
echo "views are generated at $PRECISION" | tee -a "$LOG"
took parity

stage "(b) generate views for ${FLYWHEEL_SECONDS} s"
VIEWS=$WORK/views
timeout -s TERM "$FLYWHEEL_SECONDS" $PY -m amortized.cli generate "$PHOTOS" --out "$VIEWS" --split train --views-only \
  --model $MODEL --preset $PRESET --accelerator $ACCEL --precision $PRECISION $GEN --no-progress >> "$LOG" 2>&1
rc=$?
echo "generate: exit $rc (143: stopped by the time budget, finished shards kept)" | tee -a "$LOG"
took generate

stage "(c) train on the targets and the views"
SHARDS="[$TARGETS]"
ls "$VIEWS"/masks-* > /dev/null 2>&1 && SHARDS="[$TARGETS, $VIEWS]"
echo "$TRAIN_YAML" > "$WORK/train.yaml"  # one overlay per file: a key repeated within one YAML replaces the first
cat > "$WORK/data.yaml" <<EOF
model: {classifier: $MODEL, preset: $PRESET}
data: {init_args: {shards: $SHARDS}}
trainer:
  default_root_dir: $WORK/run
  logger: [{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: $WORK/run, name: csv}}]
EOF
echo "extra train flags (FLYWHEEL_TRAIN_ARGS): ${FLYWHEEL_TRAIN_ARGS:-none}" >> "$LOG"
# shellcheck disable=SC2086  # FLYWHEEL_TRAIN_ARGS is a list of flags, split on spaces
timeout $T_TRAIN $PY -m amortized.cli train --config cpu --config "$WORK/data.yaml" --config "$WORK/train.yaml" \
  ${FLYWHEEL_TRAIN_ARGS:-} >> "$LOG" 2>&1 || echo "train: exit $?" | tee -a "$LOG"
took train

stage "(d) export"
CKPT=$(find "$WORK/run" -name last.ckpt 2>/dev/null | head -1)
timeout 20 $PY -c "import sys; from amortized.checkpoint import export_checkpoint as e; print(e(sys.argv[1], sys.argv[2]))" \
  "$CKPT" "$OUT/initializer.pt" >> "$LOG" 2>&1 || echo "export: exit $?" | tee -a "$LOG"
took export

stage "(e) fast metric on the val photos"
END=$(( $(date +%s) + T_METRIC ))
metric_jobs() {
  for i in $(seq 0 $(( CHUNKS - 1 ))); do
    echo "trained $(( i * CHUNK )) --checkpoint $OUT/initializer.pt"
  done
  for i in $(seq 0 $(( CHUNKS - 1 ))); do echo "baseline $(( i * CHUNK )) $BASELINE"; done
}
[ -f "$OUT/initializer.pt" ] || echo "no checkpoint: only the baseline" | tee -a "$LOG"
metric_jobs | { [ -f "$OUT/initializer.pt" ] && cat || grep "^baseline"; } | OMP_NUM_THREADS=1 xargs -P "$CHUNKS" -L 1 bash -c \
  'left=$(( '"$END"' - $(date +%s) )); [ $left -gt 5 ] || exit 0
   timeout $left '"$PY"' benchmarks/bench_fast_init.py --shards '"$TARGETS"' --model '"$MODEL"' --preset '"$PRESET"' \
     '"$METRIC"' --offset $1 --json '"$WORK"'/$0.$1.jsonl "${@:2}" > '"$WORK"'/$0.$1.log 2>&1 || echo "metric $0 $1: exit $?"' \
  >> "$LOG" 2>&1
cat "$WORK"/trained.*.log "$WORK"/baseline.*.log >> "$LOG" 2>/dev/null
$PY benchmarks/flywheel_steps.py metric "$WORK/metric.json" "$WORK"/*.jsonl >> "$LOG" 2>&1 || echo "metric merge: exit $?" | tee -a "$LOG"
took metric

stage "(f) pack the new targets"
if ls "$VIEWS"/manifest.json > /dev/null 2>&1; then
  $PY benchmarks/flywheel_steps.py pack "$VIEWS" "$OUT/views" --parts 4 --part-mib 15 > "$WORK/pack.json" 2>> "$LOG"
fi
cat "$WORK/pack.json" >> "$LOG" 2>/dev/null
took pack

$PY - "$WORK" "$OUT" "$PRECISION" "$rc" <<'EOF' >> "$LOG" 2>&1
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
def load(name):
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None
views = load("views/manifest.json")
times = dict(line.split() for line in (work / "times").read_text().splitlines())
gen_s = float(times.get("generate", 0))
metrics = {
    "parity": load("parity.json"), "precision": sys.argv[3],
    "generate": {"exit": int(sys.argv[4]), "seconds": gen_s, "views": views and views["num_samples"],
                 "views_per_hour": views and round(3600 * views["num_samples"] / max(gen_s, 1)),
                 "config_hash": views and views["config_hash"], "failed": views and views["num_failed"]},
    "fast_metric": load("metric.json"), "pack": load("pack.json"), "stage_seconds": times,
}
csv = sorted(work.glob("run/csv/*/metrics.csv"))
if csv:
    rows = csv[-1].read_text().splitlines()
    metrics["train_log_tail"] = rows[:1] + rows[-3:]
(out / "metrics.json").write_text(json.dumps(metrics, indent=1))
fm = metrics["fast_metric"] or {}
print("summary:", json.dumps({"precision": metrics["precision"], "views": metrics["generate"]["views"],
      **{k: (v["photos"], v["median_ratio"], v["collapsed"]) for k, v in fm.items()}}))
EOF
stage done
grep -E "^summary|verdict|^generate:|fast metric|exit [0-9]" "$LOG"
ls -la "$OUT"
rm -rf "$WORK"
