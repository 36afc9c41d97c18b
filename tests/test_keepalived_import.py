"""hasup import-keepalived: the seed recipe's configs, traps, includes and malformed input."""

from __future__ import annotations

import ipaddress
import os
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hasup import ConfigError
from hasup._cli import build_parser
from hasup.config import Config, parse_config
from hasup.keepalived_import import ImportResult, convert

# --------------------------------------------------------------------------- the seed recipe, verbatim
# Copied from ../shared/seed/neuronex-keepalived-ha.md (tabs written as \t).

MASTER_CONF = """! Configuration File for keepalived
global_defs {
   vrrp_skip_check_adv_addr
   #vrrp_strict
   vrrp_garp_interval 0
   vrrp_gna_interval 0
}

# Define the script content for the instance execution
vrrp_script check_ex_alived {
        script "/etc/keepalived/check_alive.sh"
        interval 5
        fall 3 # require 3 failures for KO
}


# Define a virtual router instance
vrrp_instance VI_1 {
    # Define the initial state, which can be MASTER or BACKUP
    state MASTER
    # nopreempt
    # Define the working interface
    interface eth0
\t
    virtual_router_id 51
\t# Define the weight
    priority 100
\t# Define the advert frequency, unit is second
    advert_int 1
\t# Define the communication authentication mechanism
    authentication {
        auth_type PASS
        auth_pass abcdefgh
    }

    # Define the virtual VIP address, which is not used
    virtual_ipaddress {
        192.160.127.254/17
    }
    unicast_peer {
        10.0.0.223  # Backup node IP address
    }
    # Track script, usually used to execute the script content defined in the vrrp_script
    track_script {
        check_ex_alived
    }

    # Notify script, which will be executed after the host state becomes Master|Backup|Fault
    notify_fault "/etc/keepalived/fault.sh"
    notify_master "/etc/keepalived/master.sh"
}
"""

MASTER_SH = """#!/bin/bash

systemctl start neuronex
"""

FAULT_SH = """#!/bin/bash

systemctl stop neuronex
"""

CHECK_ALIVE_SH = """#!/bin/bash

if ! curl 127.0.0.1:8085  >/dev/null 2>&1; then echo "neuronex start failed"; exit 1; fi
"""

BACKUP_CONF = """! Configuration File for keepalived
global_defs {
   vrrp_skip_check_adv_addr
   #vrrp_strict
   vrrp_garp_interval 0
   vrrp_gna_interval 0
}

# Define a virtual router instance
vrrp_instance VI_1 {
    # Define the initial state, which can be MASTER or BACKUP
    state BACKUP
\t# Non-preemptive mode
    nopreempt
    # Define the working interface
    interface eth0

    virtual_router_id 51
\t# Define the weight
    priority 90
\t# Announcement frequency, unit is second
    advert_int 1
\t# Define the communication authentication mechanism
    authentication {
        auth_type PASS
        auth_pass abcdefgh
    }

    # Define the virtual VIP address, which is not used
    virtual_ipaddress {
        192.160.127.254/17
    }

    unicast_peer {
        10.0.0.127  # Master node IP address
    }

    # Notify script, which will be executed after the host state becomes Master|Backup|Fault
    notify_master "/etc/keepalived/master.sh"
    notify_backup "/etc/keepalived/backup.sh"
}
"""

BACKUP_MASTER_SH = """#!/bin/bash

systemctl start neuronex
"""

BACKUP_SH = """#!/bin/bash

systemctl stop neuronex
"""


# --------------------------------------------------------------------------- helpers
def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
    return directory


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "group.key"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o600)
    return str(path)


def check(result: ImportResult, key_file: str) -> Config:
    """What `hasup check` does with the generated file (the key path made real)."""
    assert 'key_file = "/etc/hasup/group.key"' in result.toml
    return parse_config(result.toml.replace("/etc/hasup/group.key", key_file), "hasup.toml")


def seed_master(tmp_path: Path) -> Path:
    # The scripts live in /etc/keepalived/ on the real node; the importer also looks
    # next to keepalived.conf, which is how a copied /etc/keepalived is converted.
    files = {"keepalived.conf": MASTER_CONF, "master.sh": MASTER_SH, "fault.sh": FAULT_SH}
    files["check_alive.sh"] = CHECK_ALIVE_SH
    return write(tmp_path / "master", files) / "keepalived.conf"


def seed_backup(tmp_path: Path) -> Path:
    files = {"keepalived.conf": BACKUP_CONF, "master.sh": BACKUP_MASTER_SH, "backup.sh": BACKUP_SH}
    return write(tmp_path / "backup", files) / "keepalived.conf"


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def minimal(body: str, *, extra: str = "") -> str:
    return (
        textwrap.dedent(extra)
        + textwrap.dedent(
            """
        vrrp_instance VI_1 {
            state MASTER
            interface eth0
            virtual_router_id 51
            priority 100
            unicast_peer {
                10.0.0.223
            }
        """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "}\n"
    )


# --------------------------------------------------------------------------- the seed configs
def test_seed_master_converts_to_a_valid_config_with_the_recipes_intent(tmp_path: Path, key_file: str) -> None:
    path = seed_master(tmp_path)
    result = convert(path)
    config = check(result, key_file)

    assert result.instance == "VI_1"
    assert config.node.priority == 100
    assert config.node.preempt is True  # the preferred node takes the service back: automatic failback
    assert config.group.id == 51
    assert config.group.advert_interval == 1.0
    assert [p.address for p in config.group.peers] == [("10.0.0.223", 5405)]
    assert config.group.listen == ("0.0.0.0", 5405)
    assert dict(config.service) == {"backend": "systemd", "unit": "neuronex.service"}

    (probe,) = config.probes
    assert probe.type == "http"
    assert probe.table["url"] == "http://127.0.0.1:8085/"
    assert probe.table["expect_status"] == "200-399"
    assert (probe.options.interval, probe.options.fall, probe.options.rise) == (5.0, 3, 1)
    assert probe.options.when == "active"
    assert "curl without -f" in result.toml

    # the recipe's virtual IP, on the instance's interface, announced as keepalived did
    (vip,) = config.vips
    assert (vip.interface, vip.device, vip.label) == (ipaddress.ip_interface("192.160.127.254/17"), "eth0", None)
    assert (vip.garp_repeat, vip.garp_interval, vip.garp_delay) == (5, 0.0, 5.0)
    vip_line = line_of(MASTER_CONF, "192.160.127.254/17")
    assert f'address = "192.160.127.254/17"  # {path}:{vip_line}: virtual_ipaddress' in result.toml
    assert f'device = "eth0"  # {path}:{line_of(MASTER_CONF, "interface eth0")}: interface' in result.toml


def test_seed_master_traps_and_warnings(tmp_path: Path) -> None:
    path = seed_master(tmp_path)
    result = convert(path)
    traps = {t.code: t for t in result.traps}
    assert set(traps) == {
        "pass-auth",
        "curl-without-f",
        "fault-stops-probed-service",
        "notify-fire-and-forget",
    }
    assert traps["pass-auth"].where == f"{path}:{line_of(MASTER_CONF, 'authentication {')}"
    script_line = line_of(MASTER_CONF, 'script "')
    assert traps["curl-without-f"].where == f"{path}:{script_line}"
    assert traps["fault-stops-probed-service"].where == f"{path}:{line_of(MASTER_CONF, 'notify_fault')}"
    assert "fault_holddown" in traps["fault-stops-probed-service"].instead
    assert "awaited" in traps["notify-fire-and-forget"].instead
    flat = " ".join(w for w in result.toml.split() if w != "#")
    for trap in result.traps:  # the traps are in the file too, where an operator reads them
        assert f"{trap.where}: {trap.problem} hasup: {trap.instead}" in flat

    assert not any("virtual_ipaddress" in w or "virtual IP" in w for w in result.warnings)  # translated now
    assert all(w.startswith(f"{path}:") for w in result.warnings)
    assert any("PASS" in w for w in result.warnings)


def test_seed_backup_converts_and_flags_nopreempt(tmp_path: Path, key_file: str) -> None:
    path = seed_backup(tmp_path)
    result = convert(path)
    config = check(result, key_file)

    assert config.node.priority == 90
    assert config.node.preempt is False  # nopreempt, translated faithfully...
    traps = {t.code: t for t in result.traps}
    assert set(traps) == {"nopreempt-lower-priority", "pass-auth", "notify-fire-and-forget"}
    # ...and flagged: it does nothing on the lower-priority node; failback is the preferred node's setting
    assert traps["nopreempt-lower-priority"].where == f"{path}:{line_of(BACKUP_CONF, '    nopreempt')}"
    assert "preferred node" in traps["nopreempt-lower-priority"].instead
    assert dict(config.service) == {"backend": "systemd", "unit": "neuronex.service"}
    assert config.probes == ()
    assert [p.address for p in config.group.peers] == [("10.0.0.127", 5405)]
    assert [(v.interface, v.device) for v in config.vips] == [(ipaddress.ip_interface("192.160.127.254/17"), "eth0")]


def test_seed_pair_expresses_master_preferred_with_automatic_failback(tmp_path: Path, key_file: str) -> None:
    master = check(convert(seed_master(tmp_path)), key_file)
    backup = check(convert(seed_backup(tmp_path)), key_file)
    # One group, same timing: both sides agree on the config hash inputs.
    assert master.group.id == backup.group.id
    assert master.group.advert_interval == backup.group.advert_interval
    # Master preferred: the higher base priority claims when both are healthy.
    assert master.node.priority > backup.node.priority
    # Automatic failback is decided on the preferred node (preempt there), not on the backup:
    # the backup's preempt = false can never stop the master from taking the service back.
    assert master.node.preempt is True
    assert master.node.priority >= backup.node.priority + master.node.preempt_margin
    # Each lists the other; the same systemd unit is the service on both.
    assert master.group.peers[0].address[0] == "10.0.0.223"
    assert backup.group.peers[0].address[0] == "10.0.0.127"
    assert master.service == backup.service
    # The same virtual IP follows the service on both.
    assert master.vips == backup.vips


def test_scripts_at_their_absolute_path_are_read_there(tmp_path: Path, key_file: str) -> None:
    scripts = write(tmp_path / "etc-keepalived", {"start.sh": MASTER_SH, "stop.sh": BACKUP_SH})
    conf = minimal(
        f"""
        notify_master "{scripts}/start.sh"
        notify_backup {scripts}/stop.sh
        """
    )
    path = write(tmp_path / "conf", {"keepalived.conf": conf}) / "keepalived.conf"
    config = check(convert(path), key_file)
    assert dict(config.service) == {"backend": "systemd", "unit": "neuronex.service"}


# --------------------------------------------------------------------------- translation rules
def test_direct_docker_notify_lines_become_the_docker_backend(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        notify_master "/usr/bin/docker start neuronex"
        notify_backup "docker stop -t 10 neuronex"
        notify_fault "sudo docker container stop neuronex"
        """
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    assert dict(config.service) == {"backend": "docker", "container": "neuronex"}


def test_systemctl_restart_on_master_becomes_start_with_a_warning(tmp_path: Path, key_file: str) -> None:
    conf = minimal('notify_master "/bin/systemctl restart neuronex"\nnotify_backup "systemctl stop neuronex"\n')
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    assert check(result, key_file).service["unit"] == "neuronex.service"
    assert any("restarts neuronex.service" in w for w in result.warnings)


def test_curl_with_f_is_an_http_probe_without_the_trap(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        track_script {
            chk
        }
        notify_master "systemctl start neuronex"
        notify_backup "systemctl stop neuronex"
        """,
        extra="""
        vrrp_script chk {
            script "curl -sfS -m 2 -H 'Accept: text/html' https://127.0.0.1:8443/health"
            interval 1
            fall 2
            rise 3
            timeout 1
        }
        """,
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    (probe,) = check(result, key_file).probes
    assert probe.type == "http"
    assert probe.table["url"] == "https://127.0.0.1:8443/health"
    assert probe.table["headers"] == {"Accept": "text/html"}
    assert (probe.options.interval, probe.options.fall, probe.options.rise, probe.options.timeout) == (
        1,
        2,
        3,
        1,
    )
    assert "curl-without-f" not in {t.code for t in result.traps}
    # no notify_fault here, so the fault trap is not reported either
    assert "fault-stops-probed-service" not in {t.code for t in result.traps}


def test_non_curl_check_is_an_exec_probe_with_a_warning(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        track_script {
            chk_proc
            chk_pipe
        }
        notify_master "systemctl start neuronex"
        notify_backup "systemctl stop neuronex"
        """,
        extra="""
        vrrp_script chk_proc {
            script "killall -0 neuronex"
            interval 2
        }
        vrrp_script chk_pipe {
            script "pidof neuronex | grep -q ."
        }
        """,
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    proc, pipe = check(result, key_file).probes
    assert proc.type == "exec"
    assert proc.table["command"] == ["killall", "-0", "neuronex"]
    assert pipe.table["command"] == ["/bin/sh", "-c", "pidof neuronex | grep -q ."]
    text = conf
    proc_line = line_of(text, 'script "killall')
    pipe_line = line_of(text, 'script "pidof')
    assert any(w.startswith(f"{path}:{proc_line}:") and "exec probe" in w for w in result.warnings)
    assert any(w.startswith(f"{path}:{pipe_line}:") and "needs a shell" in w for w in result.warnings)


def test_check_script_that_is_more_than_curl_stays_an_exec_probe(tmp_path: Path, key_file: str) -> None:
    check_sh = "#!/bin/sh\ncurl -sf http://127.0.0.1:8085/ || exit 1\npgrep -x neuronex\n"
    conf = minimal(
        'track_script {\n    chk\n}\nnotify_master "systemctl start neuronex"\n'
        'notify_backup "systemctl stop neuronex"\n',
        extra=f'vrrp_script chk {{\n    script "{tmp_path}/check.sh"\n}}\n',
    )
    path = write(tmp_path, {"keepalived.conf": conf, "check.sh": check_sh}) / "keepalived.conf"
    result = convert(path)
    (probe,) = check(result, key_file).probes
    assert probe.type == "exec"
    assert probe.table["command"] == [f"{tmp_path}/check.sh"]
    assert any("not a single curl check" in w for w in result.warnings)


def test_weighted_script_is_an_always_probe_with_weight(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        'track_script {\n    gw weight -20\n}\nnotify_master "systemctl start x"\nnotify_backup "systemctl stop x"\n',
        extra='vrrp_script gw {\n    script "ping -c1 10.0.0.1"\n    weight 5\n}\n',
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    (probe,) = check(convert(path), key_file).probes
    assert (probe.options.when, probe.options.weight) == ("always", -20)  # track_script's weight wins


def test_untranslatable_notify_script_is_kept_as_command_backend(tmp_path: Path, key_file: str) -> None:
    notify_sh = textwrap.dedent(
        """\
        #!/bin/bash
        case "$1" in
          MASTER) systemctl start neuronex ;;
          *) systemctl stop neuronex ;;
        esac
        """
    )
    conf = minimal(
        f"""
        notify_master "{tmp_path}/notify.sh MASTER"
        notify_backup "{tmp_path}/notify.sh BACKUP"
        """
    )
    path = write(tmp_path, {"keepalived.conf": conf, "notify.sh": notify_sh}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    assert config.service["backend"] == "command"
    assert config.service["start"] == [f"{tmp_path}/notify.sh", "MASTER"]
    assert config.service["stop"] == [f"{tmp_path}/notify.sh", "BACKUP"]
    master_line = line_of(conf, "notify_master")
    assert any(w.startswith(f"{path}:{master_line}: kept as a command backend") for w in result.warnings)


def test_extra_lines_in_notify_scripts_are_reported(tmp_path: Path, key_file: str) -> None:
    master_sh = "#!/bin/sh\nlogger 'becoming master'\nsystemctl start neuronex\n/usr/local/bin/page-oncall\n"
    conf = minimal(f'notify_master "{tmp_path}/m.sh"\nnotify_backup "systemctl stop neuronex"\n')
    path = write(tmp_path, {"keepalived.conf": conf, "m.sh": master_sh}) / "keepalived.conf"
    result = convert(path)
    assert check(result, key_file).service["unit"] == "neuronex.service"
    assert any(w.startswith(f"{tmp_path}/m.sh:4:") and "page-oncall" in w for w in result.warnings)
    assert not any("becoming master" in w for w in result.warnings)  # logging is harmless
    assert "# [[notify]]" in result.toml  # offered, commented out: it would start the service twice


def test_notify_script_without_service_commands_becomes_a_hook(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        f"""
        notify_master "systemctl start neuronex"
        notify_backup "systemctl stop neuronex"
        notify_fault "{tmp_path}/alert.sh"
        """
    )
    path = write(tmp_path, {"keepalived.conf": conf, "alert.sh": "#!/bin/sh\nmail -s fault ops\n"}) / "keepalived.conf"
    result = convert(path)
    data = tomllib.loads(result.toml)
    assert data["notify"] == [{"on": ["FAULT"], "command": [f"{tmp_path}/alert.sh"], "timeout": "10s"}]
    assert any("[[notify]] hook on FAULT" in w for w in result.warnings)
    check(result, key_file)


def test_unicast_src_ip_advert_preempt_delay_and_clamping(tmp_path: Path, key_file: str) -> None:
    conf = textwrap.dedent(
        """
        global_defs {
            router_id edge-a
        }
        vrrp_instance VI_9 {
            state BACKUP
            virtual_router_id 9
            priority 255
            advert_int 0.5
            preempt_delay 30
            unicast_src_ip 10.0.0.127
            unicast_peer {
                10.0.0.223
                fe80::2
            }
            track_interface {
                eth0 weight -10
            }
            garp_master_delay 1
            notify_master "systemctl start neuronex"
            notify_stop "systemctl stop neuronex"
        }
        """
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    assert config.node.name == "edge-a"
    assert config.node.priority == 254
    assert config.node.preempt_delay == 30.0
    assert config.group.advert_interval == 0.5
    assert config.group.listen == ("10.0.0.127", 5405)
    assert [p.address for p in config.group.peers] == [("10.0.0.223", 5405), ("fe80::2", 5405)]
    warned = "\n".join(result.warnings)
    assert f"{path}:{line_of(conf, 'priority 255')}: priority 255 clamped to 254" in warned
    # keepalived tracked eth0 (track_interface; the instance has no `interface` here): so does hasup
    assert config.group.track_interface == ("eth0",)
    assert (
        f"{path}:{line_of(conf, 'eth0 weight -10')}: track_interface eth0 weight -10: the weight is ignored" in warned
    )
    # no virtual_ipaddress here: nothing to announce
    assert (
        f"{path}:{line_of(conf, 'garp_master_delay')}: garp_master_delay: this vrrp_instance has no virtual IP"
        in warned
    )
    assert config.vips == ()


# --------------------------------------------------------------------------- virtual IPs
NOTIFY = 'notify_master "systemctl start neuronex"\nnotify_backup "systemctl stop neuronex"\n'


def flat(text: str) -> str:
    """The words of ``text``, without the comment marks (long comments are wrapped)."""
    return " ".join(w for w in text.split() if w != "#")


def vip_tables(toml: str) -> list[list[str]]:
    """The lines of each generated [[vip]] table (up to the next blank line)."""
    lines = toml.splitlines()
    out: list[list[str]] = []
    for i, line in enumerate(lines):
        if line == "[[vip]]":
            end = lines.index("", i) if "" in lines[i:] else len(lines)
            out.append(lines[i + 1 : end])
    return out


def test_virtual_ipaddress_becomes_one_vip_per_address(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        virtual_ipaddress {
            192.168.1.10/24 dev eth1 label eth1:vip
            10.0.0.5
            fd00::5/64 dev eth0
            2001:db8::7
        }
        """
        + NOTIFY
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    got = [(str(v.interface), v.device, v.label) for v in config.vips]
    assert got == [
        ("192.168.1.10/24", "eth1", "eth1:vip"),
        ("10.0.0.5/32", "eth0", None),  # no prefix: /32, and the instance's interface, as in keepalived
        ("fd00::5/64", "eth0", None),
        ("2001:db8::7/128", "eth0", None),
    ]
    # keepalived's defaults are hasup's: nothing written for them
    assert all((v.garp_repeat, v.garp_interval, v.garp_delay) == (5, 0.0, 5.0) for v in config.vips)

    # every generated key says where it came from
    tables = vip_tables(result.toml)
    assert len(tables) == 4
    for table in tables:
        for line in table:
            if not line.startswith("#"):
                assert f"  # {path}:" in line, line
    first = line_of(conf, "192.168.1.10/24")
    assert tables[0] == [
        f'address = "192.168.1.10/24"  # {path}:{first}: virtual_ipaddress',
        f'device = "eth1"  # {path}:{first}: dev eth1',
        f'label = "eth1:vip"  # {path}:{first}: label eth1:vip',
    ]
    bare = line_of(conf, "10.0.0.5")
    assert tables[1] == [
        f'address = "10.0.0.5/32"  # {path}:{bare}: virtual_ipaddress (no prefix: /32, as in keepalived)',
        f'device = "eth0"  # {path}:{line_of(conf, "interface eth0")}: interface',
    ]
    assert "CAP_NET_ADMIN" in result.toml  # the NOTE before the first [[vip]]
    # keepalived added a bare IPv6 address deprecated; hasup does not
    warned = "\n".join(result.warnings)
    assert f"{path}:{line_of(conf, '2001:db8::7')}: virtual_ipaddress 2001:db8::7: keepalived added a /128" in warned
    assert not any("not managed" in w or "does not manage" in w for w in result.warnings)


def test_virtual_ipaddress_excluded_addresses_are_vips_too(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        virtual_ipaddress {
            10.0.0.100/24
        }
        virtual_ipaddress_excluded {
            10.0.0.101/24
            fd00::101/64 dev eth1
        }
        virtual_ipaddress_excluded {
            10.0.0.100/24
        }
        """
        + NOTIFY
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    assert [(str(v.interface), v.device) for v in config.vips] == [
        ("10.0.0.100/24", "eth0"),
        ("10.0.0.101/24", "eth0"),
        ("fd00::101/64", "eth1"),
    ]
    assert f"# {path}:{line_of(conf, '10.0.0.101/24')}: virtual_ipaddress_excluded" in result.toml
    assert flat(result.toml).count("virtual_ipaddress_excluded addresses too, and only left them out") == 1
    # listed twice: keepalived has it once, so does hasup (parse_config would reject a duplicate)
    second = [n for n, line in enumerate(conf.splitlines(), 1) if line.strip() == "10.0.0.100/24"][-1]
    assert f"{path}:{second}: virtual_ipaddress_excluded 10.0.0.100/24: 10.0.0.100 is already a virtual IP" in (
        "\n".join(result.warnings)
    )


def test_garp_options_are_mapped_on_every_vip(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        garp_master_repeat 3
        garp_master_delay 10
        garp_interval 0.001
        gna_interval 0.000001
        garp_master_refresh 60
        garp_lower_prio_repeat 2
        garp_lower_prio_delay 5
        virtual_ipaddress {
            10.0.0.100/24
            fd00::100/64
        }
        virtual_ipaddress_excluded {
            10.0.0.101/24
        }
        """
        + NOTIFY
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    v4, v6, excluded = check(result, key_file).vips
    assert (v4.garp_repeat, v4.garp_delay, v4.garp_interval) == (3, 10.0, 0.001)
    assert (v6.garp_repeat, v6.garp_delay, v6.garp_interval) == (3, 10.0, 0.000001)  # IPv6: gna_interval
    assert (excluded.garp_repeat, excluded.garp_delay, excluded.garp_interval) == (3, 10.0, 0.001)
    first = vip_tables(result.toml)[0]
    assert f"garp_repeat = 3  # {path}:{line_of(conf, 'garp_master_repeat')}: garp_master_repeat 3" in first
    assert f'garp_delay = "10s"  # {path}:{line_of(conf, "garp_master_delay")}: garp_master_delay 10' in first
    assert f'garp_interval = "1ms"  # {path}:{line_of(conf, "garp_interval")}: garp_interval 0.001' in first

    warned = "\n".join(result.warnings)
    for kw in ("garp_master_refresh", "garp_lower_prio_repeat", "garp_lower_prio_delay"):
        assert f"{path}:{line_of(conf, kw)}: {kw} is not translated: hasup" in warned
    for kw in ("garp_master_repeat", "garp_master_delay", "garp_interval", "gna_interval"):
        assert f": {kw} " not in warned  # translated: no "no hasup equivalent" warning any more
    assert "no hasup equivalent" not in warned


def test_global_defs_garp_settings_are_the_defaults(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        "garp_master_delay 0\nvirtual_ipaddress {\n    10.0.0.100/24\n}\n" + NOTIFY,
        extra="""
        global_defs {
            vrrp_garp_master_repeat 2
            vrrp_garp_master_delay 30
            vrrp_garp_interval 0.5
            vrrp_garp_master_refresh 60
        }
        """,
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    (vip,) = check(result, key_file).vips
    # the instance's garp_master_delay 0 (no second burst) wins over global_defs
    assert (vip.garp_repeat, vip.garp_delay, vip.garp_interval) == (2, 0.0, 0.5)
    assert f"{path}:{line_of(conf, 'vrrp_garp_master_repeat')}: vrrp_garp_master_repeat 2 (global_defs)" in result.toml
    assert f"{path}:{line_of(conf, 'vrrp_garp_master_refresh')}: vrrp_garp_master_refresh is not translated" in (
        "\n".join(result.warnings)
    )


def test_unknown_vip_options_are_warned_with_file_and_line(tmp_path: Path, key_file: str) -> None:
    conf = minimal(
        """
        virtual_ipaddress {
            192.168.1.10/24 brd 192.168.1.255 dev eth1 scope link metric 100 no_track
            192.168.1.11/24 dev eth1 scope global label eth1:b
            192.168.1.12/24 dev eth1 label eth0:c
            fd00::5/64 label eth0:v6
            10.0.0.6 10.0.0.7
        }
        """
        + NOTIFY
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    result = convert(path)
    config = check(result, key_file)
    assert [(str(v.interface), v.device, v.label) for v in config.vips] == [
        ("192.168.1.10/24", "eth1", None),
        ("192.168.1.11/24", "eth1", "eth1:b"),
        ("192.168.1.12/24", "eth1", None),  # a label of another device: hasup (and ip addr) refuse it
        ("fd00::5/64", "eth0", None),
        ("10.0.0.6/32", "eth0", None),
    ]
    by_line = {int(w.split(":")[1]): w.split(": ", 1)[1] for w in result.warnings if w.startswith(f"{path}:")}
    first = by_line[line_of(conf, "192.168.1.10/24")]
    assert first.startswith("virtual_ipaddress 192.168.1.10/24: ignored brd 192.168.1.255")
    for word in ("scope link", "metric 100", "no_track"):
        assert word in first
    assert line_of(conf, "192.168.1.11/24") not in by_line  # scope global is what hasup does
    assert "label eth0:c" in by_line[line_of(conf, "192.168.1.12/24")]
    assert "label eth0:v6 (labels exist for IPv4 addresses only" in by_line[line_of(conf, "fd00::5/64")]
    assert "10.0.0.7 (one address per line)" in by_line[line_of(conf, "10.0.0.6 10.0.0.7")]
    # and next to the table too
    note = f"{path}:{line_of(conf, '192.168.1.10/24')}: not translated: brd 192.168.1.255, scope link, metric 100"
    assert note in flat(result.toml)


def test_vip_without_a_device_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    conf = (
        "vrrp_instance VI_1 {\n    virtual_router_id 51\n    unicast_peer {\n        10.0.0.223\n    }\n"
        "    virtual_ipaddress {\n        10.0.0.100/24 dev eth1\n        10.0.0.101/24\n    }\n}\n"
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    with pytest.raises(ConfigError, match=r"10\.0\.0\.101/24: no device .*'dev <device>'.*'interface'") as info:
        convert(path)
    assert (info.value.file, info.value.line) == (str(path), 8)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- several instances, include
TWO = """\
vrrp_instance VI_1 {
    virtual_router_id 51
    priority 100
    unicast_peer {
        10.0.0.223
    }
    notify_master "systemctl start neuronex"
    notify_backup "systemctl stop neuronex"
}
vrrp_instance VI_2 {
    virtual_router_id 52
    priority 90
    unicast_peer {
        10.0.0.224
    }
    notify_master "docker start collector"
    notify_backup "docker stop collector"
}
"""


def test_several_instances_need_instance(tmp_path: Path, key_file: str) -> None:
    path = write(tmp_path, {"keepalived.conf": TWO}) / "keepalived.conf"
    with pytest.raises(ConfigError, match=r"VI_1, VI_2.*--instance") as info:
        convert(path)
    assert info.value.file == str(path)
    config = check(convert(path, instance="VI_2"), key_file)
    assert (config.group.id, config.node.priority, config.service["container"]) == (52, 90, "collector")
    assert check(convert(path, instance="VI_1"), key_file).group.id == 51
    with pytest.raises(ConfigError, match="no vrrp_instance named 'VI_3'"):
        convert(path, instance="VI_3")


def test_include_with_glob_relative_to_the_including_file(tmp_path: Path, key_file: str) -> None:
    write(
        tmp_path,
        {
            "etc/keepalived.conf": "global_defs {\n}\ninclude conf.d/*.conf\n",
            "etc/conf.d/10-script.conf": 'vrrp_script chk {\n    script "curl -f 127.0.0.1:8085"\n}\n',
            "etc/conf.d/20-instance.conf": minimal("track_script {\n    chk\n}\n", extra="") + "",
            "etc/conf.d/30-notify.conf.disabled": "garbage {",
        },
    )
    # notify lines in an include nested inside the instance block
    text = (tmp_path / "etc/conf.d/20-instance.conf").read_text().rstrip().removesuffix("}")
    (tmp_path / "etc/conf.d/20-instance.conf").write_text(text + "    include ../notify/*.inc\n}\n")
    write(tmp_path / "etc/notify", {"a.inc": 'notify_master "systemctl start neuronex"\n'})
    write(
        tmp_path / "etc/notify",
        {"b.inc": 'notify_backup "systemctl stop neuronex"\nvirtual_ipaddress {\n}\n'},
    )
    result = convert(tmp_path / "etc/keepalived.conf")
    config = check(result, key_file)
    assert config.probes[0].table["url"] == "http://127.0.0.1:8085/"
    assert config.service["unit"] == "neuronex.service"
    # locations point into the included file
    assert any(w.startswith(f"{tmp_path}/etc/conf.d/../notify/b.inc:2:") for w in result.warnings)


def test_include_errors(tmp_path: Path) -> None:
    path = write(tmp_path, {"keepalived.conf": "\n\ninclude missing.conf\n"}) / "keepalived.conf"
    with pytest.raises(ConfigError, match=r"include: .*missing.conf: file not found") as info:
        convert(path)
    assert info.value.line == 3
    loop = write(tmp_path / "loop", {"keepalived.conf": "include keepalived.conf\n"}) / "keepalived.conf"
    with pytest.raises(ConfigError, match="include loop"):
        convert(loop)


# --------------------------------------------------------------------------- malformed input
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("vrrp_instance VI_1 {\n    priority 100\n}\n}\n", 4, "unbalanced '}'"),
        (
            "global_defs {\n}\nvrrp_instance VI_1 {\n    unicast_peer {\n        10.0.0.1\n    \n}\n",
            3,
            "unbalanced '{'.*vrrp_instance",
        ),
        (
            "vrrp_instance VI_1 {\n    virtual_router_id 51\n}\nvrrp_scirpt chk {\n}\n",
            4,
            "unknown block 'vrrp_scirpt'",
        ),
        ("vrrp_instance VI_1 {\n    virtual_router_id 51\n    priority\n}\n", 3, "priority: missing value"),
        ("vrrp_instance VI_1 {\n    virtual_router_id 51\n    prio_block {\n    }\n}\n", 3, "unknown block"),
        ("vrrp_instance VI_1 {\n    priority high\n}\n", 2, "priority: expected an integer, got 'high'"),
        ("vrrp_instance VI_1 {\n    virtual_router_id 300\n}\n", 2, "between 1 and 255"),
        ("vrrp_instance VI_1 {\n    priority 100\n}\n", 1, "virtual_router_id is missing"),
        ('vrrp_script c {\n    script "curl x\n}\n', 2, "unterminated quoted string"),
        (
            "vrrp_script c {\n    interval 1\n}\nvrrp_instance V {\n virtual_router_id 1\n"
            " track_script {\n  c\n }\n}\n",
            1,
            "script is missing",
        ),
        (
            "vrrp_instance V {\n virtual_router_id 1\n track_script {\n  nope\n }\n}\n",
            4,
            "no vrrp_script named",
        ),
        (
            "vrrp_instance V {\n virtual_router_id 1\n state PRIMARY\n}\n",
            3,
            "state: expected MASTER or BACKUP",
        ),
        ("vrrp_instance V {\n virtual_router_id 1\n unicast_peer {\n  10.0.0.300\n }\n}\n", 4, "not an IP"),
        ("bogus_keyword 1\n", 1, "unknown keyword 'bogus_keyword'"),
        ("vrrp_instance {\n}\n", 1, "vrrp_instance: missing value"),
        (
            "vrrp_instance V {\n virtual_router_id 1\n interface eth0\n virtual_ipaddress {\n  10.0.0.300/24\n }\n}\n",
            5,
            "virtual_ipaddress: '10.0.0.300/24' is not an IP address",
        ),
        (
            "vrrp_instance V {\n virtual_router_id 1\n virtual_ipaddress {\n  10.0.0.5 dev\n }\n}\n",
            4,
            "dev needs a value",
        ),
        (
            "vrrp_instance V {\n virtual_router_id 1\n interface eth0\n unicast_peer {\n  10.0.0.2\n }\n"
            " virtual_ipaddress {\n  10.0.0.2/24\n }\n}\n",
            8,
            "10.0.0.2 is a unicast_peer",
        ),
        ("{\n}\n", 1, "'{' without a keyword"),
    ],
)
def test_malformed_files_report_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, {"keepalived.conf": text}) / "keepalived.conf"
    with pytest.raises(ConfigError, match=message) as info:
        convert(path)
    assert info.value.file == str(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}: ")


def test_brace_on_its_own_line_and_comments(tmp_path: Path, key_file: str) -> None:
    conf = (
        "! comment\n# comment\nvrrp_instance VI_1\n{\n    virtual_router_id 51 # trailing\n"
        "    priority 100 ! trailing\n    unicast_peer { 10.0.0.2 }\n"
        '    notify_master "systemctl start a"\n    notify_backup "systemctl stop a"\n}\n'
    )
    path = write(tmp_path, {"keepalived.conf": conf}) / "keepalived.conf"
    config = check(convert(path), key_file)
    assert config.group.id == 51
    assert config.group.peers[0].address == ("10.0.0.2", 5405)


def test_missing_file_and_no_instance(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        convert(tmp_path / "nope.conf")
    path = write(tmp_path, {"keepalived.conf": "global_defs {\n}\n"}) / "keepalived.conf"
    with pytest.raises(ConfigError, match="no vrrp_instance"):
        convert(path)


# --------------------------------------------------------------------------- the CLI entry
def run_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    code: Any = args.func(args)
    assert isinstance(code, int)
    return code


def test_cli_prints_toml_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = seed_master(tmp_path)
    assert run_cli(["import-keepalived", str(path)]) == 0
    out, err = capsys.readouterr()
    assert tomllib.loads(out)["node"]["priority"] == 100
    assert "warning: " in err
    assert "trap: " in err
    assert "PASS" in err


def test_cli_writes_output_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = seed_backup(tmp_path)
    out = tmp_path / "hasup.toml"
    assert run_cli(["import-keepalived", str(path), "-o", str(out)]) == 0
    first = out.read_text()
    assert tomllib.loads(first)["node"]["priority"] == 90
    capsys.readouterr()
    out.write_text("keep me")
    assert run_cli(["import-keepalived", str(path), "-o", str(out)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert run_cli(["import-keepalived", str(path), "-o", str(out), "--force"]) == 0
    assert out.read_text() == first
    assert os.stat(out).st_mode & 0o777 <= 0o644


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"keepalived.conf": TWO}) / "keepalived.conf"
    assert run_cli(["import-keepalived", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"hasup: {path}: ")
    assert "Traceback" not in err
    assert run_cli(["import-keepalived", str(path), "--instance", "VI_2"]) == 0


# --------------------------------------------------------------------------- the migration guide
def test_migration_guide_examples_match_the_importer(tmp_path: Path, key_file: str) -> None:
    """The guide shows the importer's real output for the seed master, and it is a valid config."""
    guide = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-keepalived.md"
    blocks = [b.split("```", 1)[0] for b in guide.read_text().split("```toml\n")[1:]]
    for block in blocks:
        tomllib.loads(block)
    (shown,) = [b for b in blocks if b.startswith("# hasup.toml")]
    parse_config(shown.replace("/etc/hasup/group.key", key_file), "guide")
    etc = seed_master(tmp_path)
    generated = convert(etc).toml.replace(f"{etc.parent}/", "/etc/keepalived/")

    def words(text: str) -> str:  # comment wrapping depends on the length of the paths
        flat = " ".join(w for w in text.split() if w != "#")
        return re.sub(r" \(\S+ was read from \S+\)", "", flat)  # scripts were found next to the conf

    assert words(shown) == words(generated)
