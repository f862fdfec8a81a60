#!/usr/bin/env bash
# On the device (call 1, carry .device/a): ggml's CUDA backend as the `cuda` feature builds
# it (a dynamic backend, GGML_BACKEND_DL, from the llama.cpp the worker links), for Hopper
# (sm_90) only; and the host's description. The crate's llama.cpp ships without its tools, so
# none are configured. Bounded by `timeout`: gpu-check.sh finishes an unfinished build.
repo=$PWD; g=/root/gpu; mkdir -p "$g"; cp .device/a/model.part00 "$g/"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  lscpu | grep -E "Model name|^CPU\(s\)"; uname -r
  grep -o -w -E "amx_tile|amx_int8|amx_bf16|avx512f|avx512_vnni|avx512_bf16|avx512vbmi" /proc/cpuinfo | sort | uniq -c
  head -1 /etc/os-release; ldd --version | head -1; cmake --version | head -1; gcc --version | head -1; } > "$OUT/host.txt" 2>&1
cat "$OUT/host.txt"
cd "$g" && tar -xJf "$repo/.device/a/llama-src.tar.xz"
cmake -S llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF \
  -DLLAMA_BUILD_APP=OFF > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
start=$(date +%s)
timeout 400 ninja -C build ggml-cuda > "$OUT/ninja.log" 2>&1
echo "ninja rc=$? after $(( $(date +%s) - start )) s"; tail -2 "$OUT/ninja.log"
