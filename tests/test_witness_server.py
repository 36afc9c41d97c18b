"""``hasup witness`` and ``[group] witness``: configuration, the real UDP server, and a
pair of supervisors counting its vote over real sockets on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from hasup import ConfigError, State
from hasup._witness_server import parse_groups, run_witness
from hasup.config import parse_config
from hasup.protocol import Drop, KeyRing
from hasup.protocol._witness import WITNESS_LABEL, Vote, WitnessVote
from hasup.testing import TEST_KEY, MockBackend, config_text, free_port, supervisor_harness, write_key_file
from tests import test_cli_conventions as cli_conventions


def _text(extra_group: str, peers: tuple[str, ...] = ("127.0.0.1:5411",)) -> str:
    return config_text("edge-a", 100, "127.0.0.1:5410", list(peers), extra_group=extra_group)


# ---------------------------------------------------------------------- configuration
def test_witness_settings_reach_the_core() -> None:
    core = parse_config(_text('witness = "127.0.0.1:7000"\nwitness_lease = "6s"')).core_config()
    assert core.witness == ("127.0.0.1", 7000)
    assert core.vote_lease == 6.0 and core.quorum_required
    assert core.witness_keys is not None and core.witness_keys.keys != core.keys.keys
    default = parse_config(_text('witness = "10.0.0.9"')).core_config()
    assert default.witness == ("10.0.0.9", 5406) and default.vote_lease == 4.0
    assert parse_config(_text("")).core_config().witness is None


@pytest.mark.parametrize(
    ("extra", "peers", "message"),
    [
        ('witness = "127.0.0.1:7000"', ("127.0.0.1:5411", "127.0.0.1:5412"), "groups of an even size"),
        ('witness = "127.0.0.1:7000"\nquorum = "none"', ("127.0.0.1:5411",), 'quorum = "none"'),
        ('witness = "127.0.0.1:7000"\nwitness_lease = "2s"', ("127.0.0.1:5411",), "witness_lease"),
        ('witness = "nonsense:port:x"', ("127.0.0.1:5411",), "group.witness"),
        ('witness_key_file = "/x"', ("127.0.0.1:5411",), "needs witness"),
    ],
)
def test_witness_mistakes_are_one_located_line(extra: str, peers: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_text(extra, peers))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_witness_on_a_node_of_the_pair_is_warned_about() -> None:
    config = parse_config(_text('witness = "127.0.0.1:5411"'))
    assert any("third machine" in w for w in config.warnings)
    assert not any("third machine" in w for w in parse_config(_text('witness = "10.9.9.9:5406"')).warnings)


def test_witness_needs_a_key_and_excludes_a_coordinator() -> None:
    text = config_text("edge-a", 100, "127.0.0.1:5410", ["127.0.0.1:5411"], key=None, extra_group="insecure = true")
    with pytest.raises(ConfigError, match="needs a group key"):
        parse_config(text.replace("insecure = true", 'insecure = true\nwitness = "127.0.0.1:7000"'))
    coordinator = {"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}
    text = config_text(
        "edge-a",
        100,
        "127.0.0.1:5410",
        ["127.0.0.1:5411"],
        extra_group='witness = "127.0.0.1:7000"',
        coordinator=coordinator,
    )
    with pytest.raises(ConfigError, match="alternatives"):
        parse_config(text)


def test_witness_command_line_mistakes_exit_2(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    for args, message in [
        ([], "--group is required"),
        (["--group", "x:/k"], "expected ID[/KEYID]:KEYFILE"),
        (["--group", f"51:{loose}"], "chmod 600"),
        (["--group", f"51:{write_key_file(tmp_path / 'k')}", "--max-lease", "0.5s"], "between 1s and 300s"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "hasup", "witness", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_parse_groups_accepts_key_ids_for_rotation(tmp_path: Path) -> None:
    k1, k2 = write_key_file(tmp_path / "k1"), write_key_file(tmp_path / "k2")
    keys = parse_groups([f"51:{k1}", f"51/2:{k2}", f"52:{k1}"])
    assert set(keys) == {51, 52} and set(keys[51].keys) == {1, 2} and keys[51].send_id == 1
    with pytest.raises(ConfigError, match="given twice"):
        parse_groups([f"51:{k1}", f"51/1:{k2}"])


# ---------------------------------------------------------------------- the real server


@pytest.mark.anyio
async def test_the_server_grants_one_vote_over_real_udp() -> None:
    keys = KeyRing.from_group_keys({1: b"s" * 32}, 1, label=WITNESS_LABEL)
    port = free_port(socket.SOCK_DGRAM)
    a, b = WitnessVote(keys, 51, "a", 1.0), WitnessVote(keys, 51, "b", 1.0)
    stranger = WitnessVote(KeyRing.from_group_keys({1: b"t" * 32}, 1, label=WITNESS_LABEL), 51, "a", 4.0)
    async with anyio.create_task_group() as tg, await anyio.create_udp_socket(local_host="127.0.0.1") as client:
        server = await tg.start(
            lambda task_status: run_witness(("127.0.0.1", port), {51: keys}, max_lease=1.0, task_status=task_status)
        )

        async def ask(vote: WitnessVote, seq: int) -> Vote | None:
            await client.sendto(vote.request(9, seq, True, anyio.current_time()), "127.0.0.1", port)
            with anyio.move_on_after(0.5):
                data, _ = await client.receive()
                rep = vote.reply(data, anyio.current_time())
                assert not isinstance(rep, Drop)
                return rep.vote
            return None

        assert await ask(a, 1) is Vote.QUIET
        with anyio.fail_after(3):
            seq = 2
            while (answer := await ask(a, seq)) is not Vote.GRANTED:
                assert answer is Vote.QUIET
                seq += 1
        assert a.valid(anyio.current_time())
        assert await ask(b, 1) is Vote.DENIED and b.holder == "a"
        assert await ask(stranger, 100) is None  # wrong key: no answer at all
        assert server.book.stats["dropped_bad_tag"] == 1
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_pair_counts_the_witness_over_real_udp() -> None:
    """a holds the vote; b dies: a keeps serving (a + witness). The witness dies too: a
    has no majority and stops. It comes back: a claims again after its quiet time."""
    keys = KeyRing.from_group_keys({1: bytes.fromhex(TEST_KEY)}, 1, label=WITNESS_LABEL)
    wport, pa, pb = (free_port(socket.SOCK_DGRAM) for _ in range(3))
    extra = f'witness = "127.0.0.1:{wport}"'
    cfg_a = parse_config(
        config_text("edge-a", 100, f"127.0.0.1:{pa}", [f"127.0.0.1:{pb}"], advert="50ms", extra_group=extra)
    )
    cfg_b = parse_config(
        config_text("edge-b", 90, f"127.0.0.1:{pb}", [f"127.0.0.1:{pa}"], advert="50ms", extra_group=extra)
    )
    ba, bb = MockBackend(start_time=0.01, stop_time=0.01), MockBackend(start_time=0.01, stop_time=0.01)
    async with anyio.create_task_group() as wtg, supervisor_harness() as h:
        witness = anyio.CancelScope()

        async def serve_witness(task_status: anyio.abc.TaskStatus[None]) -> None:
            with witness:
                await run_witness(("127.0.0.1", wport), {7: keys}, max_lease=1.0, task_status=task_status)

        await wtg.start(serve_witness)
        a = await h.boot(cfg_a, ba)
        await h.boot(cfg_b, bb)
        with anyio.fail_after(5):
            await a.wait_state(State.MASTER)
            while a.snapshot()["witness"]["vote"] != "held":
                await anyio.sleep(0.02)
        assert a.snapshot()["witness"]["reachable"] is True
        h.kill("edge-b")
        with anyio.move_on_after(1.0):  # well past the peer's down interval
            await a.wait_state(State.FAULT)
        assert a.state == State.MASTER and ba.running
        witness.cancel()
        with anyio.fail_after(3):
            await a.wait_state(State.FAULT)
            while ba.running:
                await anyio.sleep(0.01)
        with anyio.fail_after(3):
            while "witness_unreachable" not in a.snapshot()["alarms"]:
                await anyio.sleep(0.02)
        await wtg.start(
            lambda task_status: run_witness(("127.0.0.1", wport), {7: keys}, max_lease=1.0, task_status=task_status)
        )
        with anyio.fail_after(8):
            await a.wait_state(State.MASTER)
        assert ba.running
        wtg.cancel_scope.cancel()


def test_hasup_status_shows_the_witness() -> None:
    doc = cli_conventions.status_doc("MASTER", {"witness_unreachable": "no answer from the witness for 3 s"})
    doc["witness"] = {"address": "10.0.0.3:5406", "reachable": False, "vote": "not held", "holder": None}
    handler = type("Handler", (cli_conventions._Status,), {"doc": doc})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = cli_conventions.hasup("status", "--url", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "witness 10.0.0.3:5406: UNREACHABLE, vote not held (holder nobody)" in proc.stdout
    assert "ALARM witness_unreachable" in proc.stdout
