"""Where a non-streaming request's time goes in the open loop of the paths run (issue 19's
added-latency target), read off the wire: loopback is captured with tcpdump while `wrk` sends
at a fixed rate, each request numbered in a header of its own, and every request is split
into the gateway's two phases and the upstream's:

    in        the client's request on the wire → the gateway's request to the mock on the wire
    upstream  that request → the mock's answer (the mock's time, which the gateway cannot add
              to, except by taking the CPU the mock wants)
    out       the mock's answer → the gateway's answer to the client
    own       in + out: the time the request spends in the gateway, per request
    total     the client's request → the gateway's answer

    harness.py phases [--rounds N] [--secs S] [--rate R]

Paths: `direct` (the mock: only a total), `plain` (the passthrough of the paths run) and the
bare relay with reqwest (bench/src/relay.rs), the yardstick that does nothing but relay. Same
placement as the paths run's open loop: the mock, wrk and tcpdump on CPU 0, the gateway free on
both. The capture costs every packet a copy, so the absolute times are above the paths run's;
compare the paths within a round. A packet's time is when it was sent (loopback), so the
receiver's wake-up is in the next phase.
"""

import json
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import harness as h
import paths as ps

PHASES = ("in", "upstream", "out", "own", "total")
PCTS = (50, 90, 99, 99.9)


def packets(pcap):
    """(time, source port, destination port, payload) of each TCP segment with a payload, from
    a classic pcap file of loopback (Ethernet or Linux cooked framing)."""
    d = pcap.read_bytes()
    if len(d) < 24:
        return
    magic = struct.unpack("<I", d[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise RuntimeError(f"{pcap}: not a little-endian pcap file (magic {magic:#x})")
    scale = 1e9 if magic == 0xA1B23C4D else 1e6
    link = struct.unpack("<I", d[20:24])[0]
    skip = {1: 14, 113: 16, 276: 20}.get(link)
    if skip is None:
        raise RuntimeError(f"{pcap}: link type {link} is not loopback's")
    off = 24
    while off + 16 <= len(d):
        sec, frac, caplen, _ = struct.unpack("<IIII", d[off:off + 16])
        off += 16
        ip = d[off + skip:off + caplen]
        off += caplen
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack(">HH", tcp[:4])
        doff = (tcp[12] >> 4) * 4
        if total - ihl - doff > 0:
            yield sec + frac / scale, sport, dport, tcp[doff:]


REQ_ID = re.compile(rb"\r\nx-req-id: (\d+)\r\n", re.I)


def split(pcap, port, mock_port):
    """Each request's phases in µs, as a dict of lists. `port` is the path's (the mock's own
    for `direct`). A request counts when its four packets (two for `direct`) were all seen."""
    t0, t1, t2, t3 = {}, {}, {}, {}
    waiting_client, waiting_upstream = {}, {}
    direct = port == mock_port

    def asked(t, sport, data, times, waiting):
        m = REQ_ID.search(data)
        if m:
            times[int(m.group(1))] = t
            waiting[sport] = int(m.group(1))

    def answered(t, dport, times, waiting):
        # The first segment of an answer on the connection the request went out on.
        i = waiting.pop(dport, None)
        if i is not None:
            times[i] = t

    for t, sport, dport, data in packets(pcap):
        if dport == port:
            asked(t, sport, data, t0, waiting_client)
        elif dport == mock_port and not direct:
            asked(t, sport, data, t1, waiting_upstream)
        elif sport == mock_port and not direct:
            answered(t, dport, t2, waiting_upstream)
        if sport == port:
            answered(t, dport, t3, waiting_client)
    out = {p: [] for p in PHASES}
    for i, a in t0.items():
        if i not in t3:
            continue
        if direct:
            out["total"].append((t3[i] - a) * 1e6)
        elif i in t1 and i in t2:
            for p, v in (("in", t1[i] - a), ("upstream", t2[i] - t1[i]), ("out", t3[i] - t2[i]),
                         ("own", t1[i] - a + t3[i] - t2[i]), ("total", t3[i] - a)):
                out[p].append(v * 1e6)
    return out


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def lua(work, wait_ms):
    """paths.py's open-loop script, each request numbered in `x-req-id` (which both relays
    pass on upstream)."""
    base = ps.lua(work, False, wait_ms=wait_ms).read_text()
    script = work / "wrk-numbered.lua"
    script.write_text(base + "local n = 0\nfunction request()\n  n = n + 1\n"
                      "  wrk.headers[\"x-req-id\"] = tostring(n)\n  return wrk.format()\nend\n")
    return script


def capture(gw, port, mock_port, work, name, rate, secs, conns=40):
    pcap = work / f"{name}.pcap"
    dump = subprocess.Popen(h.pinned(h.LOAD_CPU, ["tcpdump", "-i", "lo", "-n", "-s", "600", "-B", "65536",
                                                  "-w", str(pcap), f"tcp port {port} or tcp port {mock_port}"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    if dump.poll() is not None:
        raise RuntimeError(f"tcpdump did not start: {dump.stderr.read().decode(errors='replace')}")
    script = lua(work, max(1, round(1000 * conns / rate)))
    out = subprocess.run(h.pinned(h.LOAD_CPU, ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "--latency",
                                              "-s", str(script), gw.endpoint()]),
                         capture_output=True, text=True, check=True).stdout
    time.sleep(0.5)
    dump.send_signal(signal.SIGINT)
    err = dump.communicate(timeout=30)[1].decode(errors="replace")
    dropped = re.search(r"(\d+) packets dropped by kernel", err)
    sent = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    phases = split(pcap, port, mock_port)
    pcap.unlink()
    return {"sent": sent, "seen": len(phases["total"]), "dropped": int(dropped.group(1)) if dropped else 0,
            "not_200": int(bad.group(1)) if bad else 0,
            "pct": {p: {str(q): pct(v, q) for q in PCTS} for p, v in phases.items() if v}}


def phases_run(args):
    for tool in ("wrk", "tcpdump"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: scripts/bench phases installs it")
    work = Path(tempfile.mkdtemp(prefix="understudy-phases-"))
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    h.say(f"work dir {work}")
    mock = h.Mock("phases", work)
    mock_port = int(mock.url.rsplit(":", 1)[1])
    gws = {}
    rounds = {p: [] for p in ("direct", "plain", "bare-reqwest")}
    try:
        gws = ps.gateways(mock, work, which=("plain",))
        gws["bare-reqwest"] = ps.bare("reqwest", mock, work)
        time.sleep(2)
        for p in rounds:
            ps.wrk(gws[p], False, work, secs=1)
        for r in range(args.rounds):
            h.say(f"round {r + 1}/{args.rounds}: open loop at {args.rate} req/s, captured")
            for p in rounds:
                if p != "direct":
                    h.affine(gws[p], h.LATENCY_CPUS)
                port = int(gws[p].url.rsplit(":", 1)[1])
                res = capture(gws[p], port, mock_port, work, p, args.rate, args.secs)
                rounds[p].append(res)
                q = res["pct"]
                h.say(f"  {p}: {res['seen']}/{res['sent']} split; p99 total {q['total']['99']:.0f} µs"
                      + (f", own {q['own']['99']:.0f} µs" if "own" in q else ""))
    finally:
        for g in gws.values():
            g.stop()
        mock.proc.stop()
    res = {"machine": h.machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "secs": args.secs,
           "rate": args.rate, "paths": rounds}
    (h.RESULTS / "phases.json").write_text(json.dumps(res, indent=1))
    body = table(res, args)
    h.replace_section("phases", body)
    print(body)


def table(res, args):
    """Medians over rounds (range of p99 in brackets), in µs."""
    L = [f"Run {res['date']} on {res['machine']}: `scripts/bench phases --rounds {args.rounds} --secs {args.secs} "
         f"--rate {args.rate}`; µs, median over rounds (range of p99 over rounds).", "",
         "| path | phase | p50 | p90 | p99 | p99.9 | requests split / sent |", "|---|---|---|---|---|---|---|"]
    for p, label in (("direct", "direct"), ("plain", "passthrough, whole passed through"),
                     ("bare-reqwest", "bare relay (reqwest)")):
        runs = res["paths"][p]
        for ph in PHASES:
            if ph not in runs[0]["pct"]:
                continue
            cells = [h.med([x["pct"][ph][str(q)] for x in runs]) for q in PCTS]
            lo, hi = h.spread([x["pct"][ph]["99"] for x in runs])
            seen = f"{sum(x['seen'] for x in runs)} / {sum(x['sent'] for x in runs)}" if ph == "total" else ""
            L.append(f"| {label} | {ph} | {cells[0]:.0f} | {cells[1]:.0f} | **{cells[2]:.0f}** ({lo:.0f} … {hi:.0f}) | "
                     f"{cells[3]:.0f} | {seen} |")
    return "\n".join(L)
