"""``[[sync]]`` tables."""

from __future__ import annotations

import pytest

from hasup._errors import ConfigError
from hasup._section import Section, Source
from hasup.sync import NEURONEX_EXCLUDES, SyncSettings
from hasup.sync.snapshot import Generation, is_excluded, link_escapes


def section(data: dict[str, object]) -> Section:
    return Section(data, path="sync[0]", source=Source("hasup.toml"))


def test_defaults_and_preset() -> None:
    s = SyncSettings.from_section(
        section({"path": "/opt/neuronex/data/", "preset": "neuronex", "exclude": ["tmp/*"]}),
        default_host="10.0.0.1",
    )
    assert s.path == "/opt/neuronex/data"
    assert s.listen == ("10.0.0.1", 5406)
    assert s.interval == 30.0
    assert s.exclude == (*NEURONEX_EXCLUDES, "tmp/*")
    assert s.max_bytes is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"path": "relative/dir"}, "absolute"),
        ({"path": "/"}, "absolute"),
        ({"path": "/d", "exclude": ["/abs"]}, "relative"),
        ({"path": "/d", "interval": 5}, "duration"),
        ({"path": "/d", "max_bytes": 0}, "between"),
        ({"path": "/d", "listen": "host:notaport"}, "listen"),
        ({"path": "/d", "typo": 1}, "unknown key"),
    ],
)
def test_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyncSettings.from_section(section(data))


def test_exclude_matching() -> None:
    assert is_excluded("neuron/a.lic", NEURONEX_EXCLUDES)
    assert is_excluded("neuron/logs/x/y.txt", NEURONEX_EXCLUDES)
    assert is_excluded("ekuiper/log", NEURONEX_EXCLUDES)
    assert not is_excluded("neuron/sqlite.db", NEURONEX_EXCLUDES)
    assert not is_excluded("neuron/plugins.json", NEURONEX_EXCLUDES)


def test_link_escapes() -> None:
    assert not link_escapes("a/b", "../c")
    assert link_escapes("a/b", "../../c")
    assert link_escapes("a", "/etc")
    assert not link_escapes("uploads", "ekuiper/uploads")


def test_generation_wire_value() -> None:
    gen = Generation(42, "ab" * 32)
    assert Generation.prefix_from_wire(gen.to_wire()) == (42, "ab" * 8)
