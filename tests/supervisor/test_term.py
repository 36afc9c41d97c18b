"""The supervisor hands the core's term (the fencing token) to the backend's start()."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from hasup import State
from hasup.testing import MemoryNetwork, pair_configs, supervisor_harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


async def test_start_gets_the_term_of_the_holding() -> None:
    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        first = a.node.term
        assert first > 0
        assert h.backends["edge-a"].last_term == first
        assert h.backends["edge-b"].last_term is None  # never started
        h.kill("edge-a")
        await b.wait_state(State.MASTER)
        # the new holder's token is higher: the deposed holder's writes can be refused
        assert h.backends["edge-b"].last_term == b.node.term > first
