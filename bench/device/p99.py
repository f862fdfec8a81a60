"""The paths run's open loop alone (bench/paths.py): non-streaming passthrough (`plain`) and
the bare hyper relay against the direct path, at 2,000 req/s by both generators, rounds
interleaved; "added" is a path's p99 minus the direct path's in the same round. Each relay
free on both CPUs, as the paths run measured before its eighth pass (and as the first lent
device machine's numbers were taken). For a host where the whole paths run does not fit (a
lent device machine's minutes).

    python3 bench/device/p99.py ROUNDS SECS
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness as h  # noqa: E402
import paths as P  # noqa: E402

RATE = 2000.0


def main(rounds, secs):
    with P.plain_and_relay("understudy-p99-") as (work, gws):
        for g in gws.values():
            P.own(g, False, conns=8, secs=1)
        p99 = {(p, gen): [] for p in gws for gen in ("own", "wrk")}
        for r in range(rounds):
            for p, g in gws.items():
                if p != "direct":
                    h.affine(g, h.LATENCY_CPUS)
                p99[(p, "own")].append(h.pct_of(P.own(g, False, rate=RATE, secs=secs), "latency_ms", "p99"))
                p99[(p, "wrk")].append(P.wrk_rate(g, False, work, RATE, secs)["p99"])
            print(f"round {r + 1}, p99 ms:", {f"{p}/{gen}": round(v[-1], 3) for (p, gen), v in p99.items()}, flush=True)
        for gen in ("own", "wrk"):
            for p in gws:
                if p != "direct":
                    added = [a - b for a, b in zip(p99[(p, gen)], p99[("direct", gen)])]
                    print(f"{gen} {p}: added p99 median {h.med(added):.3f} ms, rounds {[round(x, 3) for x in added]}")

if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
