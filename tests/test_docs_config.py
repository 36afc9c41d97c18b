"""The TOML examples in the docs must stay valid: the docs cannot drift from the code.

Every ```toml block must be valid TOML. A block whose first line starts with
``# hasup.toml`` is a *complete* configuration and must pass ``parse_config``, with
its key file paths replaced by a real 0600 key file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hasup.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "docs" / "configuration.md",
    ROOT / "docs" / "security.md",
    ROOT / "docs" / "migrating-from-keepalived.md",
    ROOT / "docs" / "operations.md",
    ROOT / "docs" / "sync.md",
    ROOT / "docs" / "coordinator.md",
    ROOT / "docs" / "witness.md",
]
FENCE = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
KEY_PATH = re.compile(r'(\b(?:key_file|file)\s*=\s*)"[^"]*"')


def toml_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def complete(block: str) -> bool:
    return block.lstrip().startswith("# hasup.toml")


ALL = [
    pytest.param(path, line, block, id=f"{path.name}:{line}")
    for path in DOCS
    if path.exists()
    for line, block in toml_blocks(path)
]
COMPLETE = [p for p in ALL if complete(p.values[2])]  # type: ignore[arg-type]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "group.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode() + b"\n")
    os.close(fd)
    return path


def test_configuration_reference_has_complete_examples() -> None:
    names = {p.values[0].name for p in COMPLETE}  # type: ignore[union-attr]
    assert "configuration.md" in names
    assert sum(p.values[0].name == "configuration.md" for p in COMPLETE) >= 3  # type: ignore[union-attr]


@pytest.mark.parametrize(("path", "line", "block"), ALL)
def test_every_toml_block_is_valid_toml(path: Path, line: int, block: str) -> None:
    tomllib.loads(block)


@pytest.mark.parametrize(("path", "line", "block"), COMPLETE)
def test_complete_examples_pass_parse_config(path: Path, line: int, block: str, key_file: Path) -> None:
    text = KEY_PATH.sub(lambda m: f'{m.group(1)}"{key_file}"', block)
    # Every key file becomes the same temp file: one secret under two ids is valid too.
    config = parse_config(text, f"{path.name}:{line}")
    assert config.group.keys.keyed, "documented examples should be authenticated"
    assert config.warnings == ()
    # Build the objects the supervisor would build (no I/O happens in constructors).
    backend = config.make_backend()
    assert len(config.make_probes(backend)) == len(config.probes)


METRIC = re.compile(r"\bhasup_[a-z_]+\b")


def _metric_names() -> set[str]:
    """Every series name ``hasup/_metrics.py`` can expose (with the client's suffixes)."""
    source = (ROOT / "hasup" / "_metrics.py").read_text(encoding="utf-8")
    names: set[str] = set()
    for base in re.findall(r'"(hasup_[a-z_]+)"', source):
        names |= {base} | {base + suffix for suffix in ("_total", "_created", "_bucket", "_sum", "_count")}
    return names


def test_documented_metric_names_exist() -> None:
    known = _metric_names()
    assert {"hasup_state", "hasup_events_total", "hasup_failover_seconds"} <= known
    for path in [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]:
        unknown = set(METRIC.findall(path.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{path.relative_to(ROOT)} names metrics that do not exist: {sorted(unknown)}"


def test_cli_reference_covers_every_command() -> None:
    from hasup._cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"`hasup {name}" in reference, f"docs/cli.md does not document `hasup {name}`"


def test_documented_error_format_matches_code(tmp_path: Path) -> None:
    from hasup import ConfigError

    text = '[node]\nname = "edge-a"\npriority = 300\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "hasup.toml")
    assert str(info.value) == "hasup.toml: node.priority: must be between 1 and 254, got 300 (line 3)"
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "node.priority: must be between 1 and 254, got 300 (line 3)" in reference


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install mkdocs)")
def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    """Broken links, missing nav pages and bad anchors fail the build (``--strict``)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
