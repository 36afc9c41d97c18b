"""The etcd coordinator against a real 3-member etcd cluster (see conftest.py).

Timing assertions are wide enough for a loaded CI machine; the measured figures are
printed (``pytest -s``) and recorded in docs/coordinator.md.
"""

from __future__ import annotations

import math
import re
import sys
import tomllib
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from hasup import BackendUnavailable, ConfigError
from hasup._section import Section, Source
from hasup.coordinator import CoordinatorError, load_coordinator
from hasup.coordinator._etcd_client import EtcdClient
from hasup.coordinator.etcd import EtcdCoordinator

from .conftest import EtcdCluster, partitionable

pytestmark = pytest.mark.anyio


async def _leader_of(coordinators: list[EtcdCoordinator]) -> tuple[EtcdCoordinator, int, float]:
    """Campaign with all; the first to win, its token and the time it won."""
    won: list[tuple[EtcdCoordinator, int, float]] = []
    async with anyio.create_task_group() as tg:

        async def run(c: EtcdCoordinator) -> None:
            token = await c.campaign()
            won.append((c, token, anyio.current_time()))
            tg.cancel_scope.cancel()

        for c in coordinators:
            tg.start_soon(run, c)
    assert len(won) == 1, won
    return won[0]


async def wait_for(predicate: Callable[[], bool], *, within: float = 2.0) -> None:
    """Wait for a condition of another task's state, with a deadline."""
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.005)


def _coordinator(
    etcd: EtcdCluster, prefix: str, name: str, ttl: float = 2.0, **kw: object
) -> EtcdCoordinator:
    return EtcdCoordinator(kw.pop("endpoints", etcd.endpoints), prefix, name, ttl=ttl, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- client
async def test_client_basics(etcd: EtcdCluster, prefix: str) -> None:
    key = f"{prefix}/k".encode()
    async with EtcdClient(etcd.endpoints, timeout=1.0) as client:
        lease, ttl = await client.lease_grant(3)
        assert lease > 2**53 or lease > 0  # int64 ids arrive as strings, parsed exactly
        assert ttl == 3
        first = await client.create_if_absent(key, b"a", lease=lease)
        assert first.succeeded
        second = await client.create_if_absent(key, b"b", lease=lease)
        assert not second.succeeded
        assert second.kv is not None
        assert second.kv.value == b"a"
        assert second.kv.create_revision == first.revision
        assert second.kv.lease == lease
        assert await client.lease_keepalive(lease) == 3
        assert not await client.delete_if_created_at(key, first.revision - 1)
        kv, _ = await client.get(key)
        assert kv is not None
        assert kv.value == b"a"
        await client.lease_revoke(lease)
        assert (await client.get(key))[0] is None  # the key went with its lease
        assert await client.lease_keepalive(lease) == 0
        await client.lease_revoke(lease)  # idempotent
        with pytest.raises(CoordinatorError):
            await client.call("kv/range", {"key": "!!not base64"})


async def test_client_fails_over_and_maps_errors(etcd: EtcdCluster, prefix: str) -> None:
    from .conftest import free_ports

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    async with EtcdClient([dead, *etcd.endpoints], timeout=0.5) as client:
        assert await client.put(f"{prefix}/x".encode(), b"1") > 0
        assert client.endpoints[client._preferred] != dead
    async with EtcdClient([dead], timeout=0.3) as client:
        with anyio.fail_after(2), pytest.raises(BackendUnavailable):
            await client.get(b"/x")
    async with (
        partitionable(etcd.endpoints[:1]) as partition,
        EtcdClient(partition.endpoints, timeout=0.3) as client,
    ):
        partition.cut = True  # a member that swallows requests: the timeout bounds it
        start = anyio.current_time()
        with pytest.raises(BackendUnavailable):
            await client.get(b"/x")
        assert anyio.current_time() - start < 1.0


async def test_rewatch_after_broken_stream_loses_no_events(etcd: EtcdCluster, prefix: str) -> None:
    key = f"{prefix}/w".encode()
    seen: list[tuple[int, bytes]] = []
    async with EtcdClient(etcd.endpoints, timeout=0.5) as watcher, EtcdClient(etcd.endpoints[1:]) as writer:
        _, revision = await watcher.get(key)
        got_first = anyio.Event()
        done = anyio.Event()

        async def watch() -> None:
            async with watcher.watch(key, start_revision=revision + 1) as events:
                async for event in events:
                    seen.append((event.revision, event.kv.value))
                    got_first.set()
                    if len(seen) == 30:
                        done.set()
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await writer.put(key, b"0")
            with anyio.fail_after(5):
                await got_first.wait()
            for i in range(1, 10):
                await writer.put(key, str(i).encode())
            etcd.kill("m1")  # the member the watch stream is on: the stream breaks
            for i in range(10, 30):
                await writer.put(key, str(i).encode())
            with anyio.fail_after(10):
                await done.wait()
    assert [v for _, v in seen] == [str(i).encode() for i in range(30)]
    revisions = [r for r, _ in seen]
    assert revisions == list(range(revisions[0], revisions[0] + 30))


# ---------------------------------------------------------------------------- election
async def test_one_leader_among_three_and_tokens_increase(etcd: EtcdCluster, prefix: str) -> None:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(_coordinator(etcd, prefix, n)) for n in "abc"]
        tokens = []
        for _ in range(3):
            with anyio.fail_after(5):
                leader, token, _ = await _leader_of(nodes)
            assert leader.is_leader
            assert leader.deadline() is not None
            assert sum(n.is_leader for n in nodes) == 1
            name = leader.name
            await wait_for(lambda: all(n.current_leader() == name for n in nodes))  # noqa: B023
            tokens.append(token)
            await leader.resign()
            assert not leader.is_leader
            assert leader.lost_reason == "resigned"
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 3


async def test_graceful_resign_moves_leadership_fast(etcd: EtcdCluster, prefix: str) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(_coordinator(etcd, prefix, n, ttl=5)) for n in "abc"]
        token_a = await a.campaign()
        await wait_for(lambda: b.current_leader() == c.current_leader() == "a")
        won: list[tuple[str, int, float]] = []
        async with anyio.create_task_group() as tg:

            async def run(node: EtcdCoordinator) -> None:
                token = await node.campaign()
                won.append((node.name, token, anyio.current_time()))
                tg.cancel_scope.cancel()

            tg.start_soon(run, b)
            tg.start_soon(run, c)
            await anyio.sleep(0.05)  # let both reach their wait on the watch
            start = anyio.current_time()
            await a.resign()
        _, token, when = won[0]
        elapsed = when - start
        print(f"\ngraceful move: {elapsed * 1000:.1f} ms")
        assert elapsed < 0.1
        assert token > token_a


@pytest.mark.parametrize("ttl", [2, 5])
async def test_leader_crash_new_leader_after_about_ttl(etcd: EtcdCluster, prefix: str, ttl: int) -> None:
    argv = [
        sys.executable,
        "-m",
        "tests.coordinator.leader_process",
        ",".join(etcd.endpoints),
        prefix,
        "a",
        str(ttl),
    ]
    async with await anyio.open_process(argv) as process, _coordinator(etcd, prefix, "b", ttl=ttl) as b:
        assert process.stdout is not None
        with anyio.fail_after(10):
            line = (await process.stdout.receive()).decode()
        assert line.startswith("leader"), line
        token_a = int(line.split()[1])
        await wait_for(lambda: b.current_leader() == "a")
        process.kill()  # kill -9: no resign, the lease must expire
        killed = anyio.current_time()
        with anyio.fail_after(ttl + 3):
            token_b = await b.campaign()
        elapsed = anyio.current_time() - killed
        print(f"\nleader kill -9 -> new leader at ttl {ttl}s: {elapsed:.2f} s")
        assert token_b > token_a
        # etcd expires the lease ttl after the last renewal (sent every ttl/3 before
        # the kill), checking about every 0.5 s.
        assert ttl * 2 / 3 - 0.2 <= elapsed <= ttl + 1.5


async def test_partitioned_leader_steps_down_before_anyone_takes_over(etcd: EtcdCluster, prefix: str) -> None:
    ttl = 2.0
    async with partitionable(etcd.endpoints) as partition, AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            _coordinator(etcd, prefix, "a", ttl=ttl, endpoints=partition.endpoints)
        )
        b = await stack.enter_async_context(_coordinator(etcd, prefix, "b", ttl=ttl))
        c = await stack.enter_async_context(_coordinator(etcd, prefix, "c", ttl=ttl))
        token_a = await a.campaign()
        await wait_for(lambda: b.current_leader() == c.current_leader() == "a")
        for _ in range(2):  # two renewals went through (each moves the local deadline on)
            renewed = a.deadline()
            await wait_for(lambda: a.deadline() != renewed, within=ttl)  # noqa: B023
        lost_at: list[float] = []
        won: list[tuple[str, int, float]] = []
        async with anyio.create_task_group() as tg:

            async def watch_a() -> None:
                await a.leader_lost.wait()
                lost_at.append(anyio.current_time())

            async def run(node: EtcdCoordinator) -> None:
                token = await node.campaign()
                won.append((node.name, token, anyio.current_time()))
                tg.cancel_scope.cancel()

            tg.start_soon(watch_a)
            tg.start_soon(run, b)
            tg.start_soon(run, c)
            deadline = a.deadline()
            partition.cut = True
            cut = anyio.current_time()
            with anyio.fail_after(ttl + 3):
                await anyio.sleep_forever()
        assert deadline is not None
        assert lost_at, "the partitioned leader never stepped down"
        name, token, when = won[0]
        print(
            f"\npartition: leader stepped down {lost_at[0] - cut:.2f} s after the cut, "
            f"new leader {when - cut:.2f} s after ({(when - lost_at[0]) * 1000:.0f} ms later)"
        )
        assert lost_at[0] < when  # never two leaders, even for a moment
        assert when - lost_at[0] >= a.margin * 0.5
        assert "deadline" in a.lost_reason
        assert token > token_a
        assert name in "bc"


async def test_etcd_raft_leader_loss_does_not_move_leadership(etcd: EtcdCluster, prefix: str) -> None:
    ttl = 3.0  # >= 4 x etcd's election timeout (500 ms here): rides out a raft election
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(_coordinator(etcd, prefix, "a", ttl=ttl))
        b = await stack.enter_async_context(_coordinator(etcd, prefix, "b", ttl=ttl))
        await a.campaign()
        victim = etcd.raft_leader()
        killed = anyio.current_time()
        etcd.kill(victim)
        async with anyio.create_task_group() as tg:

            async def follower() -> None:
                await b.campaign()
                pytest.fail("b was elected while a still held a renewed lease")

            tg.start_soon(follower)
            with anyio.move_on_after(ttl * 1.5):
                await a.leader_lost.wait()
            tg.cancel_scope.cancel()
        assert a.is_leader, a.lost_reason
        deadline = a.deadline()
        assert deadline is not None
        assert deadline > killed + ttl / 2
        # ... and the surviving members still elect quickly on resign.
        await a.resign()
        with anyio.fail_after(2):
            await b.campaign()
        print(f"\nraft leader {victim} killed: leadership held, keepalive failures {a.statistics}")


async def test_operator_deleting_the_key_ends_the_tenure(etcd: EtcdCluster, prefix: str) -> None:
    async with _coordinator(etcd, prefix, "a") as a, EtcdClient(etcd.endpoints) as client:
        await a.campaign()
        await client.delete(a.key)
        with anyio.fail_after(2):
            await a.leader_lost.wait()
        assert "deleted" in a.lost_reason


async def test_leader_changes_iterator(etcd: EtcdCluster, prefix: str) -> None:
    async with _coordinator(etcd, prefix, "a") as a, _coordinator(etcd, prefix, "b") as b:
        changes = []
        with b.leader_changes() as stream:  # subscribed before anything happens
            token = await a.campaign()
            await a.resign()
            with anyio.fail_after(5):
                async for change in stream:
                    changes.append(change)
                    if len(changes) == 2:
                        break
        assert [(c.leader, c.token) for c in changes] == [("a", token), (None, 0)]


# ---------------------------------------------------------------------------- config
def _section(text: dict[str, object]) -> Section:
    return Section(text, path="coordinator", source=Source("hasup.toml"))


def test_from_section_defaults_and_errors() -> None:
    c = load_coordinator(
        _section({"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}), group_id=7, name="n1"
    )
    assert isinstance(c, EtcdCoordinator)
    assert c.prefix == "/hasup/7"
    assert c.ttl == 5.0
    assert c.key == b"/hasup/7/leader"
    assert c.request_timeout == 1.0
    assert c.margin == 1.25
    assert math.isclose(c.keepalive_interval, 5 / 3)
    bad = [
        ({"type": "etcd"}, "endpoints: is required"),
        ({"type": "etcd", "endpoints": ["127.0.0.1:2379"]}, "not an http"),
        ({"type": "etcd", "endpoints": ["http://e:2379"], "ttl": "2500ms"}, "whole seconds"),
        ({"type": "etcd", "endpoints": ["http://e:2379"], "username": "u"}, "needs password_file"),
        ({"type": "etcd", "endpoints": ["http://e:2379"], "ca_file": "/nonexistent"}, "no such file"),
        ({"type": "etcd", "endpoints": ["http://e:2379"], "tll": "5s"}, "tll: unknown key"),
        ({"type": "zookeeper", "endpoints": ["http://e:2379"]}, "must be one of"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_coordinator(_section(table), group_id=7, name="n1")


def test_docs_example_is_a_valid_coordinator_table(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "coordinator.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    for name in ("ca", "cert", "key", "password"):
        (tmp_path / name).write_text("secret\n")
        (tmp_path / name).chmod(0o600)
    toml = re.sub(
        r'(ca|cert|key|password)_file = "[^"]*"', lambda m: f'{m[1]}_file = "{tmp_path / m[1]}"', block[1]
    )
    table = tomllib.loads(toml)["coordinator"]
    table.pop("ca_file")  # the dummy files are not certificates: check the rest
    table.pop("cert_file")
    table.pop("key_file")
    coordinator = load_coordinator(_section(table), group_id=7, name="n1")
    assert isinstance(coordinator, EtcdCoordinator)
    assert coordinator.ttl == 5.0
    assert coordinator.client._password == "secret"
