#!/usr/bin/env bash
# The GPU throughput check of issue 13, in one call on a lent GPU (about 4-5 minutes; every stage has its own
# time limit, so the whole script ends within 8 minutes and keeps what finished). See docs/gpu.md.
#
#   benchmarks/gpu_check.sh prepare   # HERE, once per checkout (CPU, needs the package registry): wheels the
#                                     # GPU image lacks + 128-px PNGs of the sample photos, in outputs/gpu_carry
#   benchmarks/gpu_check.sh           # THERE, through the device tool's `run`, with carry ["outputs/gpu_carry"]
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh   # here: every stage on the CPU with tiny sizes (< 2 min)
#
# Stages (output under $OUT, at most 8 files): env.txt, gpu_check.log (all stages' output), bench_step.json
# (32-true / bf16-mixed / 16-mixed x B = 16, 64, 128 at the cpu preset, and the paper preset's s/image),
# parity.json (bf16-mixed vs 32-true on 16 photos, 300 steps), generate_manifest.json (`cartoonx generate
# --precision bf16-mixed` on 256 photos, B=128: images/hour), bench_channels_last_off.json (B=64 without channels_last).
set -u
cd "$(dirname "$0")/.."
CARRY=outputs/gpu_carry
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
source benchmarks/gpu_wheels.sh

if [ "${1:-}" = prepare ]; then
  set -e
  mkdir -p "$CARRY/whl" "$CARRY/images"
  download_wheels "$CARRY/whl"
  # 128-px PNGs made with the project's own loader and preprocessing: loading one gives the identical tensor.
  $PY - "$CARRY/images" "${GPU_CHECK_PHOTOS:-384}" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from PIL import Image
from rde.io import load_image, preprocess
out, n = Path(sys.argv[1]), int(sys.argv[2])
src = sorted((Path("..") / "shared" / "data" / "imagenet-sample").glob("*.JPEG"))[:n]
for p in src:
    x = preprocess(load_image(p), 128)
    Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()).save(out / f"{p.stem}.png")
back = preprocess(load_image(out / f"{src[0].stem}.png"), 128)
assert (back - preprocess(load_image(src[0]), 128)).abs().max() == 0, "PNG round trip changed the tensor"
print(f"{len(src)} PNGs in {out}")
EOF
  du -sh "$CARRY"/*
  exit 0
fi

if [ "$TINY" = 1 ]; then
  OUT=${OUT:-outputs/gpu_check_tiny}
  DEVICE=cpu ACCEL=cpu
  BENCH="--tiny --precision 32-true,bf16-mixed,16-mixed"
  PARITY="--preset tiny --limit 2 --steps 3 --batch 2"
  GEN="--preset tiny --steps 2 --limit 4 --batch-size 2 --shard-size 4"
  CL="--tiny --precision 32-true,bf16-mixed --paper-preset="
  T_BENCH=120 T_PARITY=120 T_GEN=120 T_CL=60
else
  OUT=${OUT:-outputs/gpu_check}  # the device tool sets OUT; a manual run writes here
  DEVICE=cuda ACCEL=gpu
  BENCH="--precision 32-true,bf16-mixed,16-mixed --batch 16,64,128 --steps 10 --rounds 2 --paper-batch 8 --paper-steps 4"
  PARITY="--limit 16 --batch 16"
  GEN="--batch-size 128 --limit 256 --shard-size 128"
  CL="--precision 32-true,bf16-mixed --batch 64 --steps 10 --rounds 2 --paper-preset="
  T_BENCH=130 T_PARITY=80 T_GEN=160 T_CL=40  # with install (45) and set-up: < 480 s in all
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
stage() { echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }

stage env
{ nvidia-smi 2>/dev/null | head -15; $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"; git log --oneline -1; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$LOG"

if [ -d "$CARRY/whl" ]; then
  stage "install wheels"
  install_wheels "$CARRY/whl" "$LOG"
fi
IMAGES="$CARRY/images"
[ -d "$IMAGES" ] || IMAGES=../shared/data/imagenet-sample
echo "images: $IMAGES ($(ls "$IMAGES" | wc -l) files)" >> "$LOG"

stage "bench_step"
timeout $T_BENCH $PY benchmarks/bench_step.py --device $DEVICE $BENCH --json "$OUT/bench_step.json" >> "$LOG" 2>&1 || echo "bench_step: exit $?" >> "$LOG"

stage "parity bf16-mixed vs 32-true"
timeout $T_PARITY $PY benchmarks/bench_precision_parity.py --device $DEVICE --images "$IMAGES" $PARITY --json "$OUT/parity.json" >> "$LOG" 2>&1 || echo "parity: exit $?" >> "$LOG"

stage "generate bf16-mixed"
GEN_DIR=$(mktemp -d /tmp/gpu_check_gen.XXXXXX)
start=$(date +%s.%N)
timeout $T_GEN $PY -m amortized.cli generate "$IMAGES" --out "$GEN_DIR" --accelerator $ACCEL --precision bf16-mixed $GEN --no-progress >> "$LOG" 2>&1 || echo "generate: exit $?" >> "$LOG"
end=$(date +%s.%N)
cp "$GEN_DIR/manifest.json" "$OUT/generate_manifest.json" 2>/dev/null
$PY - "$GEN_DIR" "$start" "$end" >> "$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
m = json.loads((Path(sys.argv[1]) / "manifest.json").read_text())
wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"generate wall time incl. start-up {wall:.1f} s for {m['num_samples']} images: {3600 * m['num_samples'] / wall:.0f} images/hour "
      f"(the 'generate:' line above counts from the first batch)")
EOF

stage "bench_step without channels_last"
timeout $T_CL $PY benchmarks/bench_step.py --device $DEVICE $CL --channels-last off --json "$OUT/bench_channels_last_off.json" >> "$LOG" 2>&1 || echo "bench channels_last off: exit $?" >> "$LOG"

stage done
grep -E "^ *(32-true|bf16-mixed|16-mixed) |^preset |^parity|^  (final|collapsed|mask|verdict)|^generate|images/hour|exit" "$LOG"
ls -la "$OUT"
