"""The packaged ``hasup-witness.service`` under a real systemd (tests/fixtures/systemd).

The unit file is the one from packaging/deb, with only its ``/usr/bin/hasup`` pointed
at this checkout's ``hasup``; its arguments come from a drop-in, as docs/witness.md
tells operators to do. It must become active (Type=notify: READY=1 arrives), answer a
vote request over UDP with its sandbox on, and without arguments fail once with exit 2
and stay stopped (RestartPreventExitStatus=2).
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hasup.protocol import Drop, KeyRing
from hasup.protocol._witness import WITNESS_LABEL, Vote, WitnessVote
from hasup.testing import write_key_file
from tests._support import wait_until

from .conftest import SystemdInstance, free_udp_port

UNIT = "hasup-witness.service"
PACKAGED = Path(__file__).resolve().parents[3] / "packaging" / "deb" / UNIT


def _install(instance: SystemdInstance, args: str | None) -> None:
    hasup = shutil.which("hasup", path=str(Path(sys.executable).parent))
    assert hasup is not None
    text = PACKAGED.read_text().replace("/usr/bin/hasup", hasup)
    units = instance.dir / "units"
    (units / UNIT).write_text(text)
    dropin = units / f"{UNIT}.d"
    shutil.rmtree(dropin, ignore_errors=True)
    dropin.mkdir()
    if args is not None:
        (dropin / "args.conf").write_text(f'[Service]\nEnvironment="HASUP_WITNESS_ARGS={args}"\n')
    # The only relaxations of the packaged sandbox, for where this checkout lives: the
    # package's interpreter is in /opt/hasup, but a checkout's venv (and its pyenv
    # interpreter) may be under a home directory, which ProtectHome hides, or under
    # /tmp, which PrivateTmp hides (CI clones anywhere).
    paths = {Path(hasup), Path(hasup).resolve(), Path(sys.executable).resolve()}
    relax = []
    if any(p.parts[1] in ("root", "home") for p in paths):
        relax.append("ProtectHome=no")
    if any(str(p).startswith(("/tmp/", "/var/tmp/")) for p in paths):
        relax.append("PrivateTmp=no")
    if relax:
        (dropin / "checkout.conf").write_text("[Service]\n" + "\n".join(relax) + "\n")
    instance.reload()


@pytest.fixture
def key_dir() -> Iterator[Path]:
    """A directory outside /tmp (the unit has PrivateTmp=yes), as /etc/hasup would be."""
    path = Path(tempfile.mkdtemp(prefix="hasup-witness-test-", dir="/var/lib"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_packaged_witness_unit_runs_sandboxed_and_votes(systemd_instance: SystemdInstance, key_dir: Path) -> None:
    instance = systemd_instance
    key = write_key_file(key_dir / "group.key")
    port = free_udp_port()
    _install(instance, f"--listen 127.0.0.1:{port} --group 51:{key} --max-lease 1s")
    try:
        started = instance.systemctl("start", UNIT)  # returns once READY=1 arrived
        console = (instance.dir / "log" / "console.log").read_text(errors="replace")[-3000:]
        assert started.returncode == 0, started.stderr + instance.systemctl("status", UNIT).stdout + console
        assert instance.systemctl("is-active", UNIT).stdout.strip() == "active"
        ring = KeyRing.from_group_keys({1: bytes.fromhex(key.read_text().strip())}, 1, label=WITNESS_LABEL)
        vote = WitnessVote(ring, 51, "edge-a", 1.0)
        seen: list[Vote] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            seq = iter(range(1, 1000))

            def granted() -> bool:
                sock.sendto(vote.request(5, next(seq), True, time.monotonic()), ("127.0.0.1", port))
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    return False
                rep = vote.reply(data, time.monotonic())
                assert not isinstance(rep, Drop), rep
                seen.append(rep.vote)
                return rep.vote is Vote.GRANTED

            wait_until(granted, timeout=10, what="a vote granted after the quiet second")
        assert seen[0] is Vote.QUIET  # it grants nothing in its first --max-lease
    finally:
        instance.systemctl("stop", UNIT)


def test_packaged_witness_unit_without_arguments_stays_stopped(systemd_instance: SystemdInstance) -> None:
    instance = systemd_instance
    _install(instance, None)
    try:
        assert instance.systemctl("start", UNIT).returncode != 0
        wait_until(
            lambda: instance.systemctl("is-active", UNIT).stdout.strip() in ("failed", "inactive"),
            timeout=10,
            what="the unit stopped",
        )
        shown = instance.systemctl("show", UNIT, "-p", "ExecMainStatus", "-p", "NRestarts").stdout
        assert "ExecMainStatus=2" in shown and "NRestarts=0" in shown, shown
    finally:
        instance.systemctl("reset-failed", UNIT)
