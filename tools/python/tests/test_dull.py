"""A DULL flood announcer and reader (graspy's BRSKI registrar and pledge
style), each on the DULL graspd of its namespace: skip_dialogue(be_dull=True)
picks GRASP_DULL_API_SOCKET."""

import time


def test_dull_flood_announcer_and_reader(dull_pair, run_asa):
    a, b = dull_pair
    ann = run_asa("announcer.py", b, dull=True)
    line = ann.proc.stdout.readline().strip()
    assert line == "announcer: ready True", (line, ann.proc.stderr.read() if ann.proc.poll() is not None else "")
    out = run_asa("reader.py", a, dull=True).result(timeout=60)
    assert out["dull"] is True
    # Its own address (the ULA of B), port 80; loop count 1 in DULL.
    assert out["AN_join_registrar"][0] == ["EST-TLS", 1, "fd00:1::2", 80, True], out
    # `::` became B's link-local address on the link.
    assert out["AN_proxy"][0] == ["", 1, "fe80::1:2", 443, True], out
    assert out["expire"] == 0 and out["expired_locally"] is True
    assert out["sync"] == [0, "EST-TLS"]


def test_be_dull_against_a_graspd_that_is_not_dull(lone_graspd, run_asa, tmp_path):
    """skip_dialogue(be_dull=True) with a normal graspd fails, saying how to
    configure a DULL one."""
    script = tmp_path / "dullprobe.py"
    script.write_text(
        "import grasp\n"
        "grasp.skip_dialogue(be_dull=True)\n"
        "print('{\"r\": %d}' % grasp.register_asa('x')[0])\n"
    )
    import os
    import subprocess
    import sys

    env = dict(os.environ, GRASP_DULL_API_SOCKET=lone_graspd.socket)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == '{"r": 107}'
    assert "not a DULL instance" in p.stderr and "dull = true" in p.stderr
    assert time.monotonic() - t0 < 10
