#!/usr/bin/env python3
"""The benchmark harness: Understudy and its peers on the same mock clouds, the same machine,
the same run. `scripts/bench` installs what this needs and runs it inside a loopback-only
network namespace; see BENCHMARKS.md.

    harness.py peers  [--rounds N] [--secs S] [--only NAME,...]
    harness.py soak   [--minutes M]
    harness.py paths  [--rounds N] [--secs S] [--rate R]   (bench/paths.py)
    harness.py phases [--rounds N] [--secs S] [--rate R]   (bench/phases.py)
    harness.py memory [--streams N] [--burst S] [--after S]

Everything is measured client-side by `understudy-load`; "added" is a gateway's percentile
minus the direct path's in the same round, median over rounds.
"""

import argparse
import copy
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "understudy"
LOAD = ROOT / "target" / "release" / "understudy-load"
BARE = ROOT / "target" / "release" / "understudy-bare-relay"
PEERS = ROOT / "target" / "bench"
RESULTS = ROOT / "bench" / "results"
TOKENS = 20
TOKENS_PER_SEC = 500
EXPECT = "w0" + "".join(f" w{i}" for i in range(1, TOKENS))
KEY = "sk-bench-not-a-secret"
# Two cores: for throughput the gateway on one, the mocks and the load generator on the other.
# For latency at a fixed rate (the peers run) the gateway may run on either: pinned apart,
# every request crosses cores four times, and on the first passes' Intel VM one crossing alone
# (the mock on the other core, no gateway) added up to 0.9 ms at p99. (On the AMD VM of the
# eighth pass the paths run found the opposite, a gateway sharing CPU 0 preempted by the mock
# and the load about once a request, and gives each relay its own CPU: paths.py.)
GATEWAY_CPU, LOAD_CPU = "1", "0"
LATENCY_CPUS = {0, 1}


def say(*a):
    print("==>", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1:
        return ["taskset", "-c", cpu, *argv]
    return argv


def wait_http(url, secs=60, proc=None):
    import urllib.request
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception as e:  # noqa: BLE001 - any answer or refusal: keep polling
            if hasattr(e, "code"):
                return  # an HTTP error status is an answer: it is up
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {secs}s")


def tree_pids(pid):
    """pid and all its descendants."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mib(pid):
    """RSS of a process and its descendants (taskset execs, so the pid is the program's)."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def affine(g, cpus):
    """Sets the CPUs of every thread of a gateway's process tree (not the direct path's mock)."""
    if isinstance(g, Direct) or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    for pid in tree_pids(g.pid()):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Proc:
    """A subprocess with its log in the work dir, stopped with its process group."""

    def __init__(self, name, argv, work, env=None, cwd=None):
        self.name = name
        self.log = work / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(argv, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                  env=full_env, cwd=cwd, start_new_session=True)

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)

    def tail(self):
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""


class Mock:
    def __init__(self, name, work, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(f"mock-{name}", pinned(LOAD_CPU, [
            str(BIN), "mock", "--listen", f"127.0.0.1:{self.port}", "--tokens", str(TOKENS),
            "--no-record", *flags]), work)
        wait_http(self.url + "/_mock/stats", proc=self.proc.p)

    def stats(self):
        import urllib.request
        return json.loads(urllib.request.urlopen(self.url + "/_mock/stats").read())

    def reset(self):
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(self.url + "/_mock/reset", data=b"", method="POST")).read()


def make_mocks(work, fail_rate):
    """The mock clouds: `healthy` answers at once (throughput and latency: what the gateway
    adds stands out), `paced` streams at TOKENS_PER_SEC (time to first token), `overloaded`
    answers 529 to `fail_rate` of its requests, `truncating` cuts 30 % of its paced streams
    halfway with a clean end."""
    pace = ["--tokens-per-sec", str(TOKENS_PER_SEC)]
    return {
        "healthy": Mock("healthy", work),
        "paced": Mock("paced", work, *pace),
        "overloaded": Mock("overloaded", work, "--fail-rate", fail_rate, "--fail-status", "529"),
        "truncating": Mock("truncating", work, "--truncate-rate", "0.3", *pace),
    }


# --- the gateways -------------------------------------------------------------------------
# Each knows how to start on the mocks and how a client asks it for one of four models:
# "bench" (the healthy mock), "bench-paced" (the paced one), "bench-529" (a primary answering
# 529, then the healthy one), "bench-trunc" (a primary truncating 30 % of streams, then the
# healthy one).

class Gateway:
    name = "?"
    api = "openai"

    def __init__(self, mocks, work):
        self.mocks, self.work = mocks, work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def endpoint(self, model="bench"):
        return self.url + ("/v1/messages" if self.api == "anthropic" else "/v1/chat/completions")

    def request(self, model):
        """(model field, extra headers) for one of the three models."""
        return model, []

    def pid(self):
        return self.proc.p.pid

    def stop(self):
        self.proc.stop()


class Direct(Gateway):
    """No gateway: the healthy mock itself."""

    def __init__(self, mocks, work, api="openai"):
        super().__init__(mocks, work)
        self.api = api
        self.name = "direct" if api == "openai" else "direct (Anthropic API)"
        self.url = mocks["healthy"].url
        self.proc = mocks["healthy"].proc

    def endpoint(self, model="bench"):
        url = self.mocks["paced"].url if model == "bench-paced" else self.url
        return url + ("/v1/messages" if self.api == "anthropic" else "/v1/chat/completions")

    def stop(self):
        pass


def start_understudy(name, work, port, config):
    """The release gateway on `config` (TOML after its `[server]` table), listening on `port`,
    pinned to the gateway's CPU, with a home of its own; returns once it answers."""
    home = work / f"home-{name}"
    home.mkdir(exist_ok=True)
    cfg = work / f"{name}.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n' + config)
    env = {"BENCH_KEY": KEY, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
           "RUST_LOG": "warn"}
    proc = Proc(name, pinned(GATEWAY_CPU, [str(BIN), "serve", "--config", str(cfg)]), work, env)
    wait_http(f"http://127.0.0.1:{port}/api/status", proc=proc.p)
    return proc


class Understudy(Gateway):
    def __init__(self, mocks, work, api="openai"):
        super().__init__(mocks, work)
        self.api = api
        self.name = "Understudy" if api == "openai" else "Understudy (Anthropic → OpenAI)"
        m = {k: v.url for k, v in mocks.items()}
        self.proc = start_understudy(f"understudy-{api}", work, self.port, f"""
[providers.healthy]
kind = "openai"
base_url = "{m['healthy']}/v1"
api_key_env = "BENCH_KEY"
continuation = true

[providers.paced]
kind = "openai"
base_url = "{m['paced']}/v1"
api_key_env = "BENCH_KEY"

[providers.overloaded]
kind = "openai"
base_url = "{m['overloaded']}/v1"
api_key_env = "BENCH_KEY"

[providers.truncating]
kind = "openai"
base_url = "{m['truncating']}/v1"
api_key_env = "BENCH_KEY"

[[routes]]
model = "bench"
backends = ["healthy/bench"]

[[routes]]
model = "bench-paced"
backends = ["paced/bench"]

[[routes]]
model = "bench-529"
backends = ["overloaded/bench", "healthy/bench"]

[[routes]]
model = "bench-trunc"
backends = ["truncating/bench", "healthy/bench"]
""")


class LiteLLM(Gateway):
    name = "LiteLLM"

    def __init__(self, mocks, work):
        super().__init__(mocks, work)
        m = {k: v.url for k, v in mocks.items()}
        cfg = work / "litellm.yaml"

        def entry(name, mock):
            return (f"  - model_name: {name}\n    litellm_params:\n      model: openai/bench\n"
                    f"      api_base: {m[mock]}/v1\n      api_key: {KEY}\n")
        cfg.write_text("model_list:\n" + entry("bench", "healthy") + entry("bench-paced", "paced")
                       + entry("bench-529", "overloaded") + entry("bench-trunc", "truncating")
                       + "router_settings:\n  fallbacks: [{\"bench-529\": [\"bench\"]}, {\"bench-trunc\": [\"bench\"]}]\n"
                       + "litellm_settings:\n  telemetry: false\n  turn_off_message_logging: true\n"
                       + "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n")
        venv = PEERS / "litellm"
        env = {"LITELLM_MASTER_KEY": "sk-master-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR", "HOME": str(work),
               "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
        self.proc = Proc("litellm", pinned(GATEWAY_CPU, [str(venv / "bin" / "litellm"), "--config", str(cfg),
                                                         "--host", "127.0.0.1", "--port", str(self.port)]),
                         work, env)
        wait_http(self.url + "/health/liveliness", secs=180, proc=self.proc.p)

    def request(self, model):
        return model, ["authorization: Bearer sk-master-bench"]


class Portkey(Gateway):
    name = "Portkey"

    def __init__(self, mocks, work):
        super().__init__(mocks, work)
        self.m = {k: v.url for k, v in mocks.items()}
        entry = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
        self.proc = Proc("portkey", pinned(GATEWAY_CPU, ["node", str(entry), f"--port={self.port}", "--headless"]),
                         work, {"NODE_ENV": "production", "HOME": str(work)})
        wait_http(self.url + "/", proc=self.proc.p)

    def request(self, model):
        def target(mock):
            return {"provider": "openai", "api_key": KEY, "custom_host": self.m[mock] + "/v1"}
        if model in ("bench", "bench-paced"):
            cfg = target("healthy" if model == "bench" else "paced")
        else:
            primary = "overloaded" if model == "bench-529" else "truncating"
            cfg = {"strategy": {"mode": "fallback"}, "targets": [target(primary), target("healthy")]}
        return "bench", ["x-portkey-config: " + json.dumps(cfg, separators=(",", ":"))]


class ClaudeCodeRouter(Gateway):
    name = "claude-code-router (Anthropic → OpenAI)"
    api = "anthropic"

    def __init__(self, mocks, work):
        super().__init__(mocks, work)
        home = work / "home-ccr"
        (home / ".claude-code-router").mkdir(parents=True, exist_ok=True)
        m = {k: v.url for k, v in mocks.items()}

        def provider(name):
            return {"name": name, "api_base_url": f"{m[name]}/v1/chat/completions", "api_key": KEY,
                    "models": ["bench"]}
        (home / ".claude-code-router" / "config.json").write_text(json.dumps({
            "LOG": False, "HOST": "127.0.0.1", "PORT": self.port, "API_TIMEOUT_MS": 30000,
            "Providers": [provider(n) for n in ("healthy", "paced", "overloaded", "truncating")],
            "Router": {"default": "healthy,bench"},
            "fallback": {"default": ["healthy,bench"]},
        }))
        cli = PEERS / "ccr" / "node_modules" / "@musistudio" / "claude-code-router" / "dist" / "cli.js"
        self.proc = Proc("ccr", pinned(GATEWAY_CPU, ["node", str(cli), "start"]), work,
                         {"HOME": str(home), "NODE_ENV": "production"})
        wait_http(self.url + "/", proc=self.proc.p)

    def request(self, model):
        # "provider,model" picks the provider directly; its fallback list is the healthy mock.
        return {"bench": "healthy,bench", "bench-paced": "paced,bench", "bench-529": "overloaded,bench",
                "bench-trunc": "truncating,bench"}[model], []


# --- load ---------------------------------------------------------------------------------

def load(gw, *, model="bench", stream=False, rate=None, conns=None, secs=5.0, samples=None, timeout=10.0):
    field, headers = gw.request(model)
    argv = [str(LOAD), "--url", gw.endpoint(model), "--api", gw.api, "--model", field,
            "--secs", str(secs), "--timeout", str(timeout), "--expect", EXPECT]
    if stream:
        argv.append("--stream")
    argv += ["--rate", str(rate)] if rate else ["--conns", str(conns)]
    for h in headers:
        argv += ["--header", h]
    if samples:
        argv += ["--samples", str(samples)]
    out = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def pct_of(summary, key, q):
    v = summary.get(key)
    return v[q] if v else float("nan")


def saturated(s):
    """The gateway did not keep up with the rate: its latencies are queueing, not overhead.
    The mock answers at once, so a median over 100 ms is requests waiting their turn."""
    bad = s["errors"] + s["timeouts"] + s["truncated_as_complete"]
    return s["sent"] == 0 or bad > 0.01 * s["sent"] or pct_of(s, "latency_ms", "p50") > 100


class RssWatch:
    """Samples the RSS of the running gateways while load runs."""

    def __init__(self):
        self.peak = {}
        self.watch = {}
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.wait(0.25):
            for name, pid in list(self.watch.items()):
                self.peak[name] = max(self.peak.get(name, 0), rss_mib(pid))

    def stop(self):
        self.stop_ev.set()
        self.t.join()


def med(v):
    v = [x for x in v if x == x]
    return statistics.median(v) if v else float("nan")


def spread(v):
    v = [x for x in v if x == x]
    return (min(v), max(v)) if v else (float("nan"), float("nan"))


def peers_run(args):
    work = Path(tempfile.mkdtemp(prefix="understudy-bench-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    say(f"work dir {work}")
    mocks = make_mocks(work, fail_rate="1")
    kinds = [("Understudy", lambda: Understudy(mocks, work)),
             ("LiteLLM", lambda: LiteLLM(mocks, work)),
             ("Portkey", lambda: Portkey(mocks, work)),
             ("Understudy (Anthropic → OpenAI)", lambda: Understudy(mocks, work, "anthropic")),
             ("claude-code-router", lambda: ClaudeCodeRouter(mocks, work))]
    only = set(args.only.split(",")) if args.only else None
    gws, problems = [], {}
    for name, make in kinds:
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        say(f"starting {name}")
        try:
            gws.append(make())
        except Exception as e:  # noqa: BLE001 - a peer that cannot start is reported, not fatal
            problems[name] = str(e)
            say(f"{name} did not start: {e}")
    direct = {"openai": Direct(mocks, work), "anthropic": Direct(mocks, work, "anthropic")}
    time.sleep(3)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds,
           "secs": args.secs, "problems": problems, "gateways": {}}
    for g in gws:
        res["gateways"][g.name] = {"api": g.api, "idle_rss_mib": rss_mib(g.pid())}
    watch = RssWatch()
    for g in gws:
        watch.watch[g.name] = g.pid()
    paths = [direct["openai"], direct["anthropic"], *gws]
    data = {g.name: {"tput": [], "lat": {200: [], 500: []}, "ttft": []} for g in paths}

    say("warm-up")
    for g in paths:
        load(g, rate=100, secs=1)
        load(g, model="bench-paced", rate=20, secs=1, stream=True)
    for r in range(args.rounds):
        say(f"round {r + 1}/{args.rounds}: throughput at 32 connections")
        for g in paths:
            affine(g, {int(GATEWAY_CPU)})
            data[g.name]["tput"].append(load(g, conns=32, secs=args.secs))
            affine(g, LATENCY_CPUS)
        for rate in (200, 500):
            say(f"round {r + 1}/{args.rounds}: open loop at {rate} req/s")
            for g in paths:
                samples = RESULTS / f"samples-{slug(g.name)}-{rate}.csv" if r == args.rounds - 1 else None
                data[g.name]["lat"][rate].append(load(g, rate=rate, secs=args.secs, samples=samples))
        say(f"round {r + 1}/{args.rounds}: streams at 50 req/s")
        for g in paths:
            data[g.name]["ttft"].append(load(g, model="bench-paced", rate=50, secs=args.secs, stream=True))
    watch.stop()

    for g in paths:
        d, base = data[g.name], direct[g.api].name
        b = data[base]
        out = res["gateways"].setdefault(g.name, {"api": g.api})
        out["is_direct"] = isinstance(g, Direct)
        out["tput"] = med([s["complete_per_sec"] for s in d["tput"]])
        out["tput_range"] = spread([s["complete_per_sec"] for s in d["tput"]])
        out["tput_failed"] = sum(s["sent"] - s["complete"] for s in d["tput"])
        out["peak_rss_mib"] = watch.peak.get(g.name)
        for rate in (200, 500):
            rows = d["lat"][rate]
            o = out.setdefault("lat", {})[str(rate)] = {}
            o["saturated"] = any(saturated(s) for s in rows)
            o["achieved"] = med([s["complete_per_sec"] for s in rows])
            o["bad"] = sum(s["errors"] + s["timeouts"] for s in rows)
            for q in ("p50", "p95", "p99"):
                added = [pct_of(s, "latency_ms", q) - pct_of(bs, "latency_ms", q) for s, bs in zip(rows, b["lat"][rate])]
                o[q] = pct_of(rows[-1], "latency_ms", q) if out["is_direct"] else med(added)
                o[q + "_range"] = spread(added)
                o[q + "_abs"] = med([pct_of(s, "latency_ms", q) for s in rows])
        for q in ("p50", "p99"):
            added = [pct_of(s, "ttft_ms", q) - pct_of(bs, "ttft_ms", q) for s, bs in zip(d["ttft"], b["ttft"])]
            out.setdefault("ttft", {})[q] = med(added)
            out["ttft"][q + "_abs"] = med([pct_of(s, "ttft_ms", q) for s in d["ttft"]])
        out["ttft"]["bad"] = sum(s["sent"] - s["complete"] for s in d["ttft"])

    say("faults")
    res["faults"] = {}
    for g in gws:
        res["faults"][g.name] = {}
        for scenario, model, primary in (("529", "bench-529", "overloaded"), ("trunc", "bench-trunc", "truncating")):
            for mk in mocks.values():
                mk.reset()
            samples = RESULTS / f"fault-{scenario}-{slug(g.name)}.csv"
            t0 = time.time()
            s = load(g, model=model, stream=True, rate=args.fault_rate, secs=args.fault_secs, samples=samples, timeout=30)
            st = {k: mk.stats() for k, mk in mocks.items()}
            attempts = sum(st[k]["answered"] + st[k]["failed"] + st[k]["truncated"] for k in (primary, "healthy"))
            res["faults"][g.name][scenario] = {
                "sent": s["sent"], "complete": s["complete"], "errors": s["errors"] + s["timeouts"],
                "truncated": s["truncated_as_complete"], "attempts_per_request": attempts / max(s["sent"], 1),
                "primary_attempts": sum(st[primary][k] for k in ("answered", "failed", "truncated")),
                "t0": t0, "per_second": {k: st[k]["per_second"] for k in (primary, "healthy")},
            }
            say(f"{g.name} / {scenario}: {s['complete']}/{s['sent']} complete, {s['truncated_as_complete']} truncated-as-complete, {attempts / max(s['sent'], 1):.2f} attempts/request")

    for g in gws:
        g.stop()
    for mk in mocks.values():
        mk.proc.stop()
    (RESULTS / "results.json").write_text(json.dumps(res, indent=1))
    plots(res)
    write_markdown(res, args)
    say(f"results in {RESULTS} and BENCHMARKS.md")


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB"


# --- plots and the report -----------------------------------------------------------------

def read_samples(path):
    rows = []
    try:
        with open(path) as f:
            next(f)
            for line in f:
                start, ttft, total, outcome = line.strip().split(",")
                rows.append((float(start), float(ttft) if ttft else None, float(total), outcome))
    except OSError:
        pass
    return rows


def plots(res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["gateways"])
    for rate in (200, 500):
        fig, ax = plt.subplots(figsize=(8, 5))
        for n in names:
            lat = sorted(t for _, _, t, o in read_samples(RESULTS / f"samples-{slug(n)}-{rate}.csv") if o == "complete")
            if lat:
                ax.plot(lat, [i / len(lat) for i in range(len(lat))], label=n)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"Latency CDF, non-streaming, open loop at {rate} req/s (last round)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / f"latency-cdf-{rate}.png", dpi=110)
        plt.close(fig)

    for scenario, title in (("529", "primary answers 529 to every request"),
                            ("trunc", "primary truncates 30 % of streams")):
        gws = [g for g in res["faults"] if scenario in res["faults"][g]]
        if not gws:
            continue
        fig, axes = plt.subplots(len(gws), 1, figsize=(9, 2.2 * len(gws)), sharex=True, squeeze=False)
        for ax, g in zip(axes[:, 0], gws):
            f = res["faults"][g][scenario]
            rows = read_samples(RESULTS / f"fault-{scenario}-{slug(g)}.csv")
            secs = int(max([r[0] for r in rows], default=0) / 1000) + 1
            buckets = {o: [0] * secs for o in ("complete", "error", "timeout", "truncated")}
            for start, _, _, o in rows:
                buckets[o][int(start / 1000)] += 1
            xs = list(range(secs))
            primary = "overloaded" if scenario == "529" else "truncating"
            t0 = int(f["t0"])
            hits, served = [0] * secs, [0] * secs
            for sec, a, fl, tr in f["per_second"][primary]:
                if 0 <= sec - t0 < secs:
                    hits[sec - t0] += a + fl + tr
                    served[sec - t0] += a
            # Who served the complete answers: the primary (its whole answers that second, as
            # the mock counted them), else the fallback (a failover or a continuation).
            by_primary = [min(c, p) for c, p in zip(buckets["complete"], served)]
            by_fallback = [c - p for c, p in zip(buckets["complete"], by_primary)]
            bottom = [0] * secs
            for values, colour, label in ((by_primary, "#1565c0", "complete, served by the primary"),
                                          (by_fallback, "#2e7d32", "complete, served by the fallback"),
                                          (buckets["truncated"], "#c62828", "truncated, delivered as complete"),
                                          (buckets["error"], "#ef6c00", "explicit error"),
                                          (buckets["timeout"], "#6a1b9a", "hung (timeout)")):
                ax.bar(xs, values, bottom=bottom, color=colour, label=label, width=0.9)
                bottom = [a + b for a, b in zip(bottom, values)]
            ax.plot(xs, hits, color="black", marker=".", label="requests reaching the failing primary")
            ax.set_title(f"{g}", fontsize=9)
            ax.set_ylabel("req / s")
        axes[0, 0].legend(fontsize=7, loc="upper right", ncol=2)
        axes[-1, 0].set_xlabel("seconds")
        fig.suptitle(f"Failover timeline: {title}\n(bars: what clients got and who served it; line: the primary's load)")
        fig.tight_layout()
        fig.savefig(RESULTS / f"failover-{scenario}.png", dpi=110)
        plt.close(fig)


def fmt(x, d=3):
    return "n/a" if x is None or x != x else f"{x:.{d}f}"


def replace_section(marker, body):
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def write_markdown(res, args):
    G = res["gateways"]
    L = []
    L.append(f"Run {res['date']} on {res['machine']}: `{' '.join(['scripts/bench', *sys.argv[2:]])}`; "
             f"{res['rounds']} interleaved rounds of {res['secs']} s per measurement. Mocks: 0 ms to first "
             f"byte, {TOKENS}-token answers; at once for throughput and latency, paced at {TOKENS_PER_SEC} "
             f"tokens/s for streams and faults. Mocks and load generator pinned to CPU {LOAD_CPU}; each gateway "
             f"pinned to CPU {GATEWAY_CPU} for throughput, free to use both CPUs for latency and streams "
             f"(it started on one CPU, so its thread pools are sized for one).")
    if res["problems"]:
        for n, p in res["problems"].items():
            L.append(f"\n**{n} did not start**: {p}")
    L.append("\n| max throughput, 32 connections, non-streaming | req/s (median) | range over rounds | share of direct | failed |")
    L.append("|---|---|---|---|---|")
    lite = G.get("LiteLLM", {}).get("tput")
    for n, g in G.items():
        base = G["direct" if g["api"] == "openai" else "direct (Anthropic API)"]["tput"]
        lo, hi = g["tput_range"]
        L.append(f"| {n} | {g['tput']:.0f} | {lo:.0f} … {hi:.0f} | {g['tput'] / base:.2f} | {g['tput_failed']} |")
    if lite and "Understudy" in G:
        L.append(f"\nUnderstudy / LiteLLM throughput: **{G['Understudy']['tput'] / lite:.0f}×**.")
    for rate in (200, 500):
        L.append(f"\n| open loop at {rate} req/s, non-streaming | added p50 ms | added p95 ms | added p99 ms | p99 range over rounds | answers/s | errors + timeouts |")
        L.append("|---|---|---|---|---|---|---|")
        for n, g in G.items():
            o = g["lat"][str(rate)]
            if g.get("is_direct"):
                L.append(f"| {n} (absolute) | {fmt(o['p50_abs'])} | {fmt(o['p95_abs'])} | {fmt(o['p99_abs'])} | | {o['achieved']:.0f} | {o['bad']} |")
                continue
            note = " (saturated: latency is queueing)" if o["saturated"] else ""
            lo, hi = o["p99_range"]
            L.append(f"| {n}{note} | {fmt(o['p50'])} | {fmt(o['p95'])} | {fmt(o['p99'])} | {fmt(lo)} … {fmt(hi)} | {o['achieved']:.0f} | {o['bad']} |")
    L.append(f"\n| streams at 50 req/s | time to first token added, p50 ms | added p99 ms | TTFT p50 ms | not complete |")
    L.append("|---|---|---|---|---|")
    for n, g in G.items():
        t = g["ttft"]
        if g.get("is_direct"):
            L.append(f"| {n} (absolute) | | | {fmt(t['p50_abs'])} | {t['bad']} |")
        else:
            L.append(f"| {n} | {fmt(t['p50'])} | {fmt(t['p99'])} | {fmt(t['p50_abs'])} | {t['bad']} |")
    L.append("\n| memory | RSS idle, MiB | RSS peak under load, MiB |")
    L.append("|---|---|---|")
    for n, g in G.items():
        if not g.get("is_direct"):
            L.append(f"| {n} | {fmt(g.get('idle_rss_mib'), 1)} | {fmt(g.get('peak_rss_mib'), 1)} |")
    L.append(f"\nFaults: streams at {args.fault_rate} req/s for {args.fault_secs} s per gateway; the fallback is the healthy mock.")
    L.append("\n| gateway | scenario | answered completely | explicit error | **truncated, delivered as complete** | upstream attempts per request | requests reaching the primary |")
    L.append("|---|---|---|---|---|---|---|")
    for n, sc in res["faults"].items():
        for key, label in (("529", "primary 529"), ("trunc", "primary truncates 30 %")):
            f = sc.get(key)
            if not f:
                continue
            sent = max(f["sent"], 1)
            L.append(f"| {n} | {label} | {100 * f['complete'] / sent:.1f} % | {100 * f['errors'] / sent:.1f} % | "
                     f"**{100 * f['truncated'] / sent:.1f} %** ({f['truncated']}) | {f['attempts_per_request']:.2f} | {f['primary_attempts']} |")
    L.append("\n![latency CDF at 500 req/s](bench/results/latency-cdf-500.png)")
    L.append("![latency CDF at 200 req/s](bench/results/latency-cdf-200.png)")
    L.append("![failover timeline, primary 529](bench/results/failover-529.png)")
    L.append("![failover timeline, primary truncating](bench/results/failover-trunc.png)")
    replace_section("peers", "\n".join(L))


# --- soak ---------------------------------------------------------------------------------

def soak_run(args):
    work = Path(tempfile.mkdtemp(prefix="understudy-soak-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    mocks = make_mocks(work, fail_rate="0.5")
    oa = Understudy(mocks, work)
    an = copy.copy(oa)  # the same gateway, asked in the Anthropic dialect
    an.api = "anthropic"
    pid = oa.pid()
    series = []
    stop = threading.Event()

    def sample():
        t0 = time.time()
        while not stop.wait(5):
            series.append((time.time() - t0, rss_mib(pid), fds(pid)))
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    series.append((0.0, rss_mib(pid), fds(pid)))
    totals = {"sent": 0, "complete": 0, "errors": 0, "timeouts": 0, "truncated": 0}
    mixes = [(oa, "bench-trunc", True, 30), (oa, "bench", True, 20), (oa, "bench-529", False, 20),
             (an, "bench-trunc", True, 10)]
    deadline = time.time() + args.minutes * 60
    while time.time() < deadline:
        chunk = min(60.0, deadline - time.time())
        if chunk < 1:
            break
        procs = []
        for g, model, stream, rate in mixes:
            argv = [str(LOAD), "--url", g.endpoint(model), "--api", g.api, "--model", model, "--secs", str(chunk),
                    "--timeout", "30", "--expect", EXPECT, "--rate", str(rate)] + (["--stream"] if stream else [])
            procs.append(subprocess.Popen(pinned(LOAD_CPU, argv), stdout=subprocess.PIPE, text=True))
        for p in procs:
            s = json.loads(p.communicate()[0])
            totals["sent"] += s["sent"]
            totals["complete"] += s["complete"]
            totals["errors"] += s["errors"]
            totals["timeouts"] += s["timeouts"]
            totals["truncated"] += s["truncated_as_complete"]
        say(f"soak: {series[-1][0] / 60:.1f} min, RSS {series[-1][1]:.1f} MiB, fds {series[-1][2]}, {totals}")
    stop.set()
    th.join()
    series.append((series[-1][0] + 5, rss_mib(pid), fds(pid)))
    oa.stop()
    for mk in mocks.values():
        mk.proc.stop()
    (RESULTS / "soak.json").write_text(json.dumps({"series": series, "totals": totals}))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([s[0] / 60 for s in series], [s[1] for s in series], color="#1565c0", label="RSS, MiB")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot([s[0] / 60 for s in series], [s[2] for s in series], color="#ef6c00", label="open fds")
    ax2.set_ylabel("open file descriptors")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="lower right")
    ax.set_title(f"Soak: {args.minutes} min of mixed load with faults")
    fig.tight_layout()
    fig.savefig(RESULTS / "soak.png", dpi=110)
    plt.close(fig)

    n = len(series)
    first = series[: max(n // 10, 1)]
    last = series[-max(n // 10, 1):]
    L = [f"Run {time.strftime('%Y-%m-%d')} on {machine()}: `scripts/bench soak --minutes {args.minutes}`. "
         "Load, at once for the whole run: OpenAI streams to a primary truncating 30 % of streams "
         "(30/s), healthy OpenAI streams (20/s), non-streaming requests to a primary answering 529 to "
         "half its requests (20/s), Anthropic-dialect streams translated to the truncating primary (10/s).",
         "",
         "| requests | complete | explicit errors | hung (30 s timeout) | truncated, delivered as complete |",
         "|---|---|---|---|---|",
         f"| {totals['sent']} | {totals['complete']} | {totals['errors']} | {totals['timeouts']} | {totals['truncated']} |",
         "",
         "| | first 10 % of the run | last 10 % of the run | max |",
         "|---|---|---|---|",
         f"| RSS, MiB (mean) | {statistics.mean(s[1] for s in first):.1f} | {statistics.mean(s[1] for s in last):.1f} | {max(s[1] for s in series):.1f} |",
         f"| open fds (mean) | {statistics.mean(s[2] for s in first):.1f} | {statistics.mean(s[2] for s in last):.1f} | {max(s[2] for s in series)} |",
         "",
         "![soak: RSS and descriptors over time](bench/results/soak.png)"]
    replace_section("soak", "\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("peers")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--secs", type=float, default=5.0)
    p.add_argument("--fault-rate", type=float, default=20.0)
    p.add_argument("--fault-secs", type=float, default=15.0)
    p.add_argument("--only", help="comma-separated gateway names (default: all)")
    sub.add_parser("plot", help="redraw the plots from bench/results/results.json")
    s = sub.add_parser("soak")
    s.add_argument("--minutes", type=float, default=30.0)
    pa = sub.add_parser("paths", help="the paths users take, by understudy-load and by wrk")
    pa.add_argument("--rounds", type=int, default=3)
    pa.add_argument("--secs", type=float, default=5.0)
    pa.add_argument("--rate", type=float, default=2000.0)
    ph = sub.add_parser("phases", help="where a request's time goes, read off loopback with tcpdump")
    ph.add_argument("--rounds", type=int, default=3)
    ph.add_argument("--secs", type=float, default=5.0)
    ph.add_argument("--rate", type=float, default=2000.0)
    m = sub.add_parser("memory", help="RSS around a burst of concurrent streams")
    m.add_argument("--streams", type=int, default=2000)
    m.add_argument("--burst", type=float, default=10.0)
    m.add_argument("--after", type=float, default=65.0)
    args = ap.parse_args()
    for b in (BIN, LOAD):
        if not b.exists():
            sys.exit(f"{b} is missing: run scripts/bench, which builds it")
    if args.cmd == "plot":
        plots(json.loads((RESULTS / "results.json").read_text()))
        return
    if args.cmd == "phases":
        import phases
        phases.phases_run(args)
    elif args.cmd in ("paths", "memory"):
        import paths
        (paths.paths_run if args.cmd == "paths" else paths.memory_run)(args)
    elif args.cmd == "soak":
        soak_run(args)
    else:
        if args.cmd is None:
            args = ap.parse_args(["peers"])
        peers_run(args)


if __name__ == "__main__":
    main()
