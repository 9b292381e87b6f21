#!/usr/bin/env bash
# One GPU's figures in one table, in at most 8 minutes on one H100: the training throughput of the faithful
# RCA classifier and DeepLab-v2 (bench/gpu_throughput.py: fp32 / bf16 / channels_last, eager and compiled)
# and the scale rehearsal of voc_rca_vgg16 and voc_rca_eps on the GPU (bench/scale_rehearsal.py: every stage
# at two sizes of VOC-shaped data, projected to the full dataset and schedule).
#
#   bash bench/gpu_suite.sh            # on the GPU machine; the table also lands in $OUT_DIR/table.md
#   bash bench/gpu_suite.sh --smoke    # every step on the CPU at a tiny size (tests/test_bench_smoke.py),
#                                      # the throughput of every preset of bench/gpu_throughput.py
#
# OUT_DIR (default bench/outputs/gpu_suite) holds each bench's JSON; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-bench/outputs/gpu_suite}
python=${PYTHON:-python}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$out"
presets=("faithful RCA (VGG-16)" "DeepLab-v2 ResNet-101")

if [[ "${1:-}" == "--smoke" ]]; then
    "$python" bench/gpu_throughput.py --device cpu --smoke --compile off --json "$out/throughput.json"
    # The built-in pipeline's tiny rehearsal stands in for the two VOC presets (hours on a CPU).
    "$python" bench/scale_rehearsal.py --smoke --json "$out/rehearsal_smoke.json" --out "$out/runs"
else
    # 3 s per setting: a step takes tens of milliseconds on an H100; compiling each setting dominates.
    "$python" bench/gpu_throughput.py --seconds 3 --presets "${presets[@]}" --json "$out/throughput.json"
    for experiment in voc_rca_vgg16 voc_rca_eps; do
        "$python" bench/scale_rehearsal.py --experiment "$experiment" --json "$out/rehearsal_$experiment.json" \
            --out "$out/runs"
    done
fi
"$python" bench/gpu_suite_table.py "$out" | tee "$out/table.md"
