"""bench/phases.py reads a request's phases off a loopback capture: a wrong pairing would put
the gateway's time on the mock or the reverse, and BENCHMARKS.md would say the wrong thing.
A capture is written here packet by packet, with known times, in both framings tcpdump uses
on loopback."""

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import phases  # noqa: E402

GW, MOCK = 23311, 23301


def segment(sport, dport, payload, flags=0x18):
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return ip + tcp + payload


def pcap(path, packets, link=1, nano=False):
    out = [struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, link)]
    frame = {1: b"\0" * 12 + b"\x08\x00", 113: b"\0" * 14 + b"\x08\x00"}[link]
    for t, data in packets:
        sec = int(t)
        frac = round((t - sec) * (1e9 if nano else 1e6))
        rec = frame + data
        out.append(struct.pack("<IIII", sec, frac, len(rec), len(rec)) + rec)
    path.write_bytes(b"".join(out))


def request(i):
    return (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-req-id: %d\r\ncontent-length: 2\r\n\r\n{}" % i)


ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


def test_each_request_is_split_into_its_own_phases(tmp_path):
    # Two requests on two client connections, overlapping, answered out of order, on two
    # upstream connections; bare ACKs (no payload) in between are ignored.
    a, b = 40001, 40002      # client ports
    ua, ub = 50001, 50002    # the gateway's upstream ports
    t = 1000.0
    packets = [
        (t + 0.000100, segment(a, GW, request(1))),
        (t + 0.000150, segment(GW, a, b"", flags=0x10)),
        (t + 0.000200, segment(b, GW, request(2))),
        (t + 0.000300, segment(ua, MOCK, request(1))),
        (t + 0.000350, segment(ub, MOCK, request(2))),
        (t + 0.000500, segment(MOCK, ub, ANSWER)),     # request 2's answer first
        (t + 0.000700, segment(MOCK, ua, ANSWER)),
        (t + 0.000900, segment(GW, b, ANSWER)),
        (t + 0.001000, segment(GW, a, ANSWER)),
        (t + 0.001100, segment(a, GW, request(3))),    # never answered: not counted
    ]
    for link, nano in ((1, False), (113, True)):
        f = tmp_path / f"c{link}.pcap"
        pcap(f, packets, link=link, nano=nano)
        got = phases.split(f, GW, MOCK)
        rounded = {k: sorted(round(x) for x in v) for k, v in got.items()}
        # Request 1: in 200 µs, upstream 400, out 300 (900 in all); request 2: in 150, upstream
        # 150, out 400 (700).
        assert rounded == {"in": [150, 200], "upstream": [150, 400], "out": [300, 400],
                           "own": [500, 550], "total": [700, 900]}


def test_the_direct_path_has_only_a_total(tmp_path):
    t = 5.0
    f = tmp_path / "direct.pcap"
    pcap(f, [(t, segment(40001, MOCK, request(7))), (t + 0.000250, segment(MOCK, 40001, ANSWER))])
    got = phases.split(f, MOCK, MOCK)
    assert [round(x) for x in got["total"]] == [250]
    assert got["in"] == [] and got["own"] == []


def test_percentiles_take_the_value_at_the_rank():
    v = list(range(1, 1001))
    assert phases.pct(v, 50) == 501
    assert phases.pct(v, 99) == 991
    assert phases.pct(v, 99.9) == 1000
    assert phases.pct([], 99) != phases.pct([], 99)  # NaN: nothing measured
