"""Helpers shared by the test tiers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest

from hasup import testing

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_component(what: str, reason: str) -> NoReturn:
    """Skip locally, fail under ``CI=true``: a real-component test never passes silently."""
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.01, what: str = "") -> float:
    """:func:`hasup.testing.wait_until`, failing the test (not raising) after ``timeout``.

    For synchronous tests that watch another process: this is waiting for an event with
    a deadline, not sleeping to synchronise. Returns the monotonic time it held.
    """
    try:
        return testing.wait_until(predicate, timeout=timeout, interval=interval, what=what)
    except TimeoutError as exc:
        pytest.fail(str(exc))
