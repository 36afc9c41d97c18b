"""Rise/fall bookkeeping of probe results (pure)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._config import ProbeSpec

__all__ = ["ProbeTracker"]


@attrs.define
class _ProbeState:
    spec: ProbeSpec
    healthy: bool = True
    passes: int = 0
    fails: int = 0
    runs: int = 0

    def record(self, ok: bool) -> None:
        self.runs += 1
        if ok:
            self.passes += 1
            self.fails = 0
            if not self.healthy and self.passes >= self.spec.rise:
                self.healthy = True
        else:
            self.fails += 1
            self.passes = 0
            if self.healthy and self.fails >= self.spec.fall:
                self.healthy = False

    def reset(self) -> None:
        self.healthy = True
        self.passes = self.fails = 0


class ProbeTracker:
    """Health of every configured probe, with ``rise``/``fall`` hysteresis.

    Probes start healthy: ``fall`` consecutive failures make them unhealthy and
    ``rise`` consecutive passes healthy again.
    """

    def __init__(self, specs: Iterable[ProbeSpec]) -> None:
        self._probes = {s.name: _ProbeState(s) for s in specs}

    def spec(self, name: str) -> ProbeSpec:
        return self._probes[name].spec

    def record(self, name: str, ok: bool) -> None:
        probe = self._probes.get(name)
        if probe is not None:
            probe.record(ok)

    def reset_active(self) -> None:
        """A (re)started service gets a fresh count from its active probes."""
        for p in self._probes.values():
            if p.spec.when == "active":
                p.reset()

    def active_failing(self) -> str | None:
        return next((n for n, p in self._probes.items() if p.spec.when == "active" and not p.healthy), None)

    def always_failing(self) -> str | None:
        """A failing ``always`` probe that is neither weighted nor a witness."""
        return next(
            (
                n
                for n, p in self._probes.items()
                if p.spec.when == "always" and p.spec.weight is None and not p.spec.witness and not p.healthy
            ),
            None,
        )

    def always_ok(self) -> bool:
        return self.always_failing() is None

    def witness_failing(self) -> bool:
        return any(p.spec.witness and not p.healthy for p in self._probes.values())

    def weight_adjustment(self) -> int:
        """keepalived semantics: a positive weight counts while passing, a negative one while failing."""
        total = 0
        for p in self._probes.values():
            w = p.spec.weight
            if w is None:
                continue
            if (w > 0 and p.healthy) or (w < 0 and not p.healthy):
                total += w
        return total

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            n: {"healthy": p.healthy, "when": p.spec.when, "runs": p.runs, "fails": p.fails}
            for n, p in self._probes.items()
        }
