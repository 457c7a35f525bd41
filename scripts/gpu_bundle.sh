#!/usr/bin/env bash
# make gpu-bundle: what scripts/gpu_check.sh needs on a bare CUDA machine besides the git working tree and the
# machine's own Python 3.12 + CUDA torch (README "The GPU check"). Writes ONE ignored folder, BUNDLE
# (default .gpu-bundle/, under 50 MiB), for the device tool's `carry`:
#   wheels/      CPython 3.12 manylinux x86_64 wheels (pure, abi3 or cp312) of the packages aotp needs that the
#                GPU image lacks or has in a version aotp cannot use: transformers 4.57.6 (the image has 5.x),
#                the tokenizers and huggingface_hub that transformers 4.57.6 accepts (the image's 0.23 / 1.x fail
#                its requirements), adapters, hydra-core, omegaconf, antlr4-python3-runtime (an sdist on PyPI:
#                built here into a wheel). aotp itself is not a wheel: the check runs the working tree.
#   data/        glue/SST-2 files whose examples are all > 128 tokens (python scripts/gpu_check.py data), so that
#                the check's batches are 32 x 128 tokens, made from the tracked data/demo rows
#   manifest.json  names, versions, tags, sha256 and bytes of every file, why each wheel is carried, and every
#                runtime requirement of aotp and of the wheels with what meets it (bundle or image); the script
#                fails when one is unmet, when two versions of a package would travel, or over 50 MiB
#   SHA256SUMS   for `sha256sum -c` (gpu_check.sh verifies it before installing)
# Usage: scripts/gpu_bundle.sh [BUNDLE]   (PY: a python with pip and packaging, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-${BUNDLE:-.gpu-bundle}}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# One version of each (the versions .venv resolves and the test suite runs against; pyproject.toml's ranges).
WHEELS=(transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 adapters==1.3.0 hydra-core==1.3.8
        omegaconf==2.3.1)
SDISTS=(antlr4-python3-runtime==4.9.3)
PLATFORM_ARGS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
               --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
               --platform manylinux1_x86_64)
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

parent=$(dirname "$BUNDLE")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.gpu-bundle.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/wheels"
echo "gpu-bundle: downloading ${WHEELS[*]} for CPython 3.12 manylinux x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM_ARGS[@]}" -d "$tmp/wheels" "${WHEELS[@]}" 2>&1 | quiet
echo "gpu-bundle: building ${SDISTS[*]} from its sdist into a wheel"
"$PY" -m pip wheel -q --no-deps --no-binary :all: -w "$tmp/wheels" "${SDISTS[@]}" 2>&1 | quiet
"$PY" scripts/gpu_check.py data data/demo "$tmp/data"
"$PY" scripts/gpu_check.py manifest "$tmp"
rm -rf "$BUNDLE"
mv "$tmp" "$BUNDLE"
trap - EXIT
echo "gpu-bundle: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); carry it with the device tool: carry=[\"$BUNDLE\"]"
