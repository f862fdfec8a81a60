#!/usr/bin/env bash
# Packs what the GPU checks need onto a lent device machine (the workplace's `device` tool:
# an NVIDIA machine with nvcc, cmake and ninja, no Rust and no network), in two loads under
# its 64 MiB a call: .device/a (llama.cpp's sources, as llama-cpp-sys-2 vendors them, and
# the first part of the model) and .device/b (the release binaries, stripped, and the rest
# of the model). Then, on the device, from the repository root:
#   call 1, carry [".device/a"]:  bash bench/device/cuda-backend.sh
#   call 2, carry [".device/b"]:  bash bench/device/gpu-check.sh
# (the second within the machine's warm window: the first call's build and model part live
# in /root/gpu, outside the working tree). Needs the release build `scripts/bench` makes (the
# gateway with its mock cloud, for the open loop there, and the load generator) first.
set -euo pipefail
cd "$(dirname "$0")/../.."
rel=target/release
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
if ! $rel/understudy mock --help > /dev/null 2>&1 || [ ! -x $rel/understudy-load ] || [ ! -x $rel/understudy-bare-relay ]; then
  echo "build first: cargo build --release --features testing --bin understudy && cargo build --release -p understudy-bench" >&2
  exit 1
fi
[ -f $model ] || { echo "the model is missing: scripts/run or scripts/test fetch it into models/" >&2; exit 1; }
# The llama.cpp this build linked: llama-cpp-sys-2's version in Cargo.lock.
ver=$(awk '/^name = "llama-cpp-sys-2"/ {getline; gsub(/[" ]/, "", $0); sub("version=", ""); print}' Cargo.lock)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$ver" | head -1)
rm -rf .device && mkdir -p .device/a .device/b
# Only the CPU and CUDA backends are built there; the others' sources stay behind.
tar -C "$src" -cJf .device/a/llama-src.tar.xz --exclude='llama.cpp/models' --exclude='llama.cpp/docs' \
  $(for b in et metal hexagon sycl vulkan opencl cann webgpu zdnn zendnn openvino virtgpu musa rpc; do
      echo "--exclude=llama.cpp/ggml/src/ggml-$b"; done) llama.cpp
sha256sum $model | cut -c1-64 > .device/b/model.sha256
split -b 52000000 -d $model .device/model.part
mv .device/model.part00 .device/a/ && mv .device/model.part01 .device/b/
bin=$(mktemp -d)/bin && mkdir -p "$bin"
for f in understudy understudy-load understudy-bare-relay $(cat $rel/understudy-libs.txt); do strip -o "$bin/$f" "$rel/$f"; done
# wrk for the open-loop latency run, with its LuaJIT.
cp "$(command -v wrk)" "$bin/" && cp -L "$(ldd "$(command -v wrk)" | awk '/luajit/ {print $3}')" "$bin/"
tar -C "$(dirname "$bin")" -cJf .device/b/bin.tar.xz bin
du -sh .device/a .device/b
