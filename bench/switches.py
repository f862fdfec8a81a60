"""What each thread of a gateway is made to do per request under the paths run's open loop
(bench/paths.py: `wrk` at --rate, the gateway free on both CPUs, the mock and `wrk` pinned to
CPU 0): context switches, voluntary (it waited) and involuntary (it was preempted), and
minor page faults, per thread, from /proc, for the non-streaming passthrough (`plain`) and
the bare hyper relay, one after the other.

    python3 bench/switches.py [--rate 2000] [--secs 8]

A thread preempted mid-request holds that request's answer until it runs again: on a
machine where the gateway shares a CPU with its client and upstream (the bench's, and a
laptop's), that is where the tail of the latency comes from.
"""
import argparse
import os

import harness as h
import paths as P


def threads(pid):
    """{thread: (voluntary, involuntary)} of the process `pid`."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/task/{t}/status"))
        except OSError:
            continue
        out[f"{name} ({t})"] = (int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"]))
    return out


def minor_faults(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--secs", type=float, default=8.0)
    ap.add_argument("--cpus", default=",".join(map(str, sorted(h.LATENCY_CPUS))),
                    help="the CPUs the gateway and the relay run on (default: the paths run's)")
    args = ap.parse_args()
    with P.plain_and_relay("understudy-switches-") as (work, gws):
        for name in ("plain", "bare-hyper"):
            g = gws[name]
            h.affine(g, {int(c) for c in args.cpus.split(",")})
            P.wrk_rate(g, False, work, args.rate, 2)  # warm
            t0, f0 = threads(g.pid()), minor_faults(g.pid())
            w = P.wrk_rate(g, False, work, args.rate, args.secs)
            t1, f1 = threads(g.pid()), minor_faults(g.pid())
            n = w["sent"]
            vol = sum(t1[k][0] - t0[k][0] for k in t1 if k in t0) / n
            inv = sum(t1[k][1] - t0[k][1] for k in t1 if k in t0) / n
            print(f"{name}: {n} requests, p99 {w['p99']:.3f} ms; per request: {vol:.2f} voluntary and "
                  f"{inv:.2f} involuntary context switches, {(f1 - f0) / n:.3f} minor faults")
            for k in sorted(t1):
                if k in t0 and (t1[k][0] - t0[k][0] or t1[k][1] - t0[k][1]):
                    print(f"    {k}: {(t1[k][0] - t0[k][0]) / n:.3f} voluntary, {(t1[k][1] - t0[k][1]) / n:.3f} involuntary")

if __name__ == "__main__":
    main()
