#!/usr/bin/env bash
# Everything issue 16 measures on a GPU, in one go that fits 8 minutes of one H100/H200 and needs
# no network: the packages the machine lacks come from .whl/ (benchmarks/gpu_prepare.sh builds it
# beforehand, where the package index is reachable).
#
#   bash benchmarks/gpu_suite.sh               # from the repository root; results in $OUT
#
# 1. the CUDA tests; 2. model tokens/s per precision and batch size (full model, random weights),
# and once without the LSTM's CUDA graphs;
# 3. precompute end to end, bfloat16, all layers and --layers 0,1 (stored float16), with the share
# of wall time the GPU is busy; 4. a profile summary (torch.profiler's top device operators and
# cProfile's top host functions) of a smaller run. Each step has its own time limit and a failed
# step does not stop the others; the summary at the end lists every step's status.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-gpu_suite_out}
PY=${PYTHON:-python3}
export PY
TOKENS=${TOKENS:-1000000}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [[ -d shared/fixtures/elmo ]]; then
    export ELMO_FIXTURES=${ELMO_FIXTURES:-$PWD/shared/fixtures/elmo}
fi
SUMMARY=()
START=$SECONDS

# step NAME LIMIT_S COMMAND...: runs COMMAND (a program; a function through bash -c after
# export -f) under a time limit, its output in $OUT/NAME.log.
step() {
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    SUMMARY+=("$name: rc $rc in $((SECONDS - began))s")
    return "$rc"
}

setup_python() {
    local needed="import h5py, zarr, numcodecs, dask.array, distributed, jsonschema, msgspec, tqdm, jieba, pytest"
    if "$PY" -c "$needed" 2>/dev/null; then
        return 0
    fi
    if [[ ! -d .whl ]]; then
        echo "missing packages and no .whl/ folder: run benchmarks/gpu_prepare.sh where there is network" >&2
        return 1
    fi
    local packages=(h5py zarr numcodecs "dask[array]" distributed jsonschema msgspec tqdm fsspec pytest jieba)
    # A venv over the system's packages keeps the image's torch and numpy and needs no root.
    if "$PY" -m venv --system-site-packages .gpu-venv; then
        PY=$PWD/.gpu-venv/bin/python
        "$PY" -m pip install --quiet --no-index --find-links .whl "${packages[@]}"
    else
        "$PY" -m pip install --quiet --no-index --find-links .whl --break-system-packages "${packages[@]}"
    fi
    "$PY" -c "$needed"
}

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
began=$SECONDS
setup_python >"$OUT/setup.log" 2>&1
rc=$?
tail -n 20 "$OUT/setup.log"
SUMMARY+=("setup: rc $rc in $((SECONDS - began))s")
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"

mapfile -t cuda_tests < <(grep -l "cuda" tests/test_*.py)
step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -k "cuda or gpu" "${cuda_tests[@]}"

# Model alone: bfloat16 across batch sizes (sentences), then the three precisions at 4096.
model_rates() {
    local size dtype
    for size in 256 1024 4096 8192; do
        printf 'bfloat16 batch %5d: ' "$size"
        "$PY" benchmarks/bilm_throughput.py --worker full ours 3 "$size" cuda bfloat16
    done
    printf 'bfloat16 batch  4096, no CUDA graphs: '
    "$PY" benchmarks/bilm_throughput.py --worker full eager 3 4096 cuda bfloat16
    for dtype in float16 float32; do
        printf '%s batch  4096: ' "$dtype"
        "$PY" benchmarks/bilm_throughput.py --worker full ours 3 4096 cuda "$dtype"
    done
}
export -f model_rates
step model 150 bash -c model_rates

# End to end: one input (about $TOKENS stored tokens), two layer choices; batch size by default
# (from free GPU memory).
pipeline=("$PY" benchmarks/pipeline.py --model full --device cuda --compute-dtype bfloat16
          --part-bytes 1048576 --folder "$OUT" --input "$OUT/squad_like.jsonl" --tokens "$TOKENS")
step end_to_end_all_layers 120 "${pipeline[@]}" --layers 0,1,2
step end_to_end_layers_0_1 90 "${pipeline[@]}" --layers 0,1

# Where the time goes, on a tenth of the input.
step profile 90 "$PY" benchmarks/pipeline.py --model full --device cuda --compute-dtype bfloat16 --layers 0,1 \
    --folder "$OUT" --tokens $((TOKENS / 10)) --torch-profile --profile

echo "=== summary ($((SECONDS - START))s in all)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
"$PY" - "$OUT"/end_to_end_*.log <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, sys
for path in sys.argv[1:]:
    text = open(path).read()
    try:
        report = json.loads(text[text.index("{"):text.rindex("}") + 1])
    except ValueError:
        print(f"{path}: no report")
        continue
    keys = ("device", "layers", "compute_dtype", "batch_tokens", "stored_tokens", "wall_s", "stored_tokens_per_s",
            "gpu_busy_after_planning", "gpu_busy_whole_run")
    print(path, {k: report.get(k) for k in keys})
PYEOF
rm -f "$OUT/squad_like.jsonl"
