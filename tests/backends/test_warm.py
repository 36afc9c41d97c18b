"""The generic ``warm`` backend: promote/demote/state/ready argv commands (real processes)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from hasup import ConfigError, ServiceFailed
from hasup._section import Section, Source
from hasup.backends import ServiceStatus
from hasup.backends.warm import WarmCommandBackend

pytestmark = pytest.mark.anyio

PY = sys.executable
CTL = """
import os, sys
state, verb = sys.argv[1], sys.argv[2]
if verb == "promote":
    open(state, "w").write(os.environ.get("HASUP_TERM", "?"))
elif verb == "demote":
    if os.path.exists(state + ".stuck"):
        sys.exit(0)
    if os.path.exists(state):
        os.unlink(state)
elif verb == "state":
    sys.exit(0 if os.path.exists(state) else 3)
elif verb == "ready":
    sys.exit(1 if os.path.exists(state + ".down") else 0)
"""


def backend(tmp_path: Path, **kw: object) -> tuple[WarmCommandBackend, Path]:
    script = tmp_path / "ctl.py"
    script.write_text(CTL)
    state = tmp_path / "promoted"
    argv = {verb: [PY, str(script), str(state), verb] for verb in ("promote", "demote", "state", "ready")}
    return WarmCommandBackend(**argv, poll_interval=0.01, **kw), state  # type: ignore[arg-type]


async def test_promote_demote_and_the_term(tmp_path: Path) -> None:
    b, state = backend(tmp_path)
    assert b.warm
    assert await b.status() is ServiceStatus.STOPPED
    assert await b.readiness() == (True, "")
    await b.start(term=9)
    assert state.read_text() == "9"
    assert await b.status() is ServiceStatus.RUNNING
    await b.stop()
    assert await b.status() is ServiceStatus.STOPPED
    assert await b.check() == []


def touch(path: str) -> None:
    Path(path).touch()


async def test_not_ready_and_unconfirmed_demotion(tmp_path: Path) -> None:
    b, state = backend(tmp_path, stop_timeout=1.0)
    touch(str(state) + ".down")
    ready, detail = await b.readiness()
    assert not ready and "ready command exited with status 1" in detail
    await b.start(term=1)
    touch(str(state) + ".stuck")
    with pytest.raises(ServiceFailed, match="did not report standby"):
        await b.stop()


async def test_failed_promotion(tmp_path: Path) -> None:
    b, _ = backend(tmp_path)
    b.promote_argv = (PY, "-c", "raise SystemExit(4)")
    with pytest.raises(ServiceFailed, match="promote command exited with status 4"):
        await b.start(term=1)


def test_config(tmp_path: Path) -> None:
    text = '[service]\nbackend = "warm"\npromote = ["a"]\ndemote = ["b"]\nstate = ["c"]\n'
    path = tmp_path / "hasup.toml"
    path.write_text(text)
    section = Section(tomllib.loads(text)["service"], path="service", source=Source(str(path), text))
    with pytest.raises(ConfigError, match=r"service\.ready"):
        WarmCommandBackend.from_config(section)
    text += 'ready = "curl x"\n'
    section = Section(tomllib.loads(text)["service"], path="service", source=Source(str(path), text))
    with pytest.raises(ConfigError, match=r"service\.ready.*line 6"):
        WarmCommandBackend.from_config(section)
