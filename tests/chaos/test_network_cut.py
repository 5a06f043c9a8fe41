"""The nemesis's network cut: one process loses every packet it sends to a loopback port, while
every other process still reaches it; healing gives the port back and leaves no rule behind.
Needs root and iptables (deploy/run installs it when it runs as root); skipped otherwise."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from deploy.chaos.iptables import PREFIX, LoopbackCut, cgroup2_root, unavailable_reason

pytestmark = pytest.mark.chaos

# Connects once every 0.2 s and says whether it got through.
PROBE = """
import socket, sys, time
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.3).close()
        print("ok", flush=True)
    except OSError:
        print("cut", flush=True)
    time.sleep(0.2)
"""


def _next_answers(probe: subprocess.Popen[str], n: int) -> list[str]:
    assert probe.stdout is not None
    return [probe.stdout.readline().strip() for _ in range(n)]


def test_a_cut_process_cannot_reach_the_port_and_others_still_can() -> None:
    if (reason := unavailable_reason()) is not None:
        pytest.skip(reason)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.listen(64)
        port = server.getsockname()[1]
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(port)], stdout=subprocess.PIPE, text=True)
        try:
            assert "ok" in _next_answers(probe, 3)
            with LoopbackCut(probe.pid, [port], "probe") as cut:
                _next_answers(probe, 2)  # what was under way when the cut began
                assert set(_next_answers(probe, 5)) == {"cut"}
                socket.create_connection(("127.0.0.1", port), timeout=1).close()  # this process: not cut
                assert cut.cgroup.startswith(PREFIX)
            time.sleep(0.5)
            assert "ok" in _next_answers(probe, 8)
        finally:
            probe.kill()
            probe.wait()
    rules = subprocess.run(["iptables", "-w", "-S", "OUTPUT"], capture_output=True, text=True, check=True)
    assert PREFIX not in rules.stdout
    root = cgroup2_root()
    assert root is not None
    assert not list(root.glob(f"{PREFIX}*"))
