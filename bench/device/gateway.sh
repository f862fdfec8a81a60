#!/usr/bin/env bash
# The zero-config gateway on a machine with no network: an Anthropic request is answered by
# the local model. Writes PREFIX.log, PREFIX-answer.json, PREFIX-status.json.
out=$1; repo=$PWD; home=$(mktemp -d)
UNDERSTUDY_MODELS_DIR=$repo/models HOME=$home XDG_CONFIG_HOME=$home/.config XDG_DATA_HOME=$home/.local/share \
  "$repo/target/release/understudy" serve --listen 127.0.0.1:8723 > "$out.log" 2>&1 & gw=$!
for _ in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:8723/api/status && break; sleep 0.5; done
s=$(date +%s%N)
curl -s -m 120 -D "$out-headers.txt" http://127.0.0.1:8723/v1/messages -H 'x-api-key: sk-ant-none' \
  -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
  -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Say hello in one sentence."}]}' > "$out-answer.json"
echo "answer in $(( ($(date +%s%N) - s) / 1000000 )) ms, $(grep -i '^x-understudy-served-by' "$out-headers.txt" | tr -d '\r'): $(head -c 300 "$out-answer.json")"
curl -s -H "x-understudy-token: $(cat "$home/.config/understudy/admin-token")" http://127.0.0.1:8723/api/status > "$out-status.json"
python3 - "$out-status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
loc = next((p.get("local") for p in s["providers"] if p.get("local")), {}) or {}
print({k: loc.get(k) for k in ("device", "gpu_layers", "n_layers", "cpu_backend", "crashes", "loads")}, (loc.get("cpu") or {}).get("why"))
PY
grep -E "steps down|SIGILL" "$out.log" | head -2 | cut -c1-300
kill $gw; wait $gw 2>/dev/null
