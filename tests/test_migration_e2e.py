"""End to end: the NeuronEX keepalived recipe, migrated to hasup by following the docs.

What a user does, in order (docs/migrating-from-keepalived.md, docs/cli.md,
docs/operations.md), with the seed's two keepalived.conf files and their scripts
(verbatim, from tests/test_keepalived_import.py):

1. ``hasup import-keepalived keepalived.conf -o hasup.toml`` on each node, then only
   the edits the guide asks for: ``hasup keygen`` once, the key copied to the other
   node and its path in ``key_file``; ``[node] name`` uncommented (both "nodes" here
   share one host name); ``state_dir`` per node (two nodes on one machine). Then
   ``hasup check``: offline first, then against the node's systemd.
2. Two network namespaces with the recipe's addresses (10.0.0.127 master,
   10.0.0.223 backup) on a veth pair named eth0, a real systemd in each with a
   ``neuronex.service`` stand-in (an HTTP server on 8085, Restart=no, not enabled).
   NeuronEX runs on the master, as keepalived left it; ``hasup run`` on each node.
3. hasup adopts the running NeuronEX on the master (same process, no blip); ``hasup
   status`` shows the group; kill -9 of the master's NeuronEX fails over to the backup
   (seen in ``/metrics`` and ``hasup status``); the master takes the service back after
   its fault hold-down (failback); ``hasup switchover`` moves it to the backup; ``hasup
   maintenance off`` lets it fail back.
   Both services are sampled every 10 ms throughout: never two at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import missing_component, wait_until
from tests.migration_support import REPO_ROOT, NodeNet, Sampler, SystemdInNs, netns_unavailable
from tests.test_keepalived_import import (
    BACKUP_CONF,
    BACKUP_MASTER_SH,
    BACKUP_SH,
    CHECK_ALIVE_SH,
    FAULT_SH,
    MASTER_CONF,
    MASTER_SH,
)

pytestmark = [pytest.mark.netns, pytest.mark.systemd]

ADDRS = {"master": "10.0.0.127", "backup": "10.0.0.223"}
NAMES = {"master": "neuronex-master", "backup": "neuronex-backup"}
SEED_FILES = {
    "master": {
        "keepalived.conf": MASTER_CONF,
        "master.sh": MASTER_SH,
        "fault.sh": FAULT_SH,
        "check_alive.sh": CHECK_ALIVE_SH,
    },
    "backup": {"keepalived.conf": BACKUP_CONF, "master.sh": BACKUP_MASTER_SH, "backup.sh": BACKUP_SH},
}
PORT = 8085
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
STATUS_URL = "http://127.0.0.1:9105"  # the default [status] listen, inside each namespace


def hasup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hasup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )


# --------------------------------------------------------------------------- step 1: convert
def convert_pair(tmp: Path) -> dict[str, Path]:
    """The seed's files on each "node", converted and edited as the guide says."""
    configs: dict[str, Path] = {}
    for role, files in SEED_FILES.items():
        # a copy of the node's /etc/keepalived: the importer finds the scripts next to it
        etc = tmp / role / "etc" / "keepalived"
        etc.mkdir(parents=True)
        for name, text in files.items():
            (etc / name).write_text(text)
            if name.endswith(".sh"):
                (etc / name).chmod(0o755)
        out = tmp / role / "etc" / "hasup" / "hasup.toml"
        out.parent.mkdir(parents=True)
        proc = hasup("import-keepalived", str(etc / "keepalived.conf"), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "trap: " in proc.stderr, proc.stderr
        assert "warning: " in proc.stderr, proc.stderr
        assert out.exists()
        configs[role] = out

    # `hasup keygen /etc/hasup/group.key  # once, on one node; copy the file to the other (mode 0600)`
    key = tmp / "master" / "etc" / "hasup" / "group.key"
    proc = hasup("keygen", str(key))
    assert proc.returncode == 0, proc.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    shutil.copy2(key, tmp / "backup" / "etc" / "hasup" / "group.key")

    for role, path in configs.items():
        text = path.read_text()
        generated = text
        own_key = path.parent / "group.key"
        # key_file: the generated line names /etc/hasup/group.key; this node's copy is elsewhere
        text, n = re.subn(r'^key_file = "/etc/hasup/group.key"$', f'key_file = "{own_key}"', text, flags=re.MULTILINE)
        assert n == 1, generated
        # "Set [node] name if the host names are not what you want": both namespaces share
        # this machine's host name, so uncomment the generated name line
        text, n = re.subn(r'^# name = "[^"]*"', f'name = "{NAMES[role]}"', text, flags=re.MULTILINE)
        assert n == 1, generated
        # two nodes on one machine: one state directory each (default /var/lib/hasup)
        state_dir = tmp / role / "var" / "lib" / "hasup"
        text, n = re.subn(r"^\[node\]$", f'[node]\nstate_dir = "{state_dir}"', text, flags=re.MULTILINE)
        assert n == 1, generated
        path.write_text(text)
        proc = hasup("check", "-c", str(path), "--offline")
        assert proc.returncode == 0, f"{role}: {proc.stdout}\n{proc.stderr}"
    return configs


# --------------------------------------------------------------------------- helpers
def neuronex_unit(www: Path) -> str:
    # Restart=no and not enabled: only hasup starts it (`systemctl disable neuronex` in the guide)
    return (
        "[Unit]\nDescription=stand-in for NeuronEX\n"
        f"[Service]\nType=simple\nWorkingDirectory={www}\n"
        f"ExecStart=/usr/bin/python3 -m http.server {PORT}\nRestart=no\n"
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in a Prometheus text exposition (label order free)."""
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, flags=re.MULTILINE):
        if dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return None


@contextlib.contextmanager
def node_processes() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        # SIGTERM = resign (stops the unit); then make sure
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def dump(logs: dict[str, Path], systemds: dict[str, SystemdInNs]) -> None:
    for role, log in logs.items():
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
            print(f"----- hasup on {role} (last 60 lines of {log})")
            print("\n".join(lines[-60:]))
    for role, sd in systemds.items():
        print(f"----- systemd console of {role}")
        print(sd.console_tail())


# --------------------------------------------------------------------------- the test
def test_seed_pair_migrates_fails_over_and_switches_over(tmp_path: Path) -> None:
    why = netns_unavailable()
    if why is not None:
        missing_component("network namespaces", why)
    t_begin = time.monotonic()

    configs = convert_pair(tmp_path)

    net = NodeNet(ADDRS)
    systemds: dict[str, SystemdInNs] = {}
    logs: dict[str, Path] = {}
    sampler = Sampler(net, PORT)
    ok = False
    try:
        envs: dict[str, dict[str, str]] = {}
        for role in ADDRS:
            sd_dir = tmp_path / role / "systemd"
            (sd_dir / "units").mkdir(parents=True)
            www = tmp_path / role / "opt" / "neuronex"
            www.mkdir(parents=True)
            (www / "index.html").write_text(f"neuronex on {NAMES[role]}\n")
            (sd_dir / "units" / "neuronex.service").write_text(neuronex_unit(www))
            sd = SystemdInNs(net.ns[role], sd_dir)
            systemds[role] = sd
            sd.start()
            envs[role] = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": sd.bus, "PYTHONUNBUFFERED": "1"}
            # `hasup check -c` with the backend: the unit exists, Restart=no, not enabled
            proc = net.run(role, [sys.executable, "-m", "hasup", "check", "-c", str(configs[role])], env=envs[role])
            assert proc.returncode == 0, f"{role}: {proc.stdout}\n{proc.stderr}"

        sampler.start()
        # the recipe's state at migration time: keepalived is gone (`systemctl disable --now
        # keepalived`) and left NeuronEX running on the master; the backup's is stopped
        proc = subprocess.run(
            ["busctl", "--system", "call", *MANAGER, "StartUnit", "ss", "neuronex.service", "replace"],
            env=envs["master"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: sampler.serving() == {"master"}, timeout=10, what="the master's neuronex (pre-hasup)")
        t_hasup = sampler.mark("hasup started")
        pids_before = systemds["master"].host_pids("neuronex.service")
        with node_processes() as procs:
            for role in ("backup", "master"):
                logs[role] = tmp_path / f"hasup-{role}.log"
                with open(logs[role], "wb") as log:
                    procs[role] = subprocess.Popen(
                        net.exec_argv(role, [sys.executable, "-m", "hasup", "run", "-c", str(configs[role])]),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=envs[role],
                        cwd=REPO_ROOT,
                        start_new_session=True,
                    )

            def status(role: str) -> str:
                proc = net.run(role, [sys.executable, "-m", "hasup", "status", "-c", str(configs[role])])
                return proc.stdout if proc.returncode in (0, 3, 4) else ""  # answered (3 FAULT, 4 alarm)

            def running() -> bool:
                for role, proc in procs.items():
                    assert proc.poll() is None, f"hasup on {role} exited with {proc.returncode}"
                return True

            def serving(roles: set[str]) -> bool:
                running()
                return sampler.serving() == roles

            # ---- the master (priority 100) serves on 10.0.0.127:8085; the backup does not
            wait_until(
                lambda: (
                    running() and re.search(rf"^{NAMES['master']}: MASTER .*service running", status("master"), re.M)
                ),
                timeout=20,
                what="the master MASTER",
            )
            assert serving({"master"})
            # hasup adopted the NeuronEX that keepalived left running: same process, no blip
            assert systemds["master"].host_pids("neuronex.service") == pids_before
            assert sampler.timeline().service_flaps("master", t_hasup) == 0
            code, body = net.http_get("backup", f"http://{ADDRS['master']}:{PORT}/")
            assert code == 200, body
            assert NAMES["master"] in body, body
            wait_until(
                lambda: (
                    re.search(rf"^{NAMES['master']}: MASTER .*service running", status("master"), re.M)
                    and re.search(rf"peer {NAMES['backup']} at {ADDRS['backup']}:5405: BACKUP, live", status("master"))
                ),
                timeout=10,
                what="hasup status on the master showing both nodes",
            )
            backup_view = status("backup")
            assert re.search(rf"^{NAMES['backup']}: BACKUP ", backup_view, re.M), backup_view
            assert re.search(rf"peer {NAMES['master']} at {ADDRS['master']}:5405: MASTER ACTIVE, live", backup_view), (
                backup_view
            )

            # ---- failover: kill -9 the master's NeuronEX
            pids = systemds["master"].host_pids("neuronex.service")
            assert pids, "neuronex.service has no process on the master"
            t_kill = sampler.mark("kill -9 master neuronex")
            os.kill(pids[0], signal.SIGKILL)
            wait_until(lambda: serving({"backup"}), timeout=8, what="the backup's neuronex serving alone")
            t_taken = time.monotonic()
            first = sampler.timeline().first_up(t_kill, ["backup"])
            assert first is not None
            print(f"failover: backup served {first[0] - t_kill:.3f} s after the kill")
            assert first[0] - t_kill < 5.0

            # the master sits in FAULT for its fault hold-down (5 s): look there first
            master_view = status("master")
            print(master_view.rstrip())
            assert re.search(rf"^{NAMES['master']}: FAULT ", master_view, re.M), master_view
            code, metrics = net.http_get("master", f"{STATUS_URL}/metrics")
            assert code == 200, metrics
            master = NAMES["master"]
            assert metric(metrics, "hasup_state", node=master, state="FAULT") == 1.0, metrics
            assert metric(metrics, "hasup_state", node=master, state="MASTER") == 0.0, metrics

            code, metrics = net.http_get("backup", f"{STATUS_URL}/metrics")
            assert code == 200, metrics
            backup = NAMES["backup"]
            assert metric(metrics, "hasup_state", node=backup, state="MASTER") == 1.0, metrics
            assert (metric(metrics, "hasup_failover_seconds_count", node=backup) or 0) >= 1, metrics
            assert metric(metrics, "hasup_transitions_total", node=backup, from_state="CLAIMING", to_state="MASTER")
            backup_view = status("backup")
            print(backup_view.rstrip())
            # MASTER with its service; on a loaded machine the checks above can outlast the
            # master's 5 s fault hold-down, and then the failback has already begun.
            assert re.search(
                rf"^{NAMES['backup']}: (MASTER .*service running|RELEASING .*failback: {NAMES['master']})",
                backup_view,
                re.M,
            ), backup_view
            # FAULT until its hold-down ends, BACKUP just before it takes the service back
            peer = rf"peer {NAMES['master']} at {ADDRS['master']}:5405: (FAULT|BACKUP), live"
            assert re.search(peer, backup_view), backup_view

            # ---- failback: after the fault hold-down (5 s) the master takes it back
            wait_until(lambda: serving({"master"}), timeout=20, what="failback to the master")
            t_back = time.monotonic()
            print(f"failback: master served again {t_back - t_taken:.3f} s after the failover")
            wait_until(
                lambda: (
                    re.search(rf"^{NAMES['master']}: MASTER ", status("master"), re.M)
                    and re.search(rf"^{NAMES['backup']}: BACKUP .*service stopped", status("backup"), re.M)
                ),
                timeout=10,
                what="both nodes settled after failback",
            )

            # ---- switchover on the master: `hasup switchover -c`
            t_switch = sampler.mark("switchover")
            proc = net.run("master", [sys.executable, "-m", "hasup", "switchover", "-c", str(configs["master"])])
            assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
            assert f"switched over to {NAMES['backup']}" in proc.stdout, proc.stdout
            assert "no overlap" in proc.stdout, proc.stdout
            print(proc.stdout.strip())
            wait_until(lambda: serving({"backup"}), timeout=10, what="the backup serving after the switchover")
            # the master is in maintenance now (lower-priority target, preempt = true) and stays out
            master_view = status("master")
            assert re.search(rf"^{NAMES['master']}: BACKUP ", master_view, re.M), master_view

            # ---- `hasup maintenance off` on the master: failback through the handshake
            t_off = sampler.mark("maintenance off")
            proc = net.run(
                "master", [sys.executable, "-m", "hasup", "maintenance", "off", "-c", str(configs["master"])]
            )
            assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
            wait_until(lambda: serving({"master"}), timeout=15, what="failback after maintenance off")
            t_end = sampler.mark("end")
            wait_until(lambda: sampler.latest() > t_end + 0.05, timeout=5, what="samples past the end")

            # ---- never two copies at once, over the whole run (10 ms samples)
            timeline = sampler.timeline()
            assert timeline.dual_active() == [], timeline.dual_active()
            for label, t0, t1 in (
                ("failover", t_kill, t_taken),
                ("failback", t_taken, t_back),
                ("switchover", t_switch, t_off),
                ("failback after maintenance off", t_off, t_end),
            ):
                gaps = timeline.no_service(t0, t1)
                print(f"{label}: no service for {sum(g.length for g in gaps):.3f} s")
            # each move happened: the backup served between the kill and failback and after the switchover
            assert timeline.intervals("backup", t_kill, t_back)
            assert timeline.intervals("backup", t_switch, t_off)
            running()
        ok = True
    finally:
        sampler.stop()
        if not ok:
            dump(logs, systemds)
        for sd in systemds.values():
            sd.stop()
        net.close()
    print(f"run time {time.monotonic() - t_begin:.1f} s")
