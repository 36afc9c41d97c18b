"""Supervisor tests on virtual time (trio MockClock): exact timings in milliseconds."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from hasup import State
from hasup.testing import MemoryNetwork, MockBackend, pair_configs, supervisor_harness

pytestmark = pytest.mark.anyio

A = ("10.0.0.1", 5405)
B = ("10.0.0.2", 5405)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


def starts(backend: MockBackend) -> list[float]:
    return [t for t, what in backend.history if what == "start"]


@pytest.mark.parametrize(("advert", "seconds"), [("1s", 1.0), ("100ms", 0.1), ("20ms", 0.02)])
async def test_node_loss_takeover_at_exact_master_down_interval(advert: str, seconds: float) -> None:
    cfg_a, cfg_b = pair_configs(advert)
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        assert h.backends["edge-a"].running and not h.backends["edge-b"].running
        h.kill("edge-a")
        await b.wait_state(State.MASTER)
        last_heartbeat = h.network.last_delivery[(A, B)]
        expected = 3 * seconds + (256 - 90) * seconds / 256
        (started,) = starts(h.backends["edge-b"])
        assert started - last_heartbeat == pytest.approx(expected, abs=1e-3)


async def test_service_crash_moves_service_after_stop_plus_one_message() -> None:
    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        import anyio

        await anyio.sleep(2.5)
        crash_at = anyio.current_time()
        h.backends["edge-a"].crash()
        await b.wait_state(State.MASTER)
        (started,) = starts(h.backends["edge-b"])
        stopped = [t for t, what in h.backends["edge-a"].history if what == "stopped"][-1]
        # the backup starts the moment the master confirms its stop (zero message delay here)
        assert started == pytest.approx(stopped, abs=1e-6)
        assert started - crash_at == pytest.approx(h.backends["edge-a"].stop_time, abs=1e-3)
        assert a.state == State.FAULT


async def test_failback_through_release_handshake_has_no_overlap() -> None:
    import anyio

    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        h.kill("edge-a")
        await b.wait_state(State.MASTER)
        await anyio.sleep(2)
        back = anyio.current_time()
        a2 = await h.boot(cfg_a)
        await a2.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        b_stopped = [t for t, w in h.backends["edge-b"].history if w == "stopped"][-1]
        a_started = starts(h.backends["edge-a"])[-1]
        assert a_started >= b_stopped  # never both running
        assert a_started - back < 0.2  # hears the MASTER at once, no listen period
        assert h.backends["edge-a"].running and not h.backends["edge-b"].running


async def test_graceful_shutdown_hands_over_after_the_stop() -> None:
    import anyio

    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        t0 = anyio.current_time()
        await a.shutdown()
        await b.wait_state(State.MASTER)
        b_start = starts(h.backends["edge-b"])[-1]
        a_stopped = [t for t, w in h.backends["edge-a"].history if w == "stopped"][-1]
        assert b_start >= a_stopped
        assert b_start - t0 == pytest.approx(h.backends["edge-a"].stop_time, abs=1e-3)


async def test_failed_stop_keeps_the_node_active_and_the_peer_waits() -> None:
    import anyio

    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        h.backends["edge-a"].fail_stop = True
        h.backends["edge-a"].crash()
        h.backends["edge-a"].running = True  # a zombie that will not stop
        await a.wait_state(State.FAULT)
        await anyio.sleep(10)
        assert "stop_unconfirmed" in a.node.alarms
        assert a.node.holder
        assert starts(h.backends["edge-b"]) == []  # an outage rather than two copies
        h.backends["edge-a"].running = False
        await a.confirm_stopped()
        await b.wait_state(State.MASTER)


async def test_start_failure_is_a_fault_and_the_peer_serves() -> None:
    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        bad = MockBackend()
        bad.fail_start = True
        a = await h.boot(cfg_a, bad)
        b = await h.boot(cfg_b)
        await a.wait_state(State.FAULT)
        await b.wait_state(State.MASTER)
        assert h.backends["edge-b"].running


async def test_restarting_the_master_supervisor_does_not_restart_its_service() -> None:
    import anyio

    cfg_a, cfg_b = pair_configs("1s")
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        h.kill("edge-a", service_dies=False)  # kill -9 of hasup only
        await anyio.sleep(0.5)
        a2 = await h.boot(cfg_a)
        await a2.wait_state(State.MASTER)
        assert [w for _, w in h.backends["edge-a"].history] == ["start"]  # no stop, no second start
        assert b.state == State.BACKUP and starts(h.backends["edge-b"]) == []
