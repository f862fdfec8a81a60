"""The paths users take (issue 19), each measured by two load generators side by side: the
project's own `understudy-load` and `wrk` (closed loop for throughput; for latency at a fixed
rate, connections that wait between requests); plus the memory after a burst of 2,000 concurrent streams.

    harness.py paths  [--rounds N] [--secs S] [--rate R]
    harness.py memory [--streams N] [--after S]

One mock cloud (`understudy mock --tokens 20`: the answer `w0 … w19`, at once) and four
gateways, each its own release process, all asked in the Anthropic dialect:

- `plain`: the Anthropic provider with `continuation = "off"` and `stream_whole_answers =
  false`: a non-streaming request's body and a stream's events are forwarded as they come;
- `default`: what zero config gives: continuation on (every forwarded stream keeps what the
  client has), whole answers asked as a stream and rebuilt, and the local model last in the
  route (never reached here: the mock is healthy);
- `translate`: the same request served from the mock's OpenAI-compatible endpoint;
- `direct`: no gateway, the mock itself;
- `bare-reqwest` and `bare-hyper`: yardsticks, not gateways: `understudy-bare-relay`
  (bench/src/relay.rs), the least a relay on Understudy's own stack does (a hyper server, the
  request sent on and the answer streamed back, nothing inspected or recorded), with reqwest
  (Understudy's client) or hyper-util's pooled client. What a path costs beyond them is the
  gateway's own work.

Throughput: 32 connections, the gateway pinned to CPU 1, the mock and the load generator to
CPU 0, every path once per round, rounds interleaved; ratios are per round, then the median.
Latency: open loop at `--rate`, each relay on its own CPU as for throughput (CPU 1; the mock
and the load generator on CPU 0); each path is measured right after the direct path, by the
same generator, and "added" is its percentile minus that direct measurement's (the order of
the paths turns each round). One more row runs the passthrough free on both CPUs, as the
passes before the eighth measured every row: there it shares CPU 0 with the mock and the
load generator and is preempted by them about once a request (`bench/switches.py`: 1.07
involuntary context switches a request against 0.01 on its own CPU), which a user's
machine, whose upstream is a cloud, does not do to it.
"""

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import harness as h

# The model the route serves; the mock answers any.
MODEL = "claude-sonnet-4-5"
BODY = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Say the benchmark words."}]}
HEADERS = {"x-api-key": "bench-client-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}


class Gw:
    """A path: a gateway process on the mock (or the mock itself), asked in the Anthropic
    dialect; shaped like harness.py's gateways, so `harness.load` drives it."""

    api = "anthropic"

    def __init__(self, name, url, proc=None):
        self.name, self.url, self.proc = name, url, proc

    def endpoint(self, model=MODEL):
        return self.url + "/v1/messages"

    def request(self, model):
        return MODEL, [f"x-api-key: {HEADERS['x-api-key']}"]

    def pid(self):
        return self.proc.p.pid

    def stop(self):
        if self.proc is not None and self.name != "direct":
            self.proc.stop()


def gateway(name, mock, work, body):
    port = h.free_port()
    proc = h.start_understudy(f"understudy-{name}", work, port, body)
    return Gw(name, f"http://127.0.0.1:{port}", proc)


def bare(kind, mock, work):
    """The yardstick relay with `kind`'s client, pinned like a gateway."""
    port = h.free_port()
    proc = h.Proc(f"bare-{kind}", h.pinned(h.GATEWAY_CPU, [str(h.BARE), "--listen", f"127.0.0.1:{port}",
                                                            "--upstream", mock.url, "--client", kind]), work)
    h.wait_http(f"http://127.0.0.1:{port}/", proc=proc.p)
    return Gw(f"bare-{kind}", f"http://127.0.0.1:{port}", proc)


def gateways(mock, work, which=("plain", "default", "translate")):
    """The paths of `which` (and `direct`), each gateway started on the mock."""
    model = h.ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    m = mock.url
    configs = {"plain": f"""
[providers.anthropic]
kind = "anthropic"
base_url = "{m}"
passthrough_auth = "{m}"
continuation = "off"
stream_whole_answers = false

[[routes]]
model = "claude-*"
backends = ["anthropic"]
""",
               "default": f"""
[providers.anthropic]
kind = "anthropic"
base_url = "{m}"
passthrough_auth = "{m}"

[providers.local]
kind = "local"
model_file = "{model}"

[[routes]]
model = "claude-*"
backends = ["anthropic", "local"]
""",
               "translate": f"""
[providers.openai]
kind = "openai"
base_url = "{m}/v1"
api_key_env = "BENCH_KEY"

[[routes]]
model = "claude-*"
backends = ["openai/gpt-4o"]
"""}
    out = {"direct": Gw("direct", m, mock.proc)}
    try:
        for name in which:
            out[name] = gateway(name, mock, work, configs[name])
    except BaseException:
        for g in out.values():
            g.stop()
        raise
    return out


@contextlib.contextmanager
def plain_and_relay(prefix):
    """The direct path, the `plain` gateway and the bare hyper relay on one mock, in a work
    dir of their own, stopped on leaving (the one-off studies: switches.py, device/p99.py)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    mock = h.Mock("paths", work)
    gws = {}
    try:
        gws = gateways(mock, work, which=("plain",))
        gws["bare-hyper"] = bare("hyper", mock, work)
        time.sleep(1)
        yield work, gws
    finally:
        for g in gws.values():
            g.stop()
        mock.proc.stop()


# --- the two generators -------------------------------------------------------------------

def own(gw, stream, conns=None, rate=None, secs=5.0):
    """understudy-load: its summary of a closed loop (`conns`) or an open loop (`rate`)."""
    return h.load(gw, model=MODEL, stream=stream, rate=rate, conns=conns, secs=secs)


def lua(work, stream, wait_ms=None):
    """wrk's script: the request, and with `wait_ms` a random wait of 0 … 2 wait_ms after
    each answer."""
    body = dict(BODY, stream=True) if stream else BODY
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items()]
    if wait_ms is not None:
        lines.append(f"function delay() return math.random(0, {2 * wait_ms}) end")
    script = work / f"wrk-{int(stream)}-{wait_ms}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk(gw, stream, work, conns=32, secs=5.0):
    """wrk, one thread, `conns` connections: (requests a second, non-2xx responses)."""
    script = lua(work, stream)
    out = subprocess.run(h.pinned(h.LOAD_CPU, ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "-s", str(script),
                                              gw.endpoint()]), capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    return rps, int(bad.group(1)) if bad else 0, errs.group(0) if errs else ""


def wrk_rate(gw, stream, work, rate, secs, conns=40):
    """wrk at about `rate` requests a second: `conns` connections, each waiting a random time
    (its Lua `delay`, uniform over 0 … 2 conns/rate seconds, so the connections do not fall
    into step and arrive in bursts) after an answer before its next request, and wrk's
    latency percentiles in ms. The wait (20 ms on average at 2,000 req/s over 40 connections)
    is long against an answer (well under 1 ms), so a slow answer delays the next send of its
    own connection only, and only when it is slower than the wait."""
    script = lua(work, stream, wait_ms=max(1, round(1000 * conns / rate)))
    out = subprocess.run(h.pinned(h.LOAD_CPU, ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "--latency",
                                              "-s", str(script), gw.endpoint()]),
                         capture_output=True, text=True, check=True).stdout

    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    q = {int(p): ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    if 50 not in q or 99 not in q:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return {"p50": q.get(50), "p99": q.get(99), "not_200": int(bad.group(1)) if bad else 0, "sent": n,
            "per_sec": float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))}


def open_pair(direct, gw, work, rate, secs):
    """The non-streaming open loop at `rate` on `gw` right after the same on the direct path,
    generator by generator: {"own" | "wrk": (direct, gw)}, each with its p50 and p99 (ms),
    not_200 and per_sec, and gw's also with its pair's as direct_p50 and direct_p99."""
    def by_own(g):
        s = own(g, False, rate=rate, secs=secs)
        return {"p50": h.pct_of(s, "latency_ms", "p50"), "p99": h.pct_of(s, "latency_ms", "p99"),
                "not_200": s["sent"] - s["complete"], "per_sec": s["complete_per_sec"]}

    out = {}
    for gen, measure in (("own", by_own), ("wrk", lambda g: wrk_rate(g, False, work, rate, secs))):
        d = measure(direct)
        x = measure(gw)
        x["direct_p50"], x["direct_p99"] = d["p50"], d["p99"]
        out[gen] = (d, x)
    return out


# --- the run ------------------------------------------------------------------------------

def paths_run(args):
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: scripts/bench paths installs it")
    work = Path(tempfile.mkdtemp(prefix="understudy-paths-"))
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    h.say(f"work dir {work}")
    mock = h.Mock("paths", work)
    gws = {}
    try:
        gws = gateways(mock, work)
        for kind in ("reqwest", "hyper"):
            gws[f"bare-{kind}"] = bare(kind, mock, work)
        time.sleep(2)
        # (row, path, stream): what each throughput row measures.
        rows = [("direct, whole", "direct", False), ("passthrough, whole passed through", "plain", False),
                ("default, whole streamed and rebuilt", "default", False), ("direct, stream", "direct", True),
                ("passthrough, stream", "plain", True), ("zero-config-like route, stream", "default", True),
                ("translated, stream", "translate", True),
                ("bare relay (reqwest), whole", "bare-reqwest", False), ("bare relay (hyper), whole", "bare-hyper", False),
                ("bare relay (reqwest), stream", "bare-reqwest", True)]
        tput = {(r, gen): [] for r, _, _ in rows for gen in ("own", "wrk")}
        bad = {"own": 0, "wrk": 0}
        h.say("warm-up")
        for _, p, stream in rows:
            own(gws[p], stream, conns=32, secs=1)
            wrk(gws[p], stream, work, secs=1)
        for r in range(args.rounds):
            h.say(f"round {r + 1}/{args.rounds}: throughput at 32 connections")
            for row, p, stream in rows:
                if p != "direct":
                    h.affine(gws[p], {int(h.GATEWAY_CPU)})
                s = own(gws[p], stream, conns=32, secs=args.secs)
                tput[(row, "own")].append(s["complete_per_sec"])
                bad["own"] += s["sent"] - s["complete"]
                rps, non2xx, errs = wrk(gws[p], stream, work, secs=args.secs)
                tput[(row, "wrk")].append(rps)
                bad["wrk"] += non2xx
                h.say(f"  {row}: own {s['complete_per_sec']:.0f}/s, wrk {rps:.0f}/s {errs}")
        # (key, path, the CPUs its relay runs on): each on its own CPU, and the passthrough
        # once more sharing CPU 0 with the mock and the load generator (the docstring). Each
        # is measured right after the direct path, by the same generator, and its "added" is
        # the difference of the pair: this VM's slow spells last seconds to minutes, and a
        # direct path measured half a minute earlier (as each round did before the ninth
        # pass) can be in another spell. The order of the paths turns each round.
        own_cpu = {int(h.GATEWAY_CPU)}
        open_paths = [("plain", "plain", own_cpu), ("default", "default", own_cpu),
                      ("bare-reqwest", "bare-reqwest", own_cpu), ("plain-shared", "plain", h.LATENCY_CPUS)]
        lat = {(k, gen): [] for k in ["direct"] + [k for k, _, _ in open_paths] for gen in ("own", "wrk")}
        for r in range(args.rounds):
            h.say(f"round {r + 1}/{args.rounds}: open loop at {args.rate} req/s, each path after the direct one")
            turn = r % len(open_paths)
            for k, p, cpus in open_paths[turn:] + open_paths[:turn]:
                h.affine(gws[p], cpus)
                for gen, (d, x) in open_pair(gws["direct"], gws[p], work, args.rate, args.secs).items():
                    lat[("direct", gen)].append(d)
                    lat[(k, gen)].append(x)
                o, w = lat[(k, "own")][-1], lat[(k, "wrk")][-1]
                h.say(f"  {k}: own p99 {o['p99']:.3f} ms (direct {o['direct_p99']:.3f}), "
                      f"wrk p99 {w['p99']:.3f} ms (direct {w['direct_p99']:.3f}), {w['per_sec']:.0f}/s")
    finally:
        for g in gws.values():
            g.stop()
        mock.proc.stop()

    res = {"machine": h.machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "secs": args.secs,
           "rate": args.rate, "throughput": {f"{r}|{g}": v for (r, g), v in tput.items()},
           "latency": {f"{p}|{g}": v for (p, g), v in lat.items()}, "failed": bad}
    (h.RESULTS / "paths.json").write_text(json.dumps(res, indent=1))
    write_paths(res, args)


def ratio(res, gen, num, den):
    a, b = res["throughput"][f"{num}|{gen}"], res["throughput"][f"{den}|{gen}"]
    v = [x / y for x, y in zip(a, b) if y]
    return h.med(v), h.spread(v)


def write_paths(res, args):
    f = h.fmt
    L = [f"Run {res['date']} on {res['machine']}: `scripts/bench paths --rounds {args.rounds} --secs {args.secs} "
         f"--rate {args.rate}`; the mock answers 20 tokens at once; ratios per round, median (range over rounds). "
         f"Failed or non-200 answers: {res['failed']['own']} (understudy-load), {res['failed']['wrk']} (wrk).",
         "",
         "| path (throughput, 32 connections, closed loop) | of | target | understudy-load | wrk |",
         "|---|---|---|---|---|"]
    targets = [("passthrough, whole passed through", "direct, whole", "≥ 0.6"),
               ("default, whole streamed and rebuilt", "direct, whole", ""),
               ("passthrough, stream", "direct, stream", ""),
               ("zero-config-like route, stream", "passthrough, stream", "≥ 0.9"),
               ("translated, stream", "direct, stream", "≥ 0.6"),
               ("bare relay (reqwest), whole", "direct, whole", "yardstick"),
               ("bare relay (hyper), whole", "direct, whole", "yardstick"),
               ("bare relay (reqwest), stream", "direct, stream", "yardstick"),
               ("passthrough, whole passed through", "bare relay (reqwest), whole", "")]
    for num, den, target in targets:
        cells = []
        for gen in ("own", "wrk"):
            m, (lo, hi) = ratio(res, gen, num, den)
            cells.append(f"**{f(m, 2)}** ({f(lo, 2)} … {f(hi, 2)})")
        L.append(f"| {num} | {den} | {target} | {cells[0]} | {cells[1]} |")
    L += ["", "| answers/s (median) | understudy-load | wrk |", "|---|---|---|"]
    for key in dict.fromkeys(k.split("|")[0] for k in res["throughput"]):
        L.append(f"| {key} | {h.med(res['throughput'][key + '|own']):.0f} | {h.med(res['throughput'][key + '|wrk']):.0f} |")
    L += ["", f"| non-streaming, open loop at {res['rate']} req/s, each relay on its own CPU | added p50 ms | added p99 ms (target < 0.5) | "
          "range of added p99 | direct p99 ms | answers/s | not 200 |", "|---|---|---|---|---|---|---|"]
    for p, label in (("plain", "passthrough, whole passed through"), ("default", "default, whole streamed and rebuilt"),
                     ("bare-reqwest", "yardstick: bare relay (reqwest), whole"),
                     ("plain-shared", "passthrough, sharing CPU 0 with the mock and the load (earlier passes' setup)")):
        if f"{p}|own" not in res["latency"]:
            continue  # a run from before the row existed
        for gen, gname in (("own", "understudy-load"), ("wrk", f"wrk, 40 connections, each waiting 0–{2 * round(40000 / res['rate'])} ms between requests")):
            rows = res["latency"][f"{p}|{gen}"]
            # Each measurement's own direct pair; a run from before the ninth pass measured
            # the direct path once a round.
            base = ([{"p50": x["direct_p50"], "p99": x["direct_p99"]} for x in rows] if rows and "direct_p99" in rows[0]
                    else res["latency"][f"direct|{gen}"])
            a50 = [x["p50"] - b["p50"] for x, b in zip(rows, base)]
            a99 = [x["p99"] - b["p99"] for x, b in zip(rows, base)]
            lo, hi = h.spread(a99)
            L.append(f"| {label}, {gname} | {f(h.med(a50))} | **{f(h.med(a99))}** | {f(lo)} … {f(hi)} | "
                     f"{f(h.med([b['p99'] for b in base]))} | {h.med([x['per_sec'] for x in rows]):.0f} | "
                     f"{sum(x['not_200'] for x in rows)} |")
    h.replace_section("paths", "\n".join(L))
    print("\n".join(L))


# --- memory after a burst -----------------------------------------------------------------

def memory_run(args):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.streams + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 3 * args.streams:
        raise SystemExit(f"open files limited to {want}: {args.streams} streams need about {3 * args.streams}")
    work = Path(tempfile.mkdtemp(prefix="understudy-memory-"))
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    # Paced: each stream stays open for about a second (20 tokens at 20 a second), so all of
    # them are open at once.
    mock = h.Mock("memory", work, "--tokens-per-sec", "20")
    gw = None
    try:
        gw = gateways(mock, work, which=("default",))["default"]
        pid = gw.pid()
        h.affine(gw, h.LATENCY_CPUS)
        time.sleep(5)
        series, t0 = [], time.time()

        def sample(phase):
            series.append((time.time() - t0, h.rss_mib(pid), phase, h.fds(pid)))

        for _ in range(10):
            sample("idle")
            time.sleep(0.5)
        idle = h.med([s[1] for s in series])
        h.say(f"idle RSS {idle:.1f} MiB; a burst of {args.streams} concurrent streams for {args.burst} s")
        load = subprocess.Popen(h.pinned(h.LOAD_CPU, [
            str(h.LOAD), "--url", gw.endpoint(), "--api", "anthropic", "--model", MODEL, "--stream", "--header",
            f"x-api-key: {HEADERS['x-api-key']}", "--conns", str(args.streams), "--secs", str(args.burst),
            "--timeout", "60", "--expect", h.EXPECT]), stdout=subprocess.PIPE, text=True)
        while load.poll() is None:
            sample("burst")
            time.sleep(0.25)
        summary = json.loads(load.stdout.read())
        end = time.time() - t0
        h.say(f"burst over: {summary['complete']}/{summary['sent']} complete; watching for {args.after} s")
        while time.time() - t0 < end + args.after:
            sample("after")
            time.sleep(0.5)
    finally:
        if gw is not None:
            gw.stop()
        mock.proc.stop()
    peak = max(s[1] for s in series)
    at = {t: next((s[1] for s in series if s[0] >= end + t), series[-1][1]) for t in (1, 5, 10, 30, 60)}
    fds_at = {t: next((s[3] for s in series if s[0] >= end + t), series[-1][3]) for t in (1, 60)}
    fds_idle, fds_peak = series[0][3], max(s[3] for s in series)
    res = {"machine": h.machine(), "date": time.strftime("%Y-%m-%d"), "streams": args.streams, "idle": idle,
           "peak": peak, "after": at, "fds": {"idle": fds_idle, "peak": fds_peak, "after": fds_at}, "end": end, "summary": summary, "series": series}
    (h.RESULTS / "memory-burst.json").write_text(json.dumps(res, indent=1))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([s[0] for s in series], [s[1] for s in series], color="#1565c0", label="gateway RSS")
    ax.axhline(2 * idle, color="#c62828", linestyle="--", label="2 × idle (the target a minute after)")
    ax.axvspan(series[[s[2] for s in series].index("burst")][0] if "burst" in [s[2] for s in series] else end, end,
               color="#ffe082", alpha=0.5, label=f"burst: {args.streams} concurrent streams")
    ax.axvline(end + 60, color="grey", linestyle=":", label="a minute after")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(f"Gateway RSS around a burst of {args.streams} concurrent streams (release build, jemalloc)")
    fig.tight_layout()
    fig.savefig(h.RESULTS / "memory-burst.png", dpi=110)
    plt.close(fig)
    L = [f"Run {res['date']} on {res['machine']}: `scripts/bench memory --streams {args.streams}`; the zero-config-like "
         f"gateway (release), streams of 20 tokens paced at 20 a second, {args.streams} connections back to back for "
         f"{args.burst} s: {summary['complete']} of {summary['sent']} complete.",
         "",
         "| idle | peak | 1 s after | 5 s | 10 s | 30 s | 60 s | 60 s / idle (target ≤ 2) |",
         "|---|---|---|---|---|---|---|---|",
         f"| {idle:.1f} MiB | {peak:.1f} | {at[1]:.1f} | {at[5]:.1f} | {at[10]:.1f} | {at[30]:.1f} | {at[60]:.1f} | "
         f"**{at[60] / idle:.2f}** |",
         "",
         f"Open descriptors: {fds_idle} idle, {fds_peak} at the peak, {fds_at[1]} a second after, {fds_at[60]} a minute after.",
         "",
         "![RSS around the burst](bench/results/memory-burst.png)"]
    h.replace_section("memory", "\n".join(L))
    print("\n".join(L))
