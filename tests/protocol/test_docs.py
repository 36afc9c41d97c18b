"""The state diagram in docs/protocol.md is generated from the state table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hasup.protocol import TRANSITIONS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "render_states.py"
DOC = ROOT / "docs" / "protocol.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_protocol_doc_diagram_is_current() -> None:
    result = run("--check", str(DOC))
    assert result.returncode == 0, result.stderr


def test_render_has_every_transition() -> None:
    out = run().stdout
    for (source, event), target in TRANSITIONS.items():
        assert f"{source.name} --> {target.name}: {event.value}" in out


def test_check_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "protocol.md"
    stale.write_text(
        DOC.read_text(encoding="utf-8").replace("FAULT --> BACKUP", "FAULT --> MASTER"), encoding="utf-8"
    )
    result = run("--check", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr
    assert run("--write", str(stale)).returncode == 0
    assert run("--check", str(stale)).returncode == 0
