#!/usr/bin/env bash
# The GPU checks whose numbers the README reports: CUDA parity tests, `unrolled bench --device cuda`,
# then the image experiments on the GPU side by side. Usage: tools/gpu_check.sh OUT_DIR [FASHION_MNIST_DIR]
# Each step has its own time limit, so one that runs long leaves the others' results.
set -u
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR [FASHION_MNIST_DIR]}
FMNIST=${2:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-python3}
export PYTHONPATH=src MPLBACKEND=Agg PYTHONUNBUFFERED=1
mkdir -p "$OUT/results"
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; nproc; } \
    > "$OUT/machine.txt" 2>&1
timeout "${T_TESTS:-100}" $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider > "$OUT/cuda_tests.log" 2>&1
echo "cuda tests rc=$?" >> "$OUT/status.txt"
timeout "${T_BENCH:-150}" $PY -m unrolled.cli bench --device cuda --sets devices,inference --repeat 2 \
    --out "$OUT/results/bench_cuda.json" > "$OUT/bench_cuda.log" 2>&1
echo "bench rc=$?" >> "$OUT/status.txt"
T=${T_EXP:-280}
run() {  # name, then the reproduce arguments
    local name=$1; shift
    timeout "$T" $PY -m unrolled.cli reproduce "$name" --device cuda --out "$OUT/results/$name" "$@" \
        > "$OUT/$name.log" 2>&1
    echo "$name rc=$?" >> "$OUT/status.txt"
}
run sulam-classify --data "fashion-mnist=$FMNIST" &
run xie-smlm &
run chen-cpss &
{   # training on the GPU: one process, then the same under torchrun (the same losses)
    timeout "$T" $PY -m unrolled.cli train tools/ddp_gpu.toml --out "$OUT/results/train-1" --device cuda --quiet --fresh
    timeout "$T" $PY -m torch.distributed.run --nproc-per-node 1 -m unrolled.cli train tools/ddp_gpu.toml \
        --out "$OUT/results/train-torchrun" --device cuda --quiet --fresh
    echo "train rc=$?" >> "$OUT/status.txt"
} > "$OUT/train.log" 2>&1 &
wait
