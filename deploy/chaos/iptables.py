"""A network cut of one process from some loopback ports, with iptables.

Every process here runs as the same user on one loopback interface, so neither an address nor
a uid tells one worker's packets from another's. A cgroup does: the process is moved into a
cgroup (v2) of its own, and one OUTPUT rule drops every TCP packet that cgroup sends to the
ports. Its requests and its ACKs are lost, so its connections stall as across a broken link,
while every other process goes on. Healing deletes the rule; TCP's retransmissions resume.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from schemas.errors import LedgerError

PREFIX = "ledger-chaos-"


class CutFailed(LedgerError):
    """iptables or the cgroup refused: the fault was not injected (not worth retrying)."""

    retriable = False


def unavailable_reason() -> str | None:
    """Why a network cut cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "network cuts need root (iptables and a cgroup of their own)"
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables)"
    root = cgroup2_root()
    if root is None:
        return "no cgroup v2 hierarchy is mounted (iptables matches the cut process by its cgroup)"
    # The real thing, on an empty cgroup and no port anyone uses: a rule in, and out again.
    probe = root / f"{PREFIX}{os.getpid()}-probe"
    try:
        probe.mkdir(exist_ok=True)
        try:
            _iptables("-I", "OUTPUT", *drop_rule(probe.name, [1]))
            _iptables("-D", "OUTPUT", *drop_rule(probe.name, [1]))
        finally:
            probe.rmdir()
    except (OSError, CutFailed) as e:
        return f"a network cut cannot be made here: {e}"
    return None


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def sweep_stale() -> list[str]:
    """Delete the rules and cgroups that a chaos run killed before it healed left behind."""
    root = cgroup2_root()
    if root is None or unavailable_reason() is not None:
        return []
    swept = []
    for line in _run("-S", "OUTPUT").stdout.splitlines():
        fields = line.split()
        cgroup = fields[fields.index("--path") + 1] if "--path" in fields else ""
        if cgroup.startswith(PREFIX) and not _owner_alive(cgroup):
            _iptables("-D", *fields[1:])
            swept.append(cgroup)
    for stale in root.glob(f"{PREFIX}*"):
        if not _owner_alive(stale.name):
            for pid in (stale / "cgroup.procs").read_text().split():
                _write(root / "cgroup.procs", int(pid))
            stale.rmdir()
    return swept


def drop_rule(cgroup: str, ports: list[int]) -> list[str]:
    """The iptables rule (after -I/-D OUTPUT) that drops what `cgroup` sends to `ports`."""
    return [
        "-o", "lo", "-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, sorted(ports))),
        "-m", "cgroup", "--path", cgroup, "-j", "DROP",
    ]  # fmt: skip


class LoopbackCut:
    """`with LoopbackCut(pid, ports, "shard-0"):` cuts that process from those ports until exit."""

    def __init__(self, pid: int, ports: list[int], name: str) -> None:
        root = cgroup2_root()
        if root is None:
            raise CutFailed("no cgroup v2 hierarchy is mounted")
        self.pid, self.ports, self.root = pid, ports, root
        self.cgroup = f"{PREFIX}{os.getpid()}-{name}"  # whose it is: a stale one can be swept

    def __enter__(self) -> LoopbackCut:
        (self.root / self.cgroup).mkdir(exist_ok=True)
        _write(self.root / self.cgroup / "cgroup.procs", self.pid)
        _iptables("-I", "OUTPUT", *drop_rule(self.cgroup, self.ports))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _iptables("-D", "OUTPUT", *drop_rule(self.cgroup, self.ports))
        # Back to the root cgroup (if still alive), so that the cut's own cgroup can go.
        with contextlib.suppress(CutFailed):  # it exited meanwhile
            _write(self.root / "cgroup.procs", self.pid)
        (self.root / self.cgroup).rmdir()


def _owner_alive(cgroup: str) -> bool:
    """Whether the chaos run that made this cgroup (its pid is in the name) still runs."""
    try:
        os.kill(int(cgroup.removeprefix(PREFIX).split("-")[0]), 0)
    except ProcessLookupError:
        return False
    return True


def _write(path: Path, pid: int) -> None:
    try:
        path.write_text(str(pid))
    except OSError as e:
        raise CutFailed(f"moving process {pid} into {path.parent}: {e}") from e


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], check=False, capture_output=True, text=True)  # noqa: S603,S607


def _iptables(*args: str) -> None:
    done = _run(*args)
    if done.returncode != 0:
        raise CutFailed(f"iptables {' '.join(args)}: {done.stderr.strip()}")
