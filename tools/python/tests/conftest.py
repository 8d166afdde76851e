"""Real graspd processes for the tests of the graspy-API modules.

``lone_graspd``: one graspd whose only interface does not exist (it waits
for it), so it sends nothing anywhere; any user can run it.  ``pair`` (root
only): two network namespaces joined by a veth pair with ULA and link-local
addresses, a graspd in each; ``dull_pair`` likewise with DULL graspds.  The
namespaces and processes go when the tests end.  ASAs run as processes of
their own (``run_asa``) with ``GRASP_API_SOCKET`` pointing at their node:
a Unix socket path reaches into a namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
ASAS = Path(__file__).resolve().parent / "asas"
GRASPD = Path(os.environ.get("GRASPD", ROOT / "target" / "debug" / "graspd"))


def root_or_skip() -> None:
    """Skips, loudly, the tests that need network namespaces."""
    if os.geteuid() != 0:
        msg = "SKIPPED: needs root (network namespaces); run the tests as root to include it"
        print("\n*** %s ***" % msg, file=sys.stderr)
        pytest.skip(msg)


class Graspd:
    """One graspd process and its ASA socket."""

    def __init__(self, cfg: str, dir: Path, name: str, netns: Optional[str] = None) -> None:
        if not GRASPD.exists():
            pytest.fail("graspd is not built: %s (cargo build -p grasp-tools --bin graspd)" % GRASPD)
        self.socket = str(dir / (name + ".sock"))
        conf = dir / (name + ".toml")
        conf.write_text(
            cfg
            + '\n[api]\nsocket = "%s"\n%s[control]\nsocket = "%s"\n'
            % (self.socket, "" if os.geteuid() == 0 else "open = true\n", dir / (name + "-control.sock"))
        )
        self.log = dir / (name + ".log")
        cmd = [str(GRASPD), "--config", str(conf)]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("graspd did not start: %s" % self.log.read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        """Stops it (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


PLAIN = 'security = "none"\ninterfaces = ["%s"]\n'


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="graspd-asa-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.fixture
def lone_graspd(workdir: Path) -> Iterator[Graspd]:
    """A graspd on an interface that does not exist: it serves ASAs, sends nothing."""
    g = Graspd(PLAIN % "gpynone0", workdir, "lone")
    yield g
    g.stop()


def _netns_pair(dull: bool, dir: Path) -> Iterator[List[Graspd]]:
    root_or_skip()
    a, b = "gpy%da" % os.getpid(), "gpy%db" % os.getpid()
    sh = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
    nodes: List[Graspd] = []
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        for ns in (a, b):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", a, "link", "add", "ab0", "type", "veth", "peer", "name", "ba0", "netns", b)
        for ns, dev, ll, ula in ((a, "ab0", "fe80::1:1", "fd00:1::1"), (b, "ba0", "fe80::1:2", "fd00:1::2")):
            sh("ip", "-n", ns, "link", "set", dev, "addrgenmode", "none")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", ll + "/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "addr", "add", ula + "/64", "dev", dev, "nodad")
        extra = (
            "dull = true\ndull_objectives = [\"AN_join_registrar\", \"AN_proxy\"]\n" if dull else ""
        )
        nodes.append(Graspd(PLAIN % "ab0" + extra, dir, "a", a))
        nodes.append(Graspd(PLAIN % "ba0" + extra, dir, "b", b))
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def pair(workdir: Path) -> Iterator[List[Graspd]]:
    """Two graspds on a veth pair between namespaces (root)."""
    yield from _netns_pair(False, workdir)


@pytest.fixture
def dull_pair(workdir: Path) -> Iterator[List[Graspd]]:
    """Two DULL graspds on a veth pair between namespaces (root)."""
    yield from _netns_pair(True, workdir)


class Asa:
    """An ASA script of tests/asas running as a process of its own."""

    def __init__(self, script: str, node: Graspd, *args: str, dull: bool = False) -> None:
        env = dict(os.environ)
        env["GRASP_DULL_API_SOCKET" if dull else "GRASP_API_SOCKET"] = node.socket
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(ASAS / script), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float = 60) -> Dict:
        """Waits for the ASA to finish; its last stdout line, as JSON."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail("ASA did not finish in %ss:\n%s\n%s" % (timeout, out, err))
        lines = [x for x in out.splitlines() if x.startswith("{")]
        assert self.proc.returncode == 0 and lines, "ASA failed (%s):\n%s\n%s" % (
            self.proc.returncode,
            out,
            err,
        )
        return json.loads(lines[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@pytest.fixture
def run_asa() -> Iterator:
    """Starts ASA processes; those still running at the end are stopped."""
    started: List[Asa] = []

    def start(script: str, node: Graspd, *args: str, dull: bool = False) -> Asa:
        a = Asa(script, node, *args, dull=dull)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()
