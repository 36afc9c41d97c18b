"""keepalived configured exactly as the NeuronEX master/backup recipe, in testbed namespaces.

Variants:

* ``recipe``: the document as written: master priority 100, ``state MASTER``, a
  ``vrrp_script`` running ``curl 127.0.0.1:8085`` (no ``-f``) every 5 s with ``fall 3``,
  ``notify_master`` start / ``notify_fault`` stop; backup priority 90, ``state BACKUP``,
  ``nopreempt``, ``notify_master`` start / ``notify_backup`` stop; unicast peers, PASS
  auth, ``advert_int 1``, VRRPv2, the unused VIP.
* ``tuned``: the same with ``vrrp_version 3`` and ``advert_int 0.1`` (VRRPv3 has no
  authentication, so that block is left out).

The service stands in for NeuronEX: ``python3 -m http.server 8085 --protocol HTTP/1.1``, started and stopped
by the notify scripts through a pid file (``systemctl start/stop`` in the recipe). Each
notify script also appends ``$EPOCHREALTIME <event>`` to ``notify.log`` (a bash builtin:
no extra fork, so it does not change what the script does or when).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .testbed import Node, Testbed

__all__ = ["KeepalivedPair", "ensure_keepalived", "keepalived_unavailable"]

SERVICE_PORT = 8085
VIP = "192.160.127.254/17"

_CONF = """! Configuration File for keepalived
global_defs {{
   vrrp_skip_check_adv_addr
   #vrrp_strict
   vrrp_garp_interval 0
   vrrp_gna_interval 0
{global_extra}}}
{script_block}
vrrp_instance VI_1 {{
    state {state}
{nopreempt}    interface {dev}
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
{auth}    virtual_ipaddress {{
        {vip}
    }}
    unicast_peer {{
        {peer}
    }}
{track}{notify}}}
"""

_SCRIPT_BLOCK = """
vrrp_script check_ex_alived {{
        script "{dir}/check_alive.sh"
        interval 5
        fall 3
}}
"""

_AUTH = """    authentication {
        auth_type PASS
        auth_pass abcdefgh
    }
"""

_TRACK = """    track_script {
        check_ex_alived
    }
"""

_CHECK = """#!/bin/bash

if ! curl 127.0.0.1:8085  >/dev/null 2>&1; then echo "neuronex start failed"; exit 1; fi
"""

# "systemctl start neuronex": idempotent, returns once the process is spawned
_SVC_START = """#!/bin/bash
# stand-in for `systemctl start neuronex`
cd {dir}
if [ -f svc.pid ] && kill -0 "$(cat svc.pid)" 2>/dev/null; then exit 0; fi
setsid {python} -m http.server {port} --protocol HTTP/1.1 --bind 0.0.0.0 --directory {dir}/www >>svc.log 2>&1 </dev/null &
echo $! > svc.pid
"""

# "systemctl stop neuronex": SIGTERM, wait up to 5 s, then SIGKILL
_SVC_STOP = """#!/bin/bash
# stand-in for `systemctl stop neuronex`
cd {dir}
[ -f svc.pid ] || exit 0
pid=$(cat svc.pid)
kill "$pid" 2>/dev/null
for _ in $(seq 1 500); do kill -0 "$pid" 2>/dev/null || break; sleep 0.01; done
kill -9 "$pid" 2>/dev/null
rm -f svc.pid
"""

_NOTIFY = """#!/bin/bash
echo "$EPOCHREALTIME {event}" >> {dir}/notify.log
{action}
"""


def keepalived_unavailable() -> str | None:
    if shutil.which("keepalived") is None and not Path("/usr/sbin/keepalived").exists():
        return "keepalived not installed (apt-get install keepalived)"
    if shutil.which("curl") is None:
        return "curl not installed (apt-get install curl)"
    return None


def ensure_keepalived() -> None:
    """Install the Debian package if it is missing (root only)."""
    if keepalived_unavailable() is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "keepalived", "curl"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )


@dataclass
class _Role:
    node: Node
    peer: Node
    dir: Path
    master: bool


class KeepalivedPair:
    """The recipe's pair on ``bed[0]`` (master, priority 100) and ``bed[1]`` (backup, 90)."""

    kind = "keepalived"

    def __init__(self, bed: Testbed, variant: str = "recipe", *, python: str = sys.executable) -> None:
        if variant not in ("recipe", "tuned"):
            raise ValueError(variant)
        self.bed = bed
        self.variant = variant
        self.python = shutil.which(python) or python
        self.master, self.backup = bed.nodes[0], bed.nodes[1]
        self.roles = {
            self.master.name: _Role(self.master, self.backup, bed.workdir / f"ka-{variant}-{self.master.name}", True),
            self.backup.name: _Role(self.backup, self.master, bed.workdir / f"ka-{variant}-{self.backup.name}", False),
        }
        for role in self.roles.values():
            self._write(role)

    @property
    def label(self) -> str:
        return f"keepalived {self.variant}"

    def _write(self, role: _Role) -> None:
        d = role.dir
        (d / "www").mkdir(parents=True, exist_ok=True)
        (d / "www" / "index.html").write_text(f"{role.node.name}\n")
        tuned = self.variant == "tuned"
        if role.master:
            notify = f'    notify_fault "{d}/fault.sh"\n    notify_master "{d}/master.sh"\n'
        else:
            notify = f'    notify_master "{d}/master.sh"\n    notify_backup "{d}/backup.sh"\n'
        conf = _CONF.format(
            global_extra="   vrrp_version 3\n" if tuned else "",
            script_block=_SCRIPT_BLOCK.format(dir=d) if role.master else "",
            state="MASTER" if role.master else "BACKUP",
            nopreempt="" if role.master else "    nopreempt\n",
            dev=role.node.dev,
            priority=100 if role.master else 90,
            advert="0.1" if tuned else "1",
            auth="" if tuned else _AUTH,
            vip=VIP,
            peer=role.peer.addr,
            track=_TRACK if role.master else "",
            notify=notify,
        )
        files = {
            "keepalived.conf": conf,
            "check_alive.sh": _CHECK,
            "svc-start.sh": _SVC_START.format(dir=d, python=self.python, port=SERVICE_PORT),
            "svc-stop.sh": _SVC_STOP.format(dir=d),
            "master.sh": _NOTIFY.format(dir=d, event="MASTER", action=f"{d}/svc-start.sh"),
            "fault.sh": _NOTIFY.format(dir=d, event="FAULT", action=f"{d}/svc-stop.sh"),
            "backup.sh": _NOTIFY.format(dir=d, event="BACKUP", action=f"{d}/svc-stop.sh"),
        }
        for name, text in files.items():
            path = d / name
            path.write_text(text)
            path.chmod(0o755 if name.endswith(".sh") else 0o644)

    # -- lifecycle -----------------------------------------------------------------------
    def start_service(self, node: Node) -> None:
        """What ``systemctl start neuronex`` (or a boot with the unit enabled) does."""
        node.run([str(self.roles[node.name].dir / "svc-start.sh")])

    def stop_service(self, node: Node) -> None:
        node.run([str(self.roles[node.name].dir / "svc-stop.sh")])

    def start_supervisor(self, node: Node) -> None:
        d = self.roles[node.name].dir
        for f in ("keepalived.pid", "vrrp.pid"):
            with contextlib.suppress(FileNotFoundError):
                (d / f).unlink()
        node.spawn(
            "keepalived",
            [
                shutil.which("keepalived") or "/usr/sbin/keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "--use-file",
                str(d / "keepalived.conf"),
                "--pid",
                str(d / "keepalived.pid"),
                "--vrrp_pid",
                str(d / "vrrp.pid"),
            ],
        )

    def boot(self, node: Node) -> None:
        """Boot a node as the recipe leaves it: service enabled on the master, then keepalived.

        keepalived is started once the service listens: were its first check to fail,
        keepalived 2.2.7 would enter FAULT at once and stop the service for good (the
        recipe's coldstart deadlock, see keepalived-results.md), not what a boot with an
        enabled unit and a later-starting keepalived looks like.
        """
        if self.roles[node.name].master:
            self.start_service(node)
            deadline = time.monotonic() + 10
            while not node.listening_pids(SERVICE_PORT):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name}: stand-in service did not start")
                time.sleep(0.01)
        self.start_supervisor(node)

    def start(self) -> None:
        """Initial state of the recipe: master serving and MASTER, backup BACKUP and stopped."""
        self.boot(self.master)
        self.boot(self.backup)

    def stop(self) -> None:
        """Stop everything of this pair (keepalived first, then services)."""
        for node in (self.master, self.backup):
            self.kill_supervisor(node)
            self.kill_service(node)
            node.run(["ip", "addr", "del", VIP, "dev", node.dev], check=False)
            self._wait_gone(node)

    def _wait_gone(self, node: Node, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.supervisor_pids(node) and not node.listening_pids(SERVICE_PORT):
                return
            time.sleep(0.02)

    # -- introspection -------------------------------------------------------------------
    def supervisor_pids(self, node: Node) -> list[int]:
        """keepalived's parent and its VRRP child in this node (live ones)."""
        d = self.roles[node.name].dir
        pids: list[int] = []
        for f in ("vrrp.pid", "keepalived.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((d / f).read_text().strip()))
        proc = node.procs.get("keepalived")
        if proc is not None and proc.alive():
            pids.append(proc.pid)
        return [p for p in dict.fromkeys(pids) if _alive(p)]

    def states(self) -> dict[str, str | None]:
        """Each node's state as its notify scripts last logged it (MASTER/BACKUP/FAULT)."""
        return {
            name: (log[-1][1] if (log := self.notify_log(role.node)) else None) for name, role in self.roles.items()
        }

    def steady(self) -> bool:
        """The recipe's initial state: master in MASTER, backup in BACKUP (serving is the observer's job)."""
        return self.states() == {self.master.name: "MASTER", self.backup.name: "BACKUP"}

    def diagnostics(self, lines: int = 15) -> str:
        """Notify logs and the tail of each keepalived log, for failure messages."""
        out = []
        for name, role in self.roles.items():
            out.append(f"--- {name} notify: {self.notify_log(role.node)}")
            proc = role.node.procs.get("keepalived")
            if proc is not None:
                with contextlib.suppress(OSError):
                    out.extend(proc.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def service_pids(self, node: Node) -> list[int]:
        return node.listening_pids(SERVICE_PORT)

    def notify_log(self, node: Node) -> list[tuple[float, str]]:
        path = self.roles[node.name].dir / "notify.log"
        out = []
        offset = time.time() - time.monotonic()  # realtime -> CLOCK_MONOTONIC
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    out.append((float(parts[0]) - offset, parts[1]))
        return out

    # -- faults ---------------------------------------------------------------------------
    def kill_supervisor(self, node: Node) -> None:
        """kill -9 of keepalived's parent and VRRP child (frozen first, so neither reacts)."""
        _freeze_then_kill(self.supervisor_pids(node)[::-1])
        with contextlib.suppress(Exception):
            node.wait_exit("keepalived", 5)

    def kill_service(self, node: Node, *, before: Callable[[], object] | None = None) -> list[int]:
        pids = node.kill_port(SERVICE_PORT, before=before)
        with contextlib.suppress(FileNotFoundError):
            (self.roles[node.name].dir / "svc.pid").unlink()
        return pids

    def kill_node(self, node: Node, *, before: Callable[[], object] | None = None) -> None:
        """Node loss: kill -9 of keepalived and of the service; the VIP goes with the box."""
        pids = self.supervisor_pids(node)[::-1] + self.service_pids(node)  # parent first
        if before is not None:
            before()  # after the look-ups, right before the signals
        _freeze_then_kill(pids)
        node.run(["ip", "addr", "del", VIP, "dev", node.dev], check=False)
        with contextlib.suppress(FileNotFoundError):
            (self.roles[node.name].dir / "svc.pid").unlink()
        with contextlib.suppress(Exception):
            node.wait_exit("keepalived", 5)

    def idle_pids(self, node: Node) -> list[int]:
        return self.supervisor_pids(node)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _freeze_then_kill(pids: list[int]) -> None:
    """SIGSTOP every process first, then SIGKILL: none can react to another's death.

    (keepalived's parent would respawn a killed VRRP child; a VRRP child outliving its
    parent sends a priority-0 advert; hasup would notice its service die.)
    """
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
