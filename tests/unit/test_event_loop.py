"""Every long-running process runs on the loop LEDGER_EVENT_LOOP names, uvloop by default."""

from __future__ import annotations

import asyncio
import signal

import pytest
import uvloop

from infra import event_loop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default() -> None:
    assert event_loop.run(_loop_type(), {}) is uvloop.Loop


def test_the_standard_loop_when_asked() -> None:
    assert not issubclass(event_loop.run(_loop_type(), {"LEDGER_EVENT_LOOP": "asyncio"}), uvloop.Loop)


def test_an_unknown_loop_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="LEDGER_EVENT_LOOP='tokio'"):
        event_loop.loop_factory({"LEDGER_EVENT_LOOP": "tokio"})


def test_a_process_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared outer loop of shard workers and coordinators."""
    from infra.processes import run_until_signalled  # noqa: PLC0415

    monkeypatch.delenv("LEDGER_EVENT_LOOP", raising=False)
    seen: list[type] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(await _loop_type())

    run_until_signalled(main)
    assert seen == [uvloop.Loop]


def test_the_signals_are_given_back_when_the_process_loop_ends() -> None:
    """Found by the lifecycle test: after a uvloop run the SIGINT handler was a closed loop's."""
    from infra.processes import run_until_signalled  # noqa: PLC0415

    async def main(stop: asyncio.Event) -> None:
        pass

    run_until_signalled(main)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
