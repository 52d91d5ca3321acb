#!/usr/bin/env bash
# Run HERE (the development machine, which reaches the package indexes), in the repository root, before
# benchmarks/gpu_check.sh runs on a GPU machine that reaches nothing. It fetches what that machine's image
# lacks (its python3 has torch, CuPy, cuda-bindings, numpy, scipy, scikit-image, pytest, ...):
#   .whl/  PyOpenGL + glfw (the display check) and pytorch-msssim (the portrait fit's SSIM term),
#          wheels for CPython 3.12 on x86-64, about 3.5 MB;
#   .gl/   the GL/EGL loader libraries (libglvnd) as .deb files, for headless EGL.
# Both folders are ignored by git (.gitignore) and travel with `carry`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl .gl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl PyOpenGL==3.1.10 glfw==2.11.0 pytorch-msssim==1.0.0
if command -v apt-get >/dev/null; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    apt-get $o update -qq || true
    (cd .gl && apt-get $o download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 | tail -2) || \
        echo "gpu_prepare: could not fetch the GL loader .debs; the display check may find no EGL there"
fi
ls -la .whl .gl
echo "ready: run benchmarks/gpu_check.sh on the GPU machine with carry=[\".whl\", \".gl\"]"
