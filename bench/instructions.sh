#!/usr/bin/env bash
# Instructions per request in the gateway's own process (all its threads), counted by
# callgrind: exact and the same from run to run, where this project's CI and bench hosts are
# noisy VMs on which time per request swings by a third between runs.
#   bench/instructions.sh BIN [plain|plain-stream|whole|stream|translate|openai-whole] [small|claude-code]
# BIN: an `understudy` built with `--features testing` (the mock), best the `profiling` profile
# (`cargo build --profile profiling --no-default-features --features testing`) for symbols.
# `plain` forwards a whole answer as it comes; `plain-stream` a streamed request the same way
# (continuation off); `whole` (the default) asks for a whole answer as a stream;
# `stream` is a streamed request passed through with continuation on (zero config's route);
# `translate` a streamed request served from the mock's OpenAI-compatible endpoint;
# `openai-whole` an OpenAI client's non-streaming request to an OpenAI-compatible provider
# (the default: asked as a stream and rebuilt).
# `small` is the paths benchmark's 20-token request; `claude-code` a 97 KB request shaped like
# Claude Code's (system prompt, 20 tool schemas, ten turns with code).
# Needs valgrind and wrk (apt). Prints the count; the callgrind file stays in the work dir.
set -euo pipefail
bin=$(realpath "$1"); conf=${2:-plain}; body=${3:-small}
work=$(mktemp -d /tmp/understudy-instructions.XXXXXX)
mport=$((20000 + RANDOM % 20000)); gport=$((mport + 1))
cleanup() { kill "${mock:-}" "${gw:-}" 2>/dev/null || true; }
trap cleanup EXIT
python3 - "$work" "$body" "$conf" <<'PY'
import json, sys
work, kind, conf = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "small":
    body = {"model": "claude-sonnet-4-5", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Say the benchmark words."}]}
else:
    tools = [{"name": f"tool_{i}", "description": "Does a thing. " * 40,
              "input_schema": {"type": "object", "required": ["p0"], "properties": {
                  f"p{j}": {"type": "string", "description": 'a parameter "quoted" and long ' * 5} for j in range(8)}}}
             for i in range(20)]
    turns = []
    for _ in range(10):
        turns.append({"role": "user", "content": [{"type": "text", "text": "Please look at the file src/main.rs and fix the bug. " * 30}]})
        turns.append({"role": "assistant", "content": [{"type": "text", "text": 'Sure, here is what I found:\n```rust\nfn main() { println!("hi"); }\n```\n' * 20}]})
    turns.append({"role": "user", "content": "Go on."})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 256, "system": [{"type": "text", "text": "You are Claude Code. " * 800}],
            "tools": tools, "messages": turns}
if conf in ("stream", "plain-stream", "translate"):
    body["stream"] = True
if conf == "openai-whole":
    body = {"model": body["model"], "max_tokens": body["max_tokens"],
            "messages": ([{"role": "system", "content": body["system"][0]["text"]}] if "system" in body else [])
            + [{"role": m["role"], "content": json.dumps(m["content"])} for m in body["messages"]]}
lua = ['wrk.method = "POST"', "wrk.body = " + json.dumps(json.dumps(body))]
lua += [f'wrk.headers["{k}"] = "{v}"' for k, v in
        {"x-api-key": "bench-client-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}.items()]
open(f"{work}/req.lua", "w").write("\n".join(lua) + "\n")
PY
case $conf in
  translate|openai-whole) provider='[providers.openai]
kind = "openai"
base_url = "http://127.0.0.1:'$mport'/v1"
api_key_env = "BENCH_KEY"'; backend='"openai/gpt-4o"' ;;
  *) provider='[providers.anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:'$mport'"
passthrough_auth = "http://127.0.0.1:'$mport'"'
     [ "$conf" = stream ] || provider="$provider
continuation = \"off\""
     case $conf in plain|plain-stream) provider="$provider
stream_whole_answers = false" ;; esac
     backend='"anthropic"'
     # Somewhere to continue a break, so the stream keeps what the client has, as zero
     # config's route does (its last backend the local model; never reached here).
     [ "$conf" = stream ] && provider="$provider
[providers.spare]
kind = \"anthropic\"
base_url = \"http://127.0.0.1:$mport\"
passthrough_auth = \"http://127.0.0.1:$mport\"" && backend='"anthropic", "spare"'
     ;;
esac
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$gport"
$provider
[[routes]]
model = "claude-*"
backends = [$backend]
TOML
"$bin" mock --listen "127.0.0.1:$mport" --tokens 20 --no-record > "$work/mock.log" 2>&1 & mock=$!
BENCH_KEY=bench-key HOME=$work XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config RUST_LOG=warn \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
  "$bin" serve --config "$work/config.toml" > "$work/gateway.log" 2>&1 & gw=$!
for _ in $(seq 120); do curl -s -o /dev/null "http://127.0.0.1:$gport/api/status" && break; sleep 0.5; done
url="http://127.0.0.1:$gport/v1/messages"
[ "$conf" = openai-whole ] && url="http://127.0.0.1:$gport/v1/chat/completions"
wrk -t1 -c8 -d4s -s "$work/req.lua" "$url" > /dev/null         # warm: pool, caches, journal
callgrind_control -i on "$gw" > /dev/null 2>&1
n=$(wrk -t1 -c8 -d8s -s "$work/req.lua" "$url" | awk '/requests in/ {print $1}')
callgrind_control -i off "$gw" > /dev/null 2>&1
callgrind_control -d "$gw" > /dev/null 2>&1
sleep 2
total=$(grep -h '^totals:' "$work"/callgrind.out* | awk '{s += $2} END {print s}')
echo "$conf, $body body: $n requests, $((total / n)) instructions per request ($work)"
