"""One run of Claude Code through a gateway whose answer must come from the embedded model.

`run()` starts `understudy serve` (a config file, or zero config from an empty HOME), runs
`claude -p` against it, and returns Claude Code's output with the gateway's `/api/status`
afterwards (read with the admin token, which the gateway keeps in a file in HOME). Run as a
script (`python3 local_scenario.py IN.json OUT.json`) it does the same inside whatever network
namespace it was started in: the no-network test runs it under `unshare -rn`, where only a
loopback interface exists.
"""

import json
import os
import subprocess
import sys
import urllib.request

from admin import admin_request, token_file

HERE = os.path.dirname(os.path.abspath(__file__))


def claude_binary():
    import glob
    found = glob.glob(os.path.join(HERE, "node_modules", "@anthropic-ai", "claude-code-linux-*", "claude"))
    if not found:
        raise RuntimeError("Claude Code is not installed: run scripts/test (it runs npm install in tests/clients)")
    return found[0]


def status_of(url, token):
    with urllib.request.urlopen(admin_request(url + "/api/status", token)) as r:
        return json.loads(r.read())


def side_request(url):
    """What Claude Code sends beside its main conversation (a title or summary, under a
    Haiku-class model id, with a system prompt of its own)."""
    body = {"model": "claude-haiku-4-5", "max_tokens": 16,
            "system": "Write a five-word title for the conversation below. Answer with the title only.",
            "messages": [{"role": "user", "content": "The user asked to say hello and then to say it again."}]}
    req = urllib.request.Request(url + "/v1/messages", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", "x-api-key": "sk-ant-test-not-a-real-key",
                                          "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status


def turns(bin_path, home, models_dir, prompts, side=True, bring_up_loopback=False):
    """Claude Code's first turn (`claude -p`), then each next one continuing the same session
    (`claude -p --continue`), with a side request between turns when `side`. After each turn:
    the local engine's answers so far (`local.recent`: prompt and cached tokens, prompt time)
    and the request feed (time to first token)."""
    return run(bin_path, home, models_dir, prompts, bring_up_loopback=bring_up_loopback, side=side)


def run(bin_path, home, models_dir, prompt, config=None, bring_up_loopback=False, side=False):
    if bring_up_loopback:
        # A fresh network namespace has only `lo`, and it is down.
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    token = token_file(home)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": home,
        "UNDERSTUDY_ADMIN_TOKEN_FILE": token,
        "UNDERSTUDY_MODELS_DIR": models_dir,
        "UNDERSTUDY_WORKER_BIN": bin_path,
        "RUST_LOG": "understudy=info",
        # Zero config here is the embedded model's: no local model server is asked.
        "UNDERSTUDY_LOCAL_SERVERS": "",
    }
    args = [bin_path, "serve", "--listen", "127.0.0.1:0"]
    if config:
        args += ["--config", config]
    gw = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = gw.stdout.readline().strip()
        prefix = "understudy listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"the gateway did not start: {line!r} {gw.stderr.read()}")
        url = line[len(prefix):]
        claude_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            # A tiny model rambles: bound its answers so the test stays quick.
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1024",
        }
        prompts = [prompt] if isinstance(prompt, str) else prompt
        done = []
        for n, p in enumerate(prompts):
            if n and side:
                side_request(url)
            args = [claude_binary(), "-p"] + (["--continue"] if n else []) + [p]
            # A 135M model at Claude Code's temperature sometimes runs past the limit, which
            # Claude Code reports as an error: that (and only that) earns another try. The
            # prompt is cached in the worker by then, so a try costs only the answer.
            tries = []
            for _ in range(3):
                out = subprocess.run(args, env=claude_env, capture_output=True, text=True,
                                     timeout=900, stdin=subprocess.DEVNULL, cwd=home)
                tries.append({"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr})
                if out.returncode == 0 or "output token maximum" not in out.stdout + out.stderr:
                    break
            status = status_of(url, token)
            with urllib.request.urlopen(admin_request(url + "/api/requests", token)) as r:
                feed = json.loads(r.read())
            done.append({**tries[-1], "tries": tries, "status": status, "requests": feed})
        return {**done[-1], "turns": done}
    finally:
        stop(gw)


def stop(gw):
    """Stops a gateway started with pipes, passes on the end of what it logged, and returns
    that end."""
    gw.terminate()
    try:
        _, err = gw.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        gw.kill()
        _, err = gw.communicate()
    # The whole log: a long Claude Code session pushes its first lines (the network found
    # down) out of any tail.
    sys.stderr.write(err)
    return err[-6000:]


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        kwargs = json.load(f)
    result = run(**kwargs)
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
