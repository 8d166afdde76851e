"""A prefix-manager pair in the manner of graspy's pfxm3: parameters by
synchronization, prefixes (bytes values under graspy's tag-24 rule) by
negotiation, three at once, and a refused request."""

import ipaddress


def test_prefix_origin_and_delegator(pair, run_asa):
    a, b = pair
    origin = run_asa("pfx_origin.py", b)
    assert origin.proc.stdout.readline().strip() == "origin: ready"
    out = run_asa("pfx_delegator.py", a).result(timeout=60)
    assert out["params"] == [0, {"pool": "2001:db8:100::/40", "shortest": 48}]
    assert out["discover"] == [0, 1]
    got = out["prefixes"]
    assert all(g[0] == "got" and g[2] == "bytes" for g in got), got
    nets = {ipaddress.IPv6Network(g[1]) for g in got}
    assert len(nets) == 3
    pool = ipaddress.IPv6Network("2001:db8:100::/40")
    assert all(n.prefixlen == 56 and n.subnet_of(pool) for n in nets)
    assert out["too_large"] == ["declined", "Request too large"]
