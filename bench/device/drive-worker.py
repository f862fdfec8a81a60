"""Drives `understudy worker` over its JSON lines (src/providers/local/protocol.rs): two
requests, the second once the first is done (so it is warm), then closes its input.

    python3 drive-worker.py OUT.jsonl WORKER-ARGV...   the run; stderr to OUT.err
    python3 drive-worker.py --summary DIR              where each worker-*.jsonl in DIR ran
                                                       the model, and tokens a second
"""
import glob
import json
import os
import subprocess
import sys
import time

PROMPTS = ["Write a long story about a lighthouse keeper.", "Explain TCP slow start in detail."]
MAX_TOKENS = int(os.environ.get("MAXTOK", "256"))


def drive(out, argv):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(out.replace(".jsonl", ".err"), "w"), text=True)
    deadline, sent = time.time() + 110, 0

    def send():
        nonlocal sent
        sent += 1
        req = {"op": "generate", "id": sent, "messages": [{"role": "user", "content": PROMPTS[sent - 1]}],
               "max_tokens": MAX_TOKENS, "temperature": 0}
        p.stdin.write(json.dumps(req) + "\n")
        p.stdin.flush()

    with open(out, "w") as f:
        send()
        for line in p.stdout:
            f.write(line)
            ev = json.loads(line) if line.startswith("{") else {}
            if ev.get("event") in ("done", "error"):
                if sent == len(PROMPTS):
                    break
                send()
            if time.time() > deadline:
                break
    p.stdin.close()
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "killed"
    print(f"{os.path.basename(out)}: worker exit {rc}" + (" (SIGILL)" if rc == -4 else ""))


def summary(d):
    for path in sorted(glob.glob(os.path.join(d, "worker-*.jsonl"))):
        lines = []
        for l in open(path):
            try:
                lines.append(json.loads(l))
            except ValueError:
                pass
        ready = next((l for l in lines if l.get("event") == "ready"), None)
        keys = ("device", "gpu_layers", "n_layers", "n_ctx", "kv_type", "threads", "cpu_backend")
        print(f"== {os.path.basename(path)}: {json.dumps({k: ready.get(k) for k in keys}) if ready else 'never ready'}")
        for d_ in (l for l in lines if l.get("event") == "done"):
            text = "".join(l.get("text", "") for l in lines if l.get("event") == "text" and l.get("id") == d_["id"])
            gen = d_["completion_tokens"] / (d_["gen_ms"] / 1000) if d_.get("gen_ms") else 0
            pp = d_["prompt_tokens"] / (d_["prompt_ms"] / 1000) if d_.get("prompt_ms") else 0
            print(f"   {d_['completion_tokens']} tokens in {d_['gen_ms']} ms ({gen:.0f}/s); prompt {d_['prompt_tokens']} "
                  f"in {d_['prompt_ms']} ms ({pp:.0f}/s); {d_['reason']}; {text[:60]!r}")
        if not any(l.get("event") == "done" for l in lines):
            print("   no answer; stderr:", open(path.replace(".jsonl", ".err")).read()[-400:])


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2])
    else:
        drive(sys.argv[1], sys.argv[2:])
