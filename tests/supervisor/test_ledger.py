"""The handover ledger through a running supervisor, on virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest
from trio.testing import MockClock

from hasup import State
from hasup._ledger import read_ledger
from hasup.config import parse_config
from hasup.testing import MemoryNetwork, config_text, supervisor_harness, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


async def test_node_loss_is_in_the_new_holders_ledger_status_and_metrics(tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("edge-a", "edge-b")}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    cfg_a = parse_config(
        config_text("edge-a", 100, "10.0.0.1:5405", ["10.0.0.2:5405"], advert="100ms", state_dir=str(dirs["edge-a"]))
    )
    cfg_b = parse_config(
        config_text("edge-b", 90, "10.0.0.2:5405", ["10.0.0.1:5405"], advert="100ms", state_dir=str(dirs["edge-b"]))
    )
    async with supervisor_harness(MemoryNetwork()) as h:
        a = await h.boot(cfg_a)
        b = await h.boot(cfg_b)
        await a.wait_state(State.MASTER)
        await b.wait_state(State.BACKUP)
        h.kill("edge-a")
        await b.wait_state(State.MASTER)
        term = b.node.term
        await wait_for(lambda: len(b.ledger) == 2, within=1.0, what="the move recorded")
        entries = read_ledger(str(dirs["edge-b"]))
        assert [(e["previous"], e["holder"]) for e in entries] == [(None, "edge-a"), ("edge-a", "edge-b")]
        move = entries[-1]
        assert move["term"] == term and move["seen_by"] == "edge-b" and move["two_holders"] == 0.0
        # silent since its last heartbeat: the master-down interval (3.65 adverts) and the start
        down = 3 * 0.1 + (256 - 90) * 0.1 / 256
        assert down <= move["no_holder"] <= down + 0.1 + 0.05
        assert b.snapshot()["handovers"][-1] == move
        metrics = b.render_metrics().decode()
        assert 'hasup_handovers_total{node="edge-b"} 2.0' in metrics
        assert 'hasup_handover_window_seconds_count{node="edge-b",window="no_holder"} 2.0' in metrics
