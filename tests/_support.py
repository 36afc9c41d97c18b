"""Helpers shared by the test tiers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_component(what: str, reason: str) -> NoReturn:
    """Skip locally, fail under ``CI=true``: a real-component test never passes silently."""
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.01, what: str = "") -> None:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds.

    For synchronous tests that watch another process: this is waiting for an event with
    a deadline, not sleeping to synchronise.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what or predicate!r}")
        time.sleep(interval)
