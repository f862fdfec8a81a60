"""bench/paths.py turns its open-loop measurements into BENCHMARKS.md's added latency: each
path's percentile less the direct path's measured just before it, by the same generator. A
wrong pairing (another round's direct path, or the other generator's) would put this VM's
slow spells into the "added" column, which is what issue 19's p99 line is judged on."""

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import harness  # noqa: E402
import paths  # noqa: E402

ROWS = ["direct, whole", "passthrough, whole passed through", "default, whole streamed and rebuilt",
        "direct, stream", "passthrough, stream", "zero-config-like route, stream", "translated, stream",
        "bare relay (reqwest), whole", "bare relay (hyper), whole", "bare relay (reqwest), stream"]


def measured(p50, p99, direct=None):
    m = {"p50": p50, "p99": p99, "not_200": 0, "per_sec": 2000.0}
    if direct is not None:
        m["direct_p50"], m["direct_p99"] = direct
    return m


def table(res, monkeypatch):
    """The open-loop rows write_paths would put in BENCHMARKS.md: {(row, generator): cells}."""
    written = {}
    monkeypatch.setattr(harness, "replace_section", lambda name, text: written.setdefault(name, text))
    paths.write_paths(res, types.SimpleNamespace(rounds=res["rounds"], secs=res["secs"], rate=res["rate"]))
    out = {}
    for line in written["paths"].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        for label in ("passthrough, whole passed through", "yardstick: bare relay (reqwest), whole"):
            for gen in ("understudy-load", "wrk"):
                if cells[0].startswith(f"{label}, {gen}"):
                    out[(label, gen)] = cells[1:]
    return out


def result(latency):
    return {"machine": "test", "date": "2026-12-04", "rounds": 3, "secs": 5.0, "rate": 2000.0,
            "throughput": {f"{r}|{g}": [1000.0] * 3 for r in ROWS for g in ("own", "wrk")},
            "latency": latency, "failed": {"own": 0, "wrk": 0}}


def test_each_path_is_compared_with_its_own_direct_measurement(monkeypatch):
    # The direct path's three measurements for the passthrough were 0.30, 0.90 (a slow
    # spell) and 0.32; the passthrough's own 0.50, 1.10 and 0.52: 0.20 added in each round.
    # Compared with the bare relay's pairs instead, it would read 0.10 … 0.80.
    plain = [measured(0.30, 0.50, (0.20, 0.30)), measured(0.80, 1.10, (0.60, 0.90)), measured(0.32, 0.52, (0.21, 0.32))]
    bare = [measured(0.25, 0.40, (0.20, 0.30)), measured(0.25, 0.42, (0.20, 0.32)), measured(0.25, 0.41, (0.20, 0.31))]
    lat = {"direct|own": [measured(0.20, 0.30), measured(0.20, 0.30), measured(0.60, 0.90), measured(0.20, 0.32),
                          measured(0.21, 0.32), measured(0.20, 0.31)],
           "plain|own": plain, "bare-reqwest|own": bare,
           # wrk's pairs differ from understudy-load's: a row must not take the other's.
           "direct|wrk": [measured(0.10, 0.25)] * 6,
           "plain|wrk": [measured(0.30, 0.45, (0.10, 0.25))] * 3, "bare-reqwest|wrk": [measured(0.20, 0.35, (0.10, 0.25))] * 3}
    rows = table(result(lat), monkeypatch)
    added_p50, added_p99, spread, direct_p99 = rows[("passthrough, whole passed through", "understudy-load")][:4]
    assert added_p99 == "**0.200**" and spread == "0.200 … 0.200", rows
    assert added_p50 == "0.110" and direct_p99 == "0.320"
    assert rows[("passthrough, whole passed through", "wrk")][1] == "**0.200**"
    assert rows[("yardstick: bare relay (reqwest), whole", "understudy-load")][1] == "**0.100**"


def test_a_run_from_before_the_pairing_reads_as_it_did(monkeypatch):
    # Before the ninth pass each round measured the direct path once, first: the rows carry
    # no pair, and round r's path is compared with round r's direct measurement.
    lat = {"direct|own": [measured(0.2, 0.3), measured(0.2, 0.9), measured(0.2, 0.4)],
           "direct|wrk": [measured(0.1, 0.3)] * 3,
           "plain|own": [measured(0.3, 0.6), measured(0.3, 1.0), measured(0.3, 0.5)],
           "plain|wrk": [measured(0.2, 0.5)] * 3}
    rows = table(result(lat), monkeypatch)
    cells = rows[("passthrough, whole passed through", "understudy-load")]
    assert cells[1] == "**0.100**" and cells[2] == "0.100 … 0.300", cells
    assert rows[("passthrough, whole passed through", "wrk")][1] == "**0.200**"
