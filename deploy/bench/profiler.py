"""py-spy on each Python process of a run, during its measured window: the collapsed stacks are
kept (open them in speedscope or flamegraph.pl) and the hottest functions go into the report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from deploy.processes import EngineError

_IDLE = ("select (selectors.py", "EpollSelector.select")


class PySpy:
    def __init__(self, out_dir: Path, processes: dict[str, int], seconds: float, label: str) -> None:
        found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(found).exists():
            raise EngineError("--profile needs py-spy (a dev dependency: pip install py-spy)")
        self.py_spy = found
        self.out_dir = out_dir
        self.processes = processes
        self.seconds = seconds
        self.label = label
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.processes.items():
            out = self.out_dir / f"{self.label}-{name}.txt"
            command = [self.py_spy, "record", "--pid", str(pid), "--duration", str(round(self.seconds)),
                       "--rate", "100", "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
            self.running[name] = (
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),  # noqa: S603
                out,
            )

    def finish(self, top: int = 8) -> dict[str, list[str]]:
        """Wait for every recording; each process's functions with the most time of their own."""
        found = {}
        for name, (proc, out) in self.running.items():
            proc.wait(timeout=self.seconds + 60)
            if out.exists():
                found[name] = hot_functions(out.read_text(), top)
        return found


def hot_functions(collapsed: str, top: int) -> list[str]:
    """'12.3% busy  func (file:line)' for the functions most often on top of the stack; the share
    of samples where the process sat idle in its event loop comes first."""
    own: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        if any(mark in leaf for mark in _IDLE):
            idle += n
        else:
            own[leaf] += n
    if not total:
        return []
    return [f"{100 * idle / total:5.1f}% idle in the event loop"] + [
        f"{100 * n / total:5.1f}% {leaf}" for leaf, n in own.most_common(top)
    ]
