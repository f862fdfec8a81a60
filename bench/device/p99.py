"""The paths run's open loop alone (bench/paths.py): non-streaming passthrough (`plain`) and
the bare hyper relay against the direct path, at 2,000 req/s by both generators, rounds
interleaved; each path right after the direct path, and "added" is its p99 minus that
pair's (`paths.open_pair`, since the ninth pass; the first device run subtracted the direct
path measured once a round). Each relay free on both CPUs, as the paths run measured before
its eighth pass (and as the first lent device machine's numbers were taken). For a host
where the whole paths run does not fit (a lent device machine's minutes).

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
        added = {(p, gen): [] for p in ("plain", "bare-hyper") for gen in ("own", "wrk")}
        for r in range(rounds):
            for p in ("plain", "bare-hyper"):
                h.affine(gws[p], h.LATENCY_CPUS)
                for gen, (d, x) in P.open_pair(gws["direct"], gws[p], work, RATE, secs).items():
                    added[(p, gen)].append(x["p99"] - d["p99"])
                    print(f"round {r + 1}, {p}/{gen}: p99 {x['p99']:.3f} ms, direct {d['p99']:.3f}", flush=True)
        for (p, gen), v in added.items():
            print(f"{gen} {p}: added p99 median {h.med(v):.3f} ms, rounds {[round(x, 3) for x in v]}")


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
