"""The Debian package, used as an operator would, on a fresh Debian 12 root file system.

``scripts/build-deb.sh`` builds the .deb; a fresh minbase root (``scripts/debian-rootfs.sh``,
mmdebstrap) gets it with ``apt-get install ./hasup_*.deb`` in a chroot (with /proc, /sys
and /dev mounted, as on a booted box). Then, as the README's operator path says:
``hasup --version``, ``hasup keygen``, ``hasup check`` on the packaged example and
``hasup demo``; the packaged ``hasup.service`` (unmodified, run with
``RootDirectory=`` pointing at that root by a drop-in) is started by the real systemd
fixture and must reach READY (``Type=notify``: active only after READY=1) and serve
``/status``; a bad config must stop it without restarts (``RestartPreventExitStatus=2``);
``apt-get purge`` must leave nothing but the operator's own key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests._support import missing_component
from tests.backends.systemd.conftest import (
    SystemdInstance,
    SystemdUnavailable,
    free_port,
    free_udp_port,
    systemd_booted,
)

pytestmark = [pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: what apt and dpkg themselves write: not the package's files
_BOOKKEEPING = ("var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/log/", "tmp/", "proc/", "sys/", "dev/", "run/")


def sh(*argv: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc  # type: ignore[no-any-return]


class Root:
    """A fresh Debian 12 root file system; commands run chrooted with /proc, /sys, /dev."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, command: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        p = self.path
        script = (
            f"mount -t proc proc {p}/proc && mount --rbind /sys {p}/sys && mount --rbind /dev {p}/dev && "
            f'exec chroot {p} /bin/sh -c "$0"'
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, command]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        if check:
            assert proc.returncode == 0, f"{command} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def files(self) -> set[str]:
        out = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = os.path.relpath(dirpath, self.path)
            for name in dirnames + filenames:
                path = name if rel == "." else f"{rel}/{name}"
                if not path.startswith(_BOOKKEEPING):
                    out.add(path)
        return out


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        missing_component("Debian packaging", "needs root (chroot, mounts)")
    for tool in ("dpkg-deb", "unshare", "chroot"):
        if shutil.which(tool) is None:
            missing_component("Debian packaging", f"{tool} not found")
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    proc = sh(str(REPO_ROOT / "scripts" / "build-deb.sh"), str(out), timeout=600)
    path = Path(proc.stdout.strip().splitlines()[-1])
    print(f"figure: build {time.monotonic() - started:.1f} s, package {path.stat().st_size / 1e6:.1f} MB ({path.name})")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Root:
    tarball = Path(sh(str(REPO_ROOT / "scripts" / "debian-rootfs.sh"), timeout=900).stdout.strip())
    path = tmp_path / "root"
    path.mkdir()
    sh("tar", "-xf", str(tarball), "-C", str(path))
    return Root(path)


def test_install_use_start_and_purge_like_an_operator(deb: Path, root: Root) -> None:
    before = root.files()
    shutil.copy(deb, root.path / "tmp" / deb.name)
    started = time.monotonic()
    root.run(f"apt-get install -y -q /tmp/{deb.name}")
    print(f"figure: apt-get install {time.monotonic() - started:.1f} s")
    installed = root.files() - before
    print(
        f"figure: installed {len(installed)} files, {sh('du', '-sh', str(root.path / 'opt/hasup')).stdout.split()[0]} in /opt/hasup"
    )
    for path in (
        "usr/bin/hasup",
        "opt/hasup/bin/python3",
        "usr/lib/systemd/system/hasup.service",  # /lib is /usr/lib (merged /usr)
        "etc/hasup/hasup.toml",
        "usr/share/doc/hasup/copyright",
    ):
        assert path in installed, path
    assert (root.path / "etc/hasup").stat().st_mode & 0o777 == 0o750

    version = root.run("hasup --version").stdout
    assert version.startswith("hasup "), version
    assert "exactly one copy" in root.run("hasup --help").stdout
    root.run("hasup keygen /etc/hasup/group.key")
    assert (root.path / "etc/hasup/group.key").stat().st_mode & 0o777 == 0o600
    checked = root.run("hasup check --offline")  # -c defaults to /etc/hasup/hasup.toml
    assert json.loads(checked.stdout)["node"]["name"] == "edge-a"
    demo = root.run("hasup demo", timeout=120)
    assert "never two active" in demo.stdout and "yes" in demo.stdout.split("never two active", 1)[1].split("\n", 1)[0]

    with_systemd(root)

    root.run("apt-get purge -y -q hasup")
    left = root.files() - before
    assert left == {"etc/hasup", "etc/hasup/group.key"}, sorted(left)[:20]


def with_systemd(root: Root) -> None:
    """The packaged unit under the real systemd fixture, chrooted into the new root."""
    try:
        ctx = systemd_booted(prefix="hasup-deb-")
        instance = ctx.__enter__()
    except SystemdUnavailable as exc:
        missing_component("systemd", str(exc))
    try:
        _start_packaged_unit(root, instance)
    finally:
        ctx.__exit__(None, None, None)


def _start_packaged_unit(root: Root, instance: SystemdInstance) -> None:
    status_port, http_port = free_port(), free_port()
    config = root.path / "etc/hasup/hasup.toml"
    config.write_text(
        f"""
[node]
name = "edge-a"
priority = 100
state_dir = "/var/lib/hasup"
[group]
id = 51
listen = "127.0.0.1:{free_udp_port()}"
peers = ["127.0.0.1:{free_udp_port()}"]
key_file = "/etc/hasup/group.key"
advert_interval = "100ms"
[service]
backend = "command"
run = ["/usr/bin/python3", "-m", "http.server", "{http_port}", "--bind", "127.0.0.1", "--directory", "/usr/share/doc/hasup"]
ready_tcp = "127.0.0.1:{http_port}"
[status]
listen = "127.0.0.1:{status_port}"
"""
    )
    units = instance.dir / "units"
    shutil.copy(root.path / "lib/systemd/system/hasup.service", units / "hasup.service")
    dropin = units / "hasup.service.d"
    dropin.mkdir()
    (dropin / "root.conf").write_text(f"[Service]\nRootDirectory={root.path}\nBindReadOnlyPaths=/run/systemd/notify\n")
    instance.reload()
    started = time.monotonic()
    start = instance.systemctl("start", "hasup.service")  # returns once READY=1 arrived (Type=notify)
    assert start.returncode == 0, (
        start.stderr
        + instance.systemctl("status", "hasup.service").stdout
        + (instance.dir / "log/console.log").read_text()[-3000:]
    )
    print(f"figure: systemctl start hasup (to READY) {time.monotonic() - started:.2f} s")
    assert instance.systemctl("is-active", "hasup.service").stdout.strip() == "active"
    deadline = time.monotonic() + 20
    doc: dict[str, object] = {}
    while doc.get("state") != "MASTER" or doc.get("service") != "running":
        assert time.monotonic() < deadline, f"not MASTER and running: {doc}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=1) as r:
                doc = json.load(r)
        except OSError:
            time.sleep(0.05)
    assert instance.systemctl("is-enabled", "hasup.service").stdout.strip() == "disabled"

    # a broken config: exit 2, and systemd does not restart it (RestartPreventExitStatus=2)
    config.write_text(config.read_text().replace("[status]", "[status]\nbogus = 1"))
    assert instance.systemctl("restart", "hasup.service").returncode != 0
    deadline = time.monotonic() + 10
    while instance.systemctl("is-active", "hasup.service").stdout.strip() not in ("failed", "inactive"):
        assert time.monotonic() < deadline, "hasup.service kept restarting with a bad config"
        time.sleep(0.05)
    show = instance.systemctl("show", "hasup.service", "-p", "NRestarts", "-p", "ExecMainStatus").stdout
    assert "ExecMainStatus=2" in show and "NRestarts=0" in show, show
