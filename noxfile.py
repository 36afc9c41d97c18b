"""Developer sessions: ``nox -s tests lint typecheck bench docs chaos``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite (real systemd, dockerd and namespaces need root on Debian 12)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The long multi-node chaos matrix (marked slow; also part of `tests`)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "tests/cluster", "-m", "netns or slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "hasup", "tests", "bench", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "hasup")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print figures (see docs/benchmarks.md for recorded results)."""
    session.install("-e", ".[dev]")
    session.run("python", "bench/sim_heartbeat.py")
    session.run("python", "bench/supervisor_failover.py")
    session.run("python", "bench/failover.py", "--runs", "5")
    session.run("python", "bench/continuity.py", "--runs", "3")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[dev]", "mkdocs")
    session.run("python", "docs/render_states.py", "--check", "docs/protocol.md")
    session.run("mkdocs", "build", "--strict")
