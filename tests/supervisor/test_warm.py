"""Warm standby through running supervisors (NeuronEX preset against the stand-in's API
logic over an httpx MockTransport), on virtual time."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from hasup import State
from hasup.backends.neuronex import NeuronexBackend
from hasup.testing import MemoryNetwork, pair_configs, supervisor_harness, wait_for
from tests.test_neuronex_backend import FakeNeuronex

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


def neuronex(fake: FakeNeuronex, **kw: Any) -> NeuronexBackend:
    return NeuronexBackend(url="http://neuronex.test", transport=fake.transport(), poll_interval=0.1, **kw)


async def test_crash_of_neuronex_on_the_holder_promotes_the_standby() -> None:
    fakes = {"edge-a": FakeNeuronex(), "edge-b": FakeNeuronex()}
    cfg_a, cfg_b = pair_configs("100ms")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a, neuronex(fakes["edge-a"]))  # type: ignore[arg-type]
        b = await h.boot(cfg_b, neuronex(fakes["edge-b"]))  # type: ignore[arg-type]
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        assert all(fakes["edge-a"].running.values()) and not any(fakes["edge-b"].running.values())
        fakes["edge-a"].up = False  # NeuronEX dies on the holder
        for node in fakes["edge-a"].running:
            fakes["edge-a"].running[node] = False
        await b.wait_state(State.MASTER)
        assert all(fakes["edge-b"].running.values())
        assert a.state == State.FAULT
        assert "standby_not_ready" in a.node.alarms


async def test_credentials_rejected_at_run_time_are_an_alarm_and_the_holder_keeps_serving() -> None:
    """(At start-up ``hasup run`` refuses them with one line, exit 2: ``preflight``.)"""
    fakes = {"edge-a": FakeNeuronex(), "edge-b": FakeNeuronex()}
    cfg_a, cfg_b = pair_configs("100ms")
    async with supervisor_harness(MemoryNetwork()) as h:
        b = await h.boot(cfg_b, neuronex(fakes["edge-b"]))  # type: ignore[arg-type]
        await b.wait_state(State.MASTER)
        a = await h.boot(cfg_a, neuronex(fakes["edge-a"], password="wrong"))  # type: ignore[arg-type]
        await wait_for(lambda: "standby_not_ready" in a.node.alarms, within=2.0, what="the alarm")
        assert "rejected the credentials of user 'admin' (error 1009)" in a.node.alarms["standby_not_ready"]
        assert a.node.effective_priority == 0
        # it cannot tell whether its NeuronEX collects (unknown counts as holding): it
        # tries to demote, cannot confirm it, and faults; the MASTER keeps serving
        await wait_for(lambda: a.state == State.FAULT, within=5.0, what="a in FAULT")
        assert "stop_unconfirmed" in a.node.alarms
        assert b.state == State.MASTER and all(fakes["edge-b"].running.values())
        assert not any(fakes["edge-a"].running.values())
