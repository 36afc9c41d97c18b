"""Configuration: a TOML file read into frozen attrs classes.

Every mistake is a :class:`~hasup.ConfigError` rendered as
``file: key.path: what is wrong (line N)``. See ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._addr import parse_address
from ._errors import ConfigError
from ._hooks import NotifyHook, parse_hooks
from ._section import Section, Source
from ._strictmodes import secret_problem
from ._vipconfig import VipSettings, parse_vips
from .backends import WARM_BACKENDS, ServiceBackend, load_backend_class
from .probes import Probe, ProbeOptions, load_probe_class
from .protocol import Address, CoreConfig, KeyRing, PeerSpec
from .protocol._witness import DEFAULT_WITNESS_PORT, WITNESS_LABEL

if TYPE_CHECKING:
    from .coordinator import Coordinator
    from .sync.config import SyncSettings

__all__ = ["Config", "GroupSettings", "NodeSettings", "load_config", "parse_config", "read_key_file"]

DEFAULT_PORT = 5405


@attrs.frozen
class NodeSettings:
    name: str
    priority: int
    preempt: bool = True
    preempt_delay: float = 0.0
    preempt_margin: int = 1
    state_dir: str = "/var/lib/hasup"


@attrs.frozen
class GroupSettings:
    id: int
    listen: Address
    peers: tuple[PeerSpec, ...]
    keys: KeyRing
    advert_interval: float = 1.0
    fault_holddown: float = 5.0
    quorum: str = "auto"
    key_file: str | None = None
    #: Interfaces whose link this node depends on; ``None`` (the key not set): the
    #: interfaces that carry the heartbeats, found at start (see ``hasup._iface``).
    track_interface: tuple[str, ...] | None = None
    #: Raw group secrets, the sending key first (data sync derives its own keys).
    secrets: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    #: ``hasup witness`` address (a third vote), its keys and the vote lease.
    witness: Address | None = None
    witness_keys: KeyRing | None = attrs.field(default=None, repr=False)
    witness_lease: float = 0.0


@attrs.frozen
class StatusSettings:
    listen: Address | None = ("127.0.0.1", 9105)
    #: ``operator_token_file``'s secret: operator commands from the status page (or any
    #: machine) with it, besides the local ``control.token``
    operator_token: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ProbeEntry:
    options: ProbeOptions
    type: str
    table: Mapping[str, Any]


@attrs.frozen
class Config:
    """A validated configuration. Build backends and probes with :meth:`make_backend`
    and :meth:`make_probes` (each call returns fresh objects)."""

    file: str
    node: NodeSettings
    group: GroupSettings
    service: Mapping[str, Any]
    probes: tuple[ProbeEntry, ...] = ()
    status: StatusSettings = StatusSettings()
    notify: tuple[NotifyHook, ...] = ()
    #: The raw ``[[sync]]`` tables (validated): directories replicated to the standby.
    sync: tuple[Mapping[str, Any], ...] = ()
    #: The raw ``[coordinator]`` table (validated), or None for heartbeat election.
    coordinator: Mapping[str, Any] | None = None
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    #: ``[[vip]]``: virtual IP addresses that follow the service.
    vips: tuple[VipSettings, ...] = ()
    warnings: tuple[str, ...] = ()
    text: str = ""

    @property
    def backend_kind(self) -> str:
        return str(self.service.get("backend", ""))

    def core_config(self) -> CoreConfig:
        return CoreConfig(
            name=self.node.name,
            group=self.group.id,
            priority=self.node.priority,
            peers=self.group.peers,
            keys=self.group.keys,
            advert_interval=self.group.advert_interval,
            preempt=self.node.preempt,
            preempt_delay=self.node.preempt_delay,
            preempt_margin=self.node.preempt_margin,
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
            fault_holddown=self.group.fault_holddown,
            quorum=self.group.quorum,
            external_leader=self.coordinator is not None,
            takeover_needs_sync=bool(self.sync),
            vips=bool(self.vips),
            witness=self.group.witness,
            witness_keys=self.group.witness_keys,
            witness_lease=self.group.witness_lease,
            warm=self.backend_kind in WARM_BACKENDS,
            probes=tuple(p.options.spec() for p in self.probes),
        )

    def make_backend(self) -> ServiceBackend:
        source = Source(self.file, self.text)
        table = self.service
        if table.get("backend") == "command" and "run" in table and "pid_file" not in table:
            # The managed program may outlive hasup: a restarted hasup adopts it by this file.
            table = {**table, "pid_file": os.path.join(self.node.state_dir, "service.pid")}
        section = Section(table, path="service", source=source)
        kind = section.get_str("backend")
        try:
            cls = load_backend_class(kind)
        except ConfigError as exc:
            raise section.error("backend", exc.message) from None
        return cls.from_config(section)

    def sync_settings(self) -> list[SyncSettings]:
        """One validated :class:`~hasup.sync.SyncSettings` per ``[[sync]]`` table."""
        if not self.sync:
            return []  # do not import the sync engine (cryptography, watchfiles) for nothing
        from .sync.config import SyncSettings

        source = Source(self.file, self.text)
        return [
            SyncSettings.from_section(
                Section(table, path=f"sync[{i}]", source=source),
                default_host=self.group.listen[0],
                default_port=5406 + i,
            )
            for i, table in enumerate(self.sync)
        ]

    def make_coordinator(self) -> Coordinator | None:
        """The external leader election, if ``[coordinator]`` is configured."""
        if self.coordinator is None:
            return None
        from .coordinator import load_coordinator

        section = Section(self.coordinator, path="coordinator", source=Source(self.file, self.text))
        return load_coordinator(section, group_id=self.group.id, name=self.node.name)

    def make_probes(self, backend: ServiceBackend | None = None) -> list[Probe]:
        source = Source(self.file, self.text)
        probes = []
        for index, entry in enumerate(self.probes):
            section = Section(entry.table, path=f"probe[{index}]", source=source)
            ProbeOptions.from_section(section)  # marks the common keys as read
            section.raw("type")
            cls = load_probe_class(entry.type)
            if entry.type == "backend":
                probe = cls.from_config(section, entry.options, backend=backend)  # type: ignore[call-arg]
            else:
                probe = cls.from_config(section, entry.options)
            section.finish()
            probes.append(probe)
        return probes


def read_key_file(path: str, *, section: Section, key: str) -> bytes:
    """Read a group key: hex text (as ``hasup keygen`` writes) or raw bytes, owner-only."""
    try:
        st = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as exc:
        raise section.error(key, f"cannot read key file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise section.error(
            key,
            f"key file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
        )
    problem = secret_problem(path, st)
    if problem:
        raise section.error(key, f"key file: {problem}")
    text = data.strip()
    try:
        secret = bytes.fromhex(text.decode())
    except (UnicodeDecodeError, ValueError):
        secret = data
    if len(secret) < 16:
        raise section.error(key, f"key file {path} holds {len(secret)} bytes; at least 16 are required")
    return secret


def _address(section: Section, key: str, value: object, default_port: int | None) -> Address:
    if not isinstance(value, str):
        raise section.error(key, f'expected an address string such as "10.0.0.2:{DEFAULT_PORT}"')
    try:
        return parse_address(value, default_port=default_port)
    except ValueError as exc:
        raise section.error(key, str(exc)) from None


def _peers(section: Section, listen_port: int) -> tuple[PeerSpec, ...]:
    raw = section.raw("peers", None)
    if raw is None:
        raise section.error("peers", 'is required: the other members, e.g. ["10.0.0.223:5405"]')
    if not isinstance(raw, list):
        raise section.error("peers", "expected a list of addresses or {name, address} tables")
    peers: list[PeerSpec] = []
    for i, item in enumerate(raw):
        key = f"peers[{i}]"
        if isinstance(item, Mapping):
            sub = Section(item, path=section.key_path(key), source=section.source)
            name = sub.get_str("name", None)
            addr = _address(sub, "address", sub.get_str("address"), listen_port)
            sub.finish()
        else:
            name, addr = None, _address(section, "peers", item, listen_port)
        if any(p.address == addr for p in peers):
            raise section.error("peers", f"duplicate peer {addr[0]}:{addr[1]}")
        if name is not None and any(p.name == name for p in peers):
            raise section.error("peers", f"duplicate peer name {name!r}")
        peers.append(PeerSpec(addr, name))
    if not peers:
        raise section.error("peers", "needs at least one peer")
    if len(peers) > 7:
        raise section.error("peers", "groups are limited to 8 nodes")
    return tuple(peers)


def _keys(section: Section, warnings: list[str]) -> tuple[KeyRing, str | None, tuple[bytes, ...], KeyRing | None]:
    insecure = section.get_bool("insecure", False)
    key_file = section.get_str("key_file", None)
    inline = section.get_str("key", None)
    key_id = section.get_int("key_id", 1, min=1, max=255)
    extra = section.get_tables("extra_keys")
    secrets: dict[int, bytes] = {}
    if key_file is not None and inline is not None:
        raise section.error("key", "set key_file or key, not both")
    if key_file is not None:
        secrets[key_id] = read_key_file(key_file, section=section, key="key_file")
    elif inline is not None:
        warnings.append(
            f"{section.source.file}: group.key: the group key is inline in the config file; "
            "prefer key_file (created by `hasup keygen`, mode 0600)"
        )
        try:
            secret = bytes.fromhex(inline.strip())  # same reading as a key file
        except ValueError:
            secret = inline.encode()
        if len(secret) < 16:
            raise section.error("key", "must be at least 16 characters")
        secrets[key_id] = secret
    for sub in extra:
        kid = sub.get_int("id", min=1, max=255)
        if kid in secrets:
            raise sub.error("id", f"key id {kid} is used twice")
        secrets[kid] = read_key_file(sub.get_str("file"), section=sub, key="file")
        sub.finish()
    if not secrets:
        if not insecure:
            raise section.error(
                "key_file",
                "is required: heartbeats are authenticated (create one with `hasup keygen /etc/hasup/group.key`), "
                "or set insecure = true to run without authentication",
            )
        warnings.append(f"{section.source.file}: group.insecure: heartbeats are NOT authenticated")
        return KeyRing.insecure(), None, (), None
    if insecure:
        raise section.error("insecure", "cannot be true when a key is configured")
    ordered = (secrets[key_id], *(v for k, v in secrets.items() if k != key_id))
    witness = KeyRing.from_group_keys(secrets, key_id, label=WITNESS_LABEL)
    return KeyRing.from_group_keys(secrets, key_id), key_file, ordered, witness


def _witness(
    section: Section, keys: KeyRing | None, peers: tuple[PeerSpec, ...], advert: float
) -> tuple[Address | None, KeyRing | None, float]:
    """``[group] witness``, ``witness_key_file`` and ``witness_lease`` (docs/witness.md)."""
    text = section.get_str("witness", None)
    key_file = section.get_str("witness_key_file", None)
    lease = section.get_duration("witness_lease", 4 * advert, min=4 * advert, max=120.0)
    if text is None:
        if key_file is not None:
            raise section.error("witness_key_file", 'needs witness = "host:port"')
        return None, None, 0.0
    address = _address(section, "witness", text, DEFAULT_WITNESS_PORT)
    if key_file is not None:
        secret = read_key_file(key_file, section=section, key="witness_key_file")
        keys = KeyRing.from_group_keys({1: secret}, 1, label=WITNESS_LABEL)
    if keys is None:
        raise section.error("witness", "needs a group key (or witness_key_file): votes are authenticated")
    if (1 + len(peers)) % 2:
        raise section.error("witness", f"breaks ties in groups of an even size; this group has {1 + len(peers)} nodes")
    if section.get_str("quorum", "auto") == "none":
        raise section.error("witness", 'counts as a vote: it cannot be combined with quorum = "none"')
    return address, keys, lease


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate TOML text; raise :class:`ConfigError` on the first mistake."""
    source = Source(file, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        message = str(exc).split(" (at line")[0]
        raise ConfigError(f"invalid TOML: {message}", file=file, line=line) from None
    root = Section(data, path="", source=source)
    warnings: list[str] = []

    node_s = root.get_table("node") or Section({}, path="node", source=source)
    node = NodeSettings(
        name=_name(node_s),
        priority=node_s.get_int("priority", min=1, max=254),
        preempt=node_s.get_bool("preempt", True),
        preempt_delay=node_s.get_duration("preempt_delay", 0.0, min=0.0),
        preempt_margin=node_s.get_int("preempt_margin", 1, min=0, max=253),
        state_dir=node_s.get_str("state_dir", "/var/lib/hasup"),
    )
    node_s.finish()

    group_s = root.get_table("group") or Section({}, path="group", source=source)
    group_id = group_s.get_int("id", min=0, max=2**32 - 1)
    listen = _address(group_s, "listen", group_s.get_str("listen", f"0.0.0.0:{DEFAULT_PORT}"), DEFAULT_PORT)
    peers = _peers(group_s, listen[1])
    keys, key_file, secrets, witness_keys = _keys(group_s, warnings)
    advert = group_s.get_duration("advert_interval", 1.0, min=0.01, max=60.0)
    witness, witness_keys, witness_lease = _witness(group_s, witness_keys, peers, advert)
    if witness is not None and witness[0] in {listen[0], *(p.address[0] for p in peers)}:
        warnings.append(
            f"{file}: group.witness: {witness[0]} is a node of this group; "
            "the witness must run on a third machine to break a tie"
        )
    group = GroupSettings(
        id=group_id,
        listen=listen,
        peers=peers,
        keys=keys,
        advert_interval=advert,
        fault_holddown=group_s.get_duration("fault_holddown", 5.0, min=0.0),
        quorum=group_s.get_str("quorum", "auto", choices=("auto", "majority", "none")),
        key_file=key_file,
        secrets=secrets,
        track_interface=group_s.get_str_list("track_interface", None),
        witness=witness,
        witness_keys=witness_keys,
        witness_lease=witness_lease,
    )
    group_s.finish()
    if any(p.name == node.name for p in peers):
        raise group_s.error("peers", f"a peer is named like this node ({node.name!r})")

    service_s = root.get_table("service")
    if service_s is None:
        raise root.error("service", 'is required: [service] backend = "command" | "systemd" | "docker"')
    service = service_s.data()

    probes: list[ProbeEntry] = []
    for sub in root.get_tables("probe"):
        options = ProbeOptions.from_section(sub)
        kind = sub.get_str("type")
        try:
            load_probe_class(kind)
        except ConfigError as exc:
            raise sub.error("type", exc.message) from None
        if any(p.options.name == options.name for p in probes):
            raise sub.error("name", f"duplicate probe name {options.name!r}")
        probes.append(ProbeEntry(options, kind, sub.data()))

    notify = parse_hooks(root.get_tables("notify"))
    vips = parse_vips(root.get_tables("vip"), listen, peers)

    sync_tables = tuple(sub.data() for sub in root.get_tables("sync"))
    if sync_tables and not secrets:
        raise root.error("sync", "data sync needs a group key (the data holds credentials); insecure is not allowed")

    coordinator_s = root.get_table("coordinator")
    coordinator = None
    if coordinator_s is not None:
        from .coordinator import load_coordinator

        coordinator = coordinator_s.data()
        if witness is not None:
            raise group_s.error("witness", "and [coordinator] are alternatives: etcd already is the quorum")
        load_coordinator(Section(coordinator, path="coordinator", source=source), group_id=group_id, name=node.name)

    status_s = root.get_table("status")
    status = StatusSettings()
    if status_s is not None:
        listen_text = status_s.get_str("listen", "127.0.0.1:9105")
        status_addr = None if listen_text in ("", "off") else _address(status_s, "listen", listen_text, 9105)
        allow_remote = status_s.get_bool("allow_remote", False)
        if status_addr is not None and not allow_remote and not _is_loopback(status_addr[0]):
            raise status_s.error(
                "listen",
                f"{listen_text} is not a loopback address; set allow_remote = true to expose /status",
            )
        token_file = status_s.get_str("operator_token_file", None)
        operator_token = (
            None if token_file is None else read_key_file(token_file, section=status_s, key="operator_token_file")
        )
        status = StatusSettings(status_addr, operator_token)
        status_s.finish()
    root.finish()

    config = Config(
        file=file,
        node=node,
        group=group,
        service=service,
        probes=tuple(probes),
        status=status,
        notify=notify,
        coordinator=coordinator,
        sync=sync_tables,
        vips=vips,
        warnings=tuple(warnings),
        text=text,
    )
    config.sync_settings()  # validates every [[sync]] table
    # Build once to validate backend and probe options (constructors do no I/O).
    # A callback backend exists only in the embedding program: it is passed to Supervisor.
    backend = None if config.backend_kind == "callback" else config.make_backend()
    config.make_probes(backend)
    if backend is None:
        return config
    return attrs.evolve(
        config,
        start_timeout=backend.start_timeout,
        stop_timeout=backend.stop_timeout,
    )


def _name(section: Section) -> str:
    name = section.get_str("name", None)
    if name is None:
        name = os.uname().nodename
    if not name or len(name.encode()) > 64:
        raise section.error("name", "must be 1..64 bytes of UTF-8")
    return str(name)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a configuration file."""
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    return parse_config(text, file)
