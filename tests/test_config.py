"""Every configuration mistake is one clear line: file, key path, line; exit status 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hasup import ConfigError
from hasup.backends import BACKENDS
from hasup.config import load_config, parse_config
from tests._support import missing_component

GOOD = textwrap.dedent(
    """
    [node]
    name = "edge-a"
    priority = 100
    state_dir = "/tmp/hasup-test-state"

    [group]
    id = 51
    listen = "127.0.0.1:5405"
    peers = ["127.0.0.2:5405"]
    advert_interval = "1s"
    key_file = "KEYFILE"

    [service]
    backend = "command"
    start = ["systemctl", "start", "neuronex"]
    stop = ["systemctl", "stop", "neuronex"]
    status = ["systemctl", "is-active", "--quiet", "neuronex"]

    [[probe]]
    name = "dashboard"
    type = "http"
    url = "http://127.0.0.1:8085/"
    expect_status = "200-399"
    interval = "5s"
    timeout = "2s"
    fall = 3
    rise = 2
    start_period = "30s"
    when = "active"

    [status]
    listen = "127.0.0.1:9105"
    """
)


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "group.key"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str, keyfile: Path) -> Path:
    path = tmp_path / "hasup.toml"
    path.write_text(text.replace("KEYFILE", str(keyfile)))
    return path


def test_the_documented_example_is_valid(tmp_path: Path, keyfile: Path) -> None:
    config = load_config(write(tmp_path, GOOD, keyfile))
    core = config.core_config()
    assert core.priority == 100 and core.advert_interval == 1.0
    assert core.keys.keyed
    assert config.probes[0].options.start_period == 30.0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('priority = 100', 'priority = 100\nprority = 5', "node.prority: unknown key (line 5)"),
        ('priority = 100', 'priority = "high"', "node.priority: expected an integer, got a string (line 4)"),
        ('priority = 100', 'priority = 300', "node.priority: must be between 1 and 254, got 300 (line 4)"),
        ('advert_interval = "1s"', 'advert_interval = "1 sec"', "group.advert_interval: '1 sec' is not a duration"),
        ('advert_interval = "1s"', 'advert_interval = 1', 'group.advert_interval: expected a duration string'),
        ('peers = ["127.0.0.2:5405"]', 'peers = ["127.0.0.2:5405", "127.0.0.2:5405"]', "group.peers: duplicate peer"),
        ('peers = ["127.0.0.2:5405"]', 'peers = ["127.0.0.2:99999"]', "group.peers:"),
        (
            'start = ["systemctl", "start", "neuronex"]',
            'start = "systemctl start neuronex"',
            "service.start: commands are argv lists, not shell strings",
        ),
        ('backend = "command"', 'backend = "kubernetes"', "service.backend: unknown backend 'kubernetes'"),
        ('when = "active"', 'when = "sometimes"', "probe[0].when: must be one of"),
        ('when = "active"', 'when = "active"\nweight = -10', 'probe[0].weight: is allowed only on probes with when = "always"'),
        ('type = "http"', 'type = "ftp"', "probe[0].type: unknown probe type 'ftp'"),
        ('listen = "127.0.0.1:9105"', 'listen = "0.0.0.0:9105"', "status.listen: 0.0.0.0:9105 is not a loopback address"),
        ("[status]", "[status\n", "invalid TOML"),
    ],
)
def test_mistakes_are_located(tmp_path: Path, keyfile: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1), keyfile)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_world_readable_key_file_is_refused(tmp_path: Path, keyfile: Path) -> None:
    keyfile.chmod(0o644)
    with pytest.raises(ConfigError, match=r"group.key_file: key file .* is readable by group or others \(mode 0644\)"):
        load_config(write(tmp_path, GOOD, keyfile))


def test_missing_key_file(tmp_path: Path, keyfile: Path) -> None:
    with pytest.raises(ConfigError, match="group.key_file: cannot read key file"):
        load_config(write(tmp_path, GOOD, tmp_path / "nope.key"))


def test_no_key_needs_explicit_insecure(tmp_path: Path, keyfile: Path) -> None:
    text = GOOD.replace('key_file = "KEYFILE"', "")
    with pytest.raises(ConfigError, match="group.key_file: is required"):
        parse_config(text)
    config = parse_config(text.replace("[group]", "[group]\ninsecure = true"))
    assert not config.core_config().keys.keyed
    assert any("NOT authenticated" in w for w in config.warnings)


def test_inline_key_is_accepted_with_a_warning(keyfile: Path) -> None:
    config = parse_config(GOOD.replace('key_file = "KEYFILE"', 'key = "a-long-enough-shared-secret"'))
    assert any("inline" in w for w in config.warnings)


def test_missing_backend_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, keyfile: Path) -> None:
    monkeypatch.setitem(BACKENDS, "docker", ("hasup_missing_module_for_test", "X", "docker"))
    text = GOOD.replace('backend = "command"', 'backend = "docker"\ncontainer = "neuronex"')
    with pytest.raises(ConfigError, match=r"pip install 'hasup\[docker\]'"):
        parse_config(text.replace("KEYFILE", str(keyfile)))


def test_check_command_exit_status_and_no_traceback(tmp_path: Path, keyfile: Path) -> None:
    bad = write(tmp_path, GOOD.replace("priority = 100", "priority = 0"), keyfile)
    proc = subprocess.run(
        [sys.executable, "-m", "hasup", "check", "-c", str(bad), "--offline"],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"hasup: {bad}: node.priority: must be between 1 and 254, got 0 (line 4)"
    good = write(tmp_path, GOOD, keyfile)
    proc = subprocess.run(
        [sys.executable, "-m", "hasup", "check", "-c", str(good), "--offline"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"master_down_interval_at_own_priority": 3.6094' in proc.stdout


def test_keygen_writes_an_owner_only_key(tmp_path: Path) -> None:
    target = tmp_path / "k"
    proc = subprocess.run([sys.executable, "-m", "hasup", "keygen", str(target)], capture_output=True, text=True)
    assert proc.returncode == 0
    assert (target.stat().st_mode & 0o777) == 0o600
    assert len(bytes.fromhex(target.read_text().strip())) == 32
    again = subprocess.run([sys.executable, "-m", "hasup", "keygen", str(target)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr


# --------------------------------------------------------------------------- [[vip]]
VIP = '\n[[vip]]\naddress = "10.0.0.100/24"\ndevice = "eth0"\n'


def test_vip_tables_parse_with_keepalived_announcement_defaults(keyfile: Path) -> None:
    text = GOOD.replace("KEYFILE", str(keyfile)) + VIP + '\n[[vip]]\naddress = "fd00::100"\ndevice = "eth0"\n'
    config = parse_config(text, "hasup.toml")
    first, second = config.vips
    assert str(first.interface) == "10.0.0.100/24" and first.device == "eth0" and first.label is None
    assert (first.garp_repeat, first.garp_interval, first.garp_delay) == (5, 0.0, 5.0)
    assert str(second.interface) == "fd00::100/128"  # no prefix: a host address, as keepalived does
    assert config.core_config().vips


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('address = "10.0.0.300/24"\ndevice = "eth0"', "vip[0].address: '10.0.0.300/24' is not an IP address"),
        ('address = "10.0.0.1/33"\ndevice = "eth0"', "vip[0].address: '10.0.0.1/33' is not an IP address"),
        ('address = "127.0.0.2/8"\ndevice = "eth0"', "vip[0].address: 127.0.0.2 cannot be a virtual IP"),
        ('address = "127.0.0.1"\ndevice = "lo"', "vip[0].address: 127.0.0.1 cannot be a virtual IP"),
        ('address = "10.0.0.5/24"', "vip[0].device: is required"),
        ('address = "10.0.0.5/24"\ndevice = "eth0/x"', "vip[0].device: 'eth0/x' is not a network device name"),
        ('address = "10.0.0.5/24"\ndevice = "eth0"\nlabel = "vip"', 'vip[0].label: must be the device name or start with "eth0:"'),
        ('address = "fd00::5"\ndevice = "eth0"\nlabel = "eth0:1"', "vip[0].label: labels exist for IPv4 addresses only"),
        ('address = "10.0.0.5/24"\ndevice = "eth0"\ngarp_repeat = 0', "vip[0].garp_repeat:"),
        ('address = "10.0.0.5/24"\ndevice = "eth0"\nbogus = 1', "vip[0].bogus: unknown key"),
    ],
)
def test_vip_mistakes_are_one_line(keyfile: Path, table: str, message: str) -> None:
    text = GOOD.replace("KEYFILE", str(keyfile)) + "\n[[vip]]\n" + table + "\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "hasup.toml")
    assert message in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and "(line " in str(err.value)


def test_vip_equal_to_a_node_address_or_twice_is_refused(keyfile: Path) -> None:
    base = GOOD.replace("KEYFILE", str(keyfile))
    with pytest.raises(ConfigError, match=r"vip\[0\].address: 127.0.0.1 cannot be a virtual IP"):
        parse_config(base + '\n[[vip]]\naddress = "127.0.0.1/8"\ndevice = "lo"\n')
    own = base.replace('listen = "127.0.0.1:5405"', 'listen = "10.0.0.1:5405"')
    with pytest.raises(ConfigError, match=r"vip\[0\].address: 10.0.0.1 is a node's own address"):
        parse_config(own + '\n[[vip]]\naddress = "10.0.0.1/24"\ndevice = "eth0"\n')
    with pytest.raises(ConfigError, match=r"vip\[1\].address: 10.0.0.100 is listed twice \(line \d+\)"):
        parse_config(base + VIP + VIP)


def test_vip_device_missing_on_this_host_is_exit_2_at_check_and_run(tmp_path: Path, keyfile: Path) -> None:
    text = GOOD + VIP.replace('"eth0"', '"hsnodev9"')
    bad = write(tmp_path, text, keyfile)
    for command in (["check"], ["run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "hasup", *command, "-c", str(bad)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        line = text.splitlines().index('device = "hsnodev9"') + 1
        assert proc.stderr.strip() == (
            f"hasup: {bad}: vip[0].device: no network device 'hsnodev9' on this host (line {line})"
        )


def test_vip_without_capabilities_stops_at_start_with_one_message(tmp_path: Path, keyfile: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        missing_component("root and setpriv", "drops capabilities from a root process")
    text = GOOD.replace('listen = "127.0.0.1:9105"', 'listen = "off"')
    text += '\n[[vip]]\naddress = "198.51.100.50/32"\ndevice = "lo"\n'
    text = text.replace('state_dir = "/tmp/hasup-test-state"', f'state_dir = "{tmp_path / "state"}"')
    path = write(tmp_path, text, keyfile)
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-net_admin,-net_raw", "--bounding-set=-net_admin,-net_raw",
         sys.executable, "-m", "hasup", "run", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "virtual IPs ([[vip]]) need CAP_NET_ADMIN and CAP_NET_RAW" in proc.stderr
    assert "198.51.100.50" not in subprocess.run(["ip", "addr", "show", "lo"], capture_output=True, text=True).stdout
