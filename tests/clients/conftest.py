"""Fixtures: the mock cloud and the gateway as real subprocesses (the debug build with the
`testing` feature), wired together through a config file in a temporary directory."""

import collections
import glob
import json
import os
import subprocess
import threading
import urllib.request

import pytest

from admin import token_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("UNDERSTUDY_BIN", os.path.join(ROOT, "target", "debug", "understudy"))
# Gateways started here do not pick up an Ollama, LM Studio or llama-server that happens to run
# on this machine (zero config would put it before the embedded model).
os.environ.setdefault("UNDERSTUDY_LOCAL_SERVERS", "")


def _spawn(args, prefix, env=None):
    proc = subprocess.Popen(
        [BIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix):
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r} {proc.stderr.read()}")
    # Its log is read as it comes (the last 500 lines kept as `proc.log`): a pipe nobody reads
    # fills at 64 KiB, and a gateway logging a minute of failovers would block on it.
    proc.log = collections.deque(maxlen=500)
    threading.Thread(target=lambda: proc.log.extend(proc.stderr), daemon=True).start()
    return proc, line[len(prefix):]


class Mock:
    """The scripted mock cloud, driven over its /_mock control API."""

    def __init__(self, url):
        self.url = url

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def push(self, *replies):
        self._call("POST", "/_mock/replies", list(replies))

    def requests(self):
        return self._call("GET", "/_mock/requests")

    def reset(self):
        self._call("POST", "/_mock/reset", {})

    def hits(self):
        """Requests per `METHOD /path`, model lists (what health checks ask) included."""
        return self._call("GET", "/_mock/hits")

    def reject_keys(self, *keys):
        """Refuses these keys from now on, as the real API refuses an invalid key."""
        self._call("POST", "/_mock/keys", {"reject": list(keys)})

    def status_page(self, *incidents):
        """Declares these incidents on the mock's statuspage.io summary (none: operational):
        dicts of id, name, impact, created_at (ISO 8601) and components."""
        self._call("POST", "/_mock/statuspage", {"incidents": list(incidents)})

    def plan(self, per_request, window_ms, headers="unified"):
        """Keeps a usage plan per credential, reported in every chat answer's rate-limit headers
        and enforced with a 429 once spent."""
        self._call("POST", "/_mock/plan", {"per_request": per_request, "window_ms": window_ms, "headers": headers})

    def fail(self, rate, status=529):
        """This share of unscripted requests fails with `status` (0: none), model lists aside."""
        self._call("POST", "/_mock/fail", {"rate": rate, "status": status})

    def open_gate(self, name):
        """Sends the chunks waiting on this gate."""
        self._call("POST", f"/_mock/gates/{name}", {})

    def restate(self, words, newline=False):
        """What a model asked to continue by instruction restates first (until reset)."""
        self._call("POST", "/_mock/restate", {"words": words, "newline": newline})


@pytest.fixture(scope="session")
def mock():
    proc, url = _spawn(["mock"], "mock cloud listening on ")
    yield Mock(url)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def dead_mock():
    """A second mock cloud, scripted to fail: the primary of the `claude-chain` route."""
    proc, url = _spawn(["mock"], "mock cloud listening on ")
    yield Mock(url)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def gateway(mock, dead_mock, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("gw") / "config.toml"
    cfg.write_text(
        f"""
[journal]
path = "{cfg.parent / 'journal.sqlite3'}"

# Alone on their routes and not going on from their own broken answers: a break is the
# error the SDKs raise (continuation = "off").
[providers.anthropic]
kind = "anthropic"
base_url = "{mock.url}"
passthrough_auth = "{mock.url}"
continuation = "off"
timeouts = {{ idle = "1s" }}

[providers.openai]
kind = "openai"
base_url = "{mock.url}/v1"
passthrough_auth = "{mock.url}"
continuation = "off"
timeouts = {{ idle = "1s" }}

# Keyed providers for translated routes: a translation never forwards the client's own key.
[providers.anthropic-k]
kind = "anthropic"
base_url = "{mock.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = "off"
timeouts = {{ idle = "1s" }}

# The same, as the fallback that finishes a broken answer.
[providers.anthropic-go]
kind = "anthropic"
base_url = "{mock.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
timeouts = {{ idle = "1s" }}

[providers.openai-k]
kind = "openai"
base_url = "{mock.url}/v1"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = "off"
timeouts = {{ idle = "1s" }}

[providers.gemini]
kind = "gemini"
base_url = "{mock.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = "off"
timeouts = {{ idle = "1s" }}

# OpenAI as the fallback that finishes a broken answer (by instruction: it has no prefill).
[providers.openai-go]
kind = "openai"
base_url = "{mock.url}/v1"
api_key_env = "UNDERSTUDY_TEST_KEY"
timeouts = {{ idle = "1s" }}

# Primaries on the second mock, scripted to break; they leave the answer to their fallback.
[providers.dead]
kind = "anthropic"
base_url = "{dead_mock.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = "off"
timeouts = {{ idle = "1s" }}

[providers.dead-openai]
kind = "openai"
base_url = "{dead_mock.url}/v1"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = "off"
timeouts = {{ idle = "1s" }}

# A primary that cuts its stream, and one other backend, on a model that refuses a prefill as
# Claude 4.6+ does (or on OpenAI, which has none): it can only go on by instruction.
[[routes]]
model = "claude-cut"
backends = ["dead/claude-opus-4-6", "anthropic-go/claude-opus-4-6"]

[[routes]]
model = "gpt-cut"
backends = ["dead-openai/gpt-4o", "openai-go/gpt-4o"]

[[routes]]
model = "claude-chain"
backends = ["dead/claude-sonnet-4-5", "anthropic-go/claude-sonnet-4-5"]

[[routes]]
model = "claude-via-openai"
backends = ["openai-k/gpt-4o"]

[[routes]]
model = "claude-via-gemini"
backends = ["gemini/gemini-2.5-pro"]

[[routes]]
model = "sonnet"
backends = ["anthropic-k/claude-sonnet-4-5"]

[[routes]]
model = "claude-*"
backends = ["anthropic"]

[[routes]]
model = "gpt-*"
backends = ["openai"]
"""
    )
    # Its admin token in its own directory, not the user's config dir.
    env = dict(os.environ, UNDERSTUDY_TEST_KEY="sk-test-configured-key",
               UNDERSTUDY_ADMIN_TOKEN_FILE=token_file(cfg.parent))
    proc, url = _spawn(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"], "understudy listening on ", env=env)
    yield url
    proc.terminate()
    assert proc.wait(15) == 0, "the gateway stops cleanly on SIGTERM"


@pytest.fixture(autouse=True)
def fresh_mock(request):
    if "mock" in request.fixturenames:
        request.getfixturevalue("mock").reset()


def claude_binary():
    found = glob.glob(os.path.join(os.path.dirname(__file__), "node_modules", "@anthropic-ai", "claude-code-linux-*", "claude"))
    if not found:
        raise RuntimeError("Claude Code is not installed: run scripts/test (it runs npm install in tests/clients)")
    return found[0]


# Faithful upstream shapes (protocol.md §1.5, §2.3), kept beside the tests that use them.
TEXT = ["Hello", " from", " the", " mock", " cloud."]


def anthropic_events(parts=TEXT):
    def ev(d):
        return f"event: {d['type']}\ndata: {json.dumps(d)}\n\n"

    out = [
        ev({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    out += [ev({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}) for p in parts]
    out += [
        ev({"type": "content_block_stop", "index": 0}),
        ev({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}}),
        ev({"type": "message_stop"}),
    ]
    return out


def openai_chunks(parts=TEXT):
    def ch(delta, finish=None):
        return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    return [ch({"role": "assistant", "content": ""})] + [ch({"content": p}) for p in parts] + [ch({}, "stop"), "data: [DONE]\n\n"]


def fixture(path):
    """An upstream transcript from tests/fixtures/upstream (shared with the Rust golden tests)."""
    with open(os.path.join(ROOT, "tests", "fixtures", "upstream", path), encoding="utf-8") as f:
        return f.read()


def sse_reply(chunks, end="clean"):
    return {"status": 200, "headers": [["content-type", "text/event-stream"]],
            "body": {"kind": "chunks", "chunks": [{"text": c} for c in chunks], "end": end}}


OVERLOADED = {"status": 529, "headers": [["content-type", "application/json"]],
              "body": {"kind": "full", "text": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'}}


def chain_config(primary, secondary, head="", tail="", primary_extra=""):
    """A config whose `claude-chain` route is `primary` then `secondary` (two mock clouds)."""
    return f"""{head}
[providers.primary]
kind = "anthropic"
base_url = "{primary.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
{primary_extra}

[providers.secondary]
kind = "anthropic"
base_url = "{secondary.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
continuation = true

[[routes]]
model = "claude-chain"
backends = ["primary/claude-sonnet-4-5", "secondary/claude-sonnet-4-5"]
{tail}"""


def ask_stream(url, model="claude-chain"):
    """A streamed Anthropic request; (status, x-understudy-failed-over, body)."""
    body = json.dumps({"model": model, "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(url + "/v1/messages", data=body, method="POST")
    req.add_header("content-type", "application/json")
    req.add_header("anthropic-version", "2023-06-01")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.headers.get("x-understudy-failed-over"), r.read().decode()
