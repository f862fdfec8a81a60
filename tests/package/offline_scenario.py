"""Run under `unshare -rn` (a network namespace with only loopback): `understudy` (argv[1])
with zero config and no keys, from a scratch HOME holding only the default model, answers a
first request from the local model, as `scripts/run` on a machine with no keys and no network
would. Prints the answer and the gateway's status (read with the admin token the gateway made
at its default place, the scratch HOME's config dir) as JSON."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from admin import admin_request, default_token_file  # noqa: E402
from local_scenario import stop  # noqa: E402
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(binary, home):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    models = os.path.join(home, ".local", "share", "understudy", "models")
    os.makedirs(models)
    shutil.copy(os.path.join(ROOT, "models", MODEL), models)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "RUST_LOG": "understudy=info"}
    gw = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    try:
        line = gw.stdout.readline().strip()
        prefix = "understudy listening on "
        assert line.startswith(prefix), (line, gw.stderr.read())
        url = line[len(prefix):]
        req = urllib.request.Request(url + "/v1/messages", method="POST", data=json.dumps({
            "model": "claude-sonnet-4-5", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}).encode(),
            # As Claude Code sends it: its own credential, which would pass through to Anthropic.
            headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                     "x-api-key": "sk-ant-test-not-a-real-key"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                out["code"], out["answer"] = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            out["code"], out["answer"] = e.code, json.loads(e.read())
        with urllib.request.urlopen(admin_request(url + "/api/status", default_token_file(home))) as r:
            out["status"] = json.loads(r.read())
    finally:
        stop(gw)
    print(json.dumps(out))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        main(sys.argv[1], home)
