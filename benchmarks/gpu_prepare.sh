#!/usr/bin/env bash
# Builds .whl/ (ignored by git): every wheel benchmarks/gpu_suite.sh installs on a GPU machine
# that has Python 3.12, torch and numpy but no network. Run it here, where the package index is
# reachable, then carry .whl/ to the GPU machine with the working tree.
#
#   bash benchmarks/gpu_prepare.sh            # PYTHON=... to pick the pip that downloads
#
# The run tool carries at most 64 MiB of ignored files: numpy and torch are left out (the GPU
# image has them) and the folder's size is checked at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=.whl
LIMIT_MB=60
# What the project needs (pyproject.toml) besides torch and numpy, and what the CUDA tests import.
PACKAGES=(
    "h5py>=3.8" "zarr>=3.1.3,<4" "numcodecs>=0.13" "dask[array]>=2024.1" "distributed>=2024.1"
    "jsonschema>=4.18" "msgspec>=0.18" "tqdm>=4.60" "fsspec" "pytest>=7"
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 linux_x86_64 any)

mkdir -p "$WHEELS"
platform_args=()
for p in "${PLATFORMS[@]}"; do
    platform_args+=(--platform "$p")
done
"$PYTHON" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${platform_args[@]}" "${PACKAGES[@]}"
# jieba is published as a source archive only; its wheel is pure Python, built here.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "jieba>=0.42"
# numpy comes in as a dependency; the GPU image's own (torch's) is the one to keep.
rm -f "$WHEELS"/numpy-*.whl

size_mb=$(du -sm "$WHEELS" | cut -f1)
ls -1 "$WHEELS"
echo "$WHEELS: $(find "$WHEELS" -name '*.whl' | wc -l) wheels, ${size_mb} MiB"
if (( size_mb > LIMIT_MB )); then
    echo "$WHEELS is over ${LIMIT_MB} MiB: the run tool carries 64 MiB of ignored files in all" >&2
    exit 1
fi
