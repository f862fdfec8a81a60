#!/usr/bin/env bash
# On the device (call 2, carry .device/b, after cuda-backend.sh): the release worker with the
# CUDA backend beside it, on the GPU; the same worker on the CPU (the variant the gateway's
# ladder would choose first, `sapphirerapids` on an AMX host, and `zen4` named: AVX-512
# without AMX), with the kernel's trap line and an AMX probe; the zero-config gateway answering
# an Anthropic request with no network (so from the local model, on the GPU, then with the
# GPU hidden); and the open-loop latency at 2,000 req/s (bench/device/p99.py).
repo=$PWD; g=/root/gpu; m=$repo/models/SmolLM2-135M-Instruct.Q4_1.gguf; r=$repo/target/release
cat "$g/model.part00" .device/b/model.part01 > "$m"
[ "$(sha256sum "$m" | cut -c1-64)" = "$(cat .device/b/model.sha256)" ] || { echo "the model did not arrive whole"; exit 1; }
mkdir -p "$r" && tar -xJf .device/b/bin.tar.xz -C "$g" && cp -a "$g/bin/." "$r/"
(cd "$g" && timeout 240 ninja -C build ggml-cuda > "$OUT/ninja2.log" 2>&1) || { tail -5 "$OUT/ninja2.log"; exit 1; }
cp "$g/build/bin/libggml-cuda.so" "$r/"
export LD_LIBRARY_PATH=$(dirname "$(command -v nvcc)")/../lib64
drive() { python3 bench/device/drive-worker.py "$@"; }
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/vram.txt" & smi=$!
drive "$OUT/worker-gpu.jsonl" "$r/understudy" worker --model "$m"
kill $smi; echo "GPU memory used, MiB: before $(head -1 "$OUT/vram.txt"), most $(sort -n "$OUT/vram.txt" | tail -1)"
CUDA_VISIBLE_DEVICES= drive "$OUT/worker-cpu.jsonl" "$r/understudy" worker --model "$m" --threads 8
CUDA_VISIBLE_DEVICES= drive "$OUT/worker-zen4.jsonl" "$r/understudy" worker --model "$m" --threads 8 --cpu-variant zen4
# A SIGILL from a real #UD leaves the kernel's "trap invalid opcode ... in lib[offset]" line;
# one from using AMX state without the process's permission (XFD) leaves none.
dmesg 2>/dev/null | grep -E "invalid opcode|trap" | tail -3
gcc -O1 -mamx-tile -mamx-int8 -pthread -o /tmp/amx-probe bench/device/amx-probe.c && /tmp/amx-probe
python3 bench/device/drive-worker.py --summary "$OUT"
for gpu in on off; do
  [ $gpu = off ] && export CUDA_VISIBLE_DEVICES=
  echo "== zero-config gateway, GPU $gpu"; bash bench/device/gateway.sh "$OUT/gw-$gpu"
done
unset CUDA_VISIBLE_DEVICES
export PATH=$r:$PATH LD_LIBRARY_PATH=$r:$LD_LIBRARY_PATH
PYTHONUNBUFFERED=1 timeout 200 python3 bench/device/p99.py 3 5 > "$OUT/p99.txt" 2>&1; tail -4 "$OUT/p99.txt"
