"""The connection to graspd: a stopped graspd and a missing one answer
errors.noCore (107) at once with a message saying how to start graspd;
nothing hangs.  Runs without root (graspd on an interface that does not
exist sends nothing)."""

import json
import os
import subprocess
import sys
import time

from conftest import ASAS


def test_a_stopped_graspd_ends_every_call(lone_graspd):
    env = dict(os.environ, GRASP_API_SOCKET=lone_graspd.socket)
    p = subprocess.Popen(
        [sys.executable, str(ASAS / "deadcore.py")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "deadcore: listening"
    lone_graspd.stop()
    out, err = p.communicate("go\n", timeout=30)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["listen"] == [[107, None, None]]
    assert r["register_obj"] == 107
    assert r["discover"] == [107, []]
    assert r["register_asa"] == [107, None]  # tries again: nobody there
    assert r["seconds"] < 5
    assert "graspd" in err


def test_no_graspd_at_all(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import grasp, graspi\n"
        "print(grasp.register_asa('x'), graspi.register_asa('y'), grasp.discover(1, grasp.objective('a'), 10))\n"
    )
    env = dict(os.environ, GRASP_API_SOCKET=str(tmp_path / "nobody.sock"))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "(107, None) (107, None) (107, [])"
    assert "cannot reach graspd's ASA socket" in p.stderr and "[api] socket" in p.stderr
    assert p.stderr.count("cannot reach") == 1  # said once
    assert time.monotonic() - t0 < 10


def test_many_threads_share_the_socket_and_get_their_own_answers(lone_graspd, tmp_path):
    # Each thread alternates calls whose answers differ (a registration,
    # the same again, which fails, a deregistration, the same again): an
    # answer handed to the wrong thread, a lost one or a reader that never
    # passes the reading on shows as a wrong code or a hang (bounded here).
    script = tmp_path / "threads.py"
    script.write_text(
        "import threading, grasp\n"
        "e, asa = grasp.register_asa('threads')\n"
        "assert e == 0\n"
        "bad = []\n"
        "def run(i):\n"
        "    for k in range(150):\n"
        "        o = grasp.objective('EX.t%d.%d' % (i, k))\n"
        "        got = (grasp.register_obj(asa, o), grasp.register_obj(asa, o),\n"
        "               grasp.deregister_obj(asa, o), grasp.deregister_obj(asa, o))\n"
        "        if got[0] or not got[1] or got[2] or not got[3]:\n"
        "            bad.append((i, k, got))\n"
        "ts = [threading.Thread(target=run, args=(i,)) for i in range(12)]\n"
        "[t.start() for t in ts]\n"
        "[t.join() for t in ts]\n"
        "print('bad', bad[:3], len(bad))\n"
    )
    env = dict(os.environ, GRASP_API_SOCKET=lone_graspd.socket)
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "bad [] 0"
