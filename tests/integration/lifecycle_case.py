"""Not collected on its own: test_lifecycle.py runs this file in a child pytest.

It starts both engines through the session fixtures, records their pids, then either fails at once
or waits to be signalled, so the parent can check that nothing outlives the session.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from deploy.stack import LocalStack


def test_start_engines_then_end_badly(
    kafka_bootstrap: str, database_url: str, local_stack: LocalStack
) -> None:
    out = Path(os.environ["LEDGER_PIDS_OUT"])
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps([p.to_json() for p in local_stack.processes]))
    partial.rename(out)  # the parent never reads a half-written file
    if os.environ.get("LEDGER_CASE_WAIT"):
        # Ctrl-C must mean KeyboardInterrupt here whatever the session inherited (a SIGINT ignored
        # by the process that started it stays ignored), and short sleeps notice a signal that the
        # kernel handed to another thread: the parent tests the engines' teardown, not those.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the parent signals this process
            time.sleep(0.1)
    raise AssertionError("fails on purpose: the session teardown must still stop the engines")
