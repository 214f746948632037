#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine (torch CPU wheel first, the package with its dev and
# triton extras, llama.cpp from PyPI's llama-cpp-python sdist), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# torch first, pinned to the CPU wheel: any other torch request can pull gigabytes of CUDA packages.
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -e ".[dev,triton]"
python3 -c "import mxfp4.codec.native as n; assert n.available(), 'native kernels failed to build'; print('native kernels: built')"

# llama.cpp, the GGUF reference: its converter (tests compare our GGUF with what it writes) and its
# runtime (tests run our GGUF in it) both come from llama-cpp-python's source distribution on PyPI.
LLAMA_CPP_PYTHON=0.3.36
SDIST=.cache/sdist/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz
if [ ! -f "$SDIST" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON}" -d .cache/sdist
fi
if [ ! -f .cache/llama.cpp/convert_hf_to_gguf.py ]; then
  rm -rf .cache/llama.cpp .cache/extract && mkdir -p .cache/extract
  tar -xzf "$SDIST" -C .cache/extract --wildcards \
    "*/vendor/llama.cpp/convert_hf_to_gguf.py" "*/vendor/llama.cpp/conversion/*" "*/vendor/llama.cpp/gguf-py/*"
  mv .cache/extract/*/vendor/llama.cpp .cache/llama.cpp && rm -rf .cache/extract
fi
if ! python3 -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python ${LLAMA_CPP_PYTHON} (a few minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    python3 -m pip install --quiet "$SDIST"
fi

# transformers 5.23.0 apart from the installed one (its own folder, no dependencies: 5.24's serve it): the release that
# saves a dequantized gpt-oss under the packed names (broken form 1), which a test makes for real.
if [ ! -f .cache/transformers-5.23/transformers/__init__.py ]; then
  python3 -m pip install --quiet --no-deps --target .cache/transformers-5.23 "transformers==5.23.0"
fi

# Lint and formatting are part of passing (ruff, from the dev extra; configured in pyproject.toml).
python3 -m ruff check .
python3 -m ruff format --check .

# -rs lists every skip with its reason; a skip outside tests/conftest.py's ALLOWED_SKIPS (no GPU, a filesystem that
# refuses O_DIRECT) fails the run, so a missing package cannot drop tests silently. Hypothesis runs its "ci" profile.
MXFP4_STRICT_SKIPS=1 HYPOTHESIS_PROFILE=ci python3 -m pytest -q -rs "$@"
