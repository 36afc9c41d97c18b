"""Watch which node serves: one persistent sampler process per node namespace.

Each sampler polls its own node's service (HTTP GET ``http://ADDR:PORT/``, "serves" =
status 200) every ``interval`` (10 ms by default) and, optionally, the node's hasup
``/status`` in a second thread; it writes one line per sample to a pipe. All
timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for the whole
system), so samples of different namespaces and the fault marks the test takes in
its own process are directly comparable.

:class:`Timeline` turns the samples into intervals and answers the questions the
chaos tests and the benchmark ask: takeover latency, dual-active and no-service
intervals, state flaps.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .testbed import Node, Testbed

__all__ = ["Interval", "Observer", "StatusSample", "Timeline"]

_SAMPLER_SRC = r"""
import json, socket, sys, threading, time

name, addr, port, interval, status_addr, status_interval = sys.argv[1:7]
port, interval, status_interval = int(port), float(interval), float(status_interval)
out = sys.stdout
lock = threading.Lock()
REQ = b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n"


def emit(line):
    with lock:
        out.write(line + "\n")
        out.flush()


def get(host, p, path, timeout):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, p))
        s.sendall(b"GET " + path + b" HTTP/1.0\r\nHost: probe\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return buf
            buf += chunk
            if path == b"/" and b"\r\n" in buf:
                return buf
    finally:
        s.close()


def status_loop():
    host, p = status_addr.rsplit(":", 1)
    nxt = time.monotonic()
    while True:
        t = time.monotonic()
        try:
            raw = get(host, int(p), b"/status", 0.5)
            body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
            emit("T %.6f %s" % (t, json.dumps({k: body.get(k) for k in ("state", "service", "term")})))
        except Exception as exc:
            emit("T %.6f %s" % (t, json.dumps({"state": None, "error": type(exc).__name__})))
        nxt += status_interval
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()


if status_addr != "-":
    threading.Thread(target=status_loop, daemon=True).start()
emit("R %.6f" % time.monotonic())
nxt = time.monotonic()
timeout = 0.3  # generous: a slow answer under load is not an outage
while True:
    t = time.monotonic()
    try:
        first = get(addr, port, b"/", timeout).split(b"\r\n", 1)[0]
        up = first.split(b" ")[1:2] == [b"200"]
    except OSError:
        up = False
    emit("S %.6f %d" % (t, up))
    nxt += interval
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
    else:
        nxt = time.monotonic()
"""


@dataclass(frozen=True)
class Interval:
    start: float
    end: float

    @property
    def length(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class StatusSample:
    t: float
    state: str | None
    service: str | None = None
    term: int | None = None


@dataclass
class Timeline:
    """Samples of one observation: ``up[node] = [(t, up), ...]`` plus /status and marks."""

    up: dict[str, list[tuple[float, bool]]]
    status: dict[str, list[StatusSample]] = field(default_factory=dict)
    marks: list[tuple[float, str]] = field(default_factory=list)
    interval: float = 0.01

    @property
    def nodes(self) -> list[str]:
        return sorted(self.up)

    @property
    def start(self) -> float:
        return min((s[0][0] for s in self.up.values() if s), default=0.0)

    @property
    def end(self) -> float:
        return max((s[-1][0] for s in self.up.values() if s), default=0.0)

    def mark_time(self, label: str) -> float:
        for t, name in self.marks:
            if name == label:
                return t
        raise KeyError(label)

    def intervals(self, node: str, t0: float = float("-inf"), t1: float = float("inf")) -> list[Interval]:
        """Where ``node`` served: [first 200 sample, first failed sample after it), clipped to [t0, t1]."""
        out: list[Interval] = []
        begin: float | None = None
        samples = self.up.get(node, [])
        for t, ok in samples:
            if ok and begin is None:
                begin = t
            elif not ok and begin is not None:
                out.append(Interval(begin, t))
                begin = None
        if begin is not None and samples:
            # still serving at its last sample: presume it lasts until the newest sample of any node
            out.append(Interval(begin, max(samples[-1][0], self.end)))
        clipped = [Interval(max(i.start, t0), min(i.end, t1)) for i in out]
        return [i for i in clipped if i.end > i.start or (i.end == i.start and t0 <= i.start <= t1)]

    def serving_at(self, t: float) -> set[str]:
        out = set()
        for n, samples in self.up.items():
            ivs = self.intervals(n)
            if any(i.start <= t < i.end for i in ivs):
                out.add(n)
            elif t >= self.end and samples and samples[-1][1] and ivs and ivs[-1].start <= t:
                out.add(n)  # still serving at the newest sample
        return out

    def first_up(self, after: float, nodes: Iterable[str] | None = None) -> tuple[float, str] | None:
        """First sample at or after ``after`` where one of ``nodes`` (default all) served."""
        best: tuple[float, str] | None = None
        for n in nodes if nodes is not None else self.up:
            for t, ok in self.up.get(n, []):
                if t >= after and ok:
                    if best is None or t < best[0]:
                        best = (t, n)
                    break
        return best

    def first_down(self, after: float, node: str) -> float | None:
        for t, ok in self.up.get(node, []):
            if t >= after and not ok:
                return t
        return None

    def only(self, node: str, t0: float | None = None, t1: float | None = None) -> list[Interval]:
        """Intervals where ``node`` and no other node served."""
        lo = self.start if t0 is None else t0
        hi = self.end if t1 is None else t1
        others = sorted((i for n in self.up if n != node for i in self.intervals(n, lo, hi)), key=lambda i: i.start)
        out: list[Interval] = []
        for iv in self.intervals(node, lo, hi):
            cur = iv.start
            for o in others:
                if o.end <= cur or o.start >= iv.end:
                    continue
                if o.start > cur:
                    out.append(Interval(cur, o.start))
                cur = max(cur, o.end)
            if cur < iv.end:
                out.append(Interval(cur, iv.end))
        return out

    def settled(self, after: float, node: str) -> float | None:
        """Start of the final period (after ``after``) in which only ``node`` serves, up to the end."""
        periods = self.only(node, after, self.end)
        if periods and periods[-1].end >= self.end:
            return periods[-1].start
        return None

    def _coverage(self, t0: float, t1: float) -> list[tuple[float, int]]:
        """Piecewise count of serving nodes over [t0, t1]: [(t, count from t on), ...]."""
        events: list[tuple[float, int]] = []
        for n in self.up:
            for i in self.intervals(n, t0, t1):
                events.append((i.start, 1))
                events.append((i.end, -1))
        events.sort()
        out = [(t0, 0)]
        count = 0
        for t, d in events:
            count += d
            if out and out[-1][0] == t:
                out[-1] = (t, count)
            else:
                out.append((t, count))
        return out

    def _where(self, t0: float, t1: float, pred: Callable[[int], bool]) -> list[Interval]:
        cov = self._coverage(t0, t1)
        out: list[Interval] = []
        for (t, c), nxt in zip(cov, [*cov[1:], (t1, 0)], strict=True):
            if pred(c) and nxt[0] > t:
                if out and out[-1].end == t:
                    out[-1] = Interval(out[-1].start, nxt[0])
                else:
                    out.append(Interval(t, nxt[0]))
        return out

    def dual_active(self, t0: float | None = None, t1: float | None = None) -> list[Interval]:
        """Intervals where two or more services answered."""
        return self._where(self.start if t0 is None else t0, self.end if t1 is None else t1, lambda c: c >= 2)

    def no_service(self, t0: float | None = None, t1: float | None = None) -> list[Interval]:
        """Intervals where no service answered."""
        return self._where(self.start if t0 is None else t0, self.end if t1 is None else t1, lambda c: c == 0)

    def states(self, node: str, t0: float = float("-inf"), t1: float = float("inf")) -> list[tuple[float, str | None]]:
        """State changes seen in ``/status`` (first sample of each new state)."""
        out: list[tuple[float, str | None]] = []
        for s in self.status.get(node, []):
            if t0 <= s.t <= t1 and (not out or out[-1][1] != s.state):
                out.append((s.t, s.state))
        return out

    def flaps(self, node: str, t0: float = float("-inf"), t1: float = float("inf")) -> int:
        """How many times ``node``'s state changed in [t0, t1] (unreachable status counts as a state)."""
        return max(0, len(self.states(node, t0, t1)) - 1)

    def service_flaps(self, node: str, t0: float = float("-inf"), t1: float = float("inf")) -> int:
        """How many times ``node``'s service went from serving to not serving or back."""
        changes = 0
        last: bool | None = None
        for t, ok in self.up.get(node, []):
            if t0 <= t <= t1:
                if last is not None and ok != last:
                    changes += 1
                last = ok
        return changes

    def to_json(self) -> dict[str, object]:
        return {
            "interval": self.interval,
            "marks": self.marks,
            "up": {n: [[round(t, 6), int(ok)] for t, ok in s] for n, s in self.up.items()},
            "status": {n: [[s.t, s.state, s.service, s.term] for s in ss] for n, ss in self.status.items()},
        }


class Observer:
    """Persistent samplers in every node namespace of a testbed.

    ``with Observer(bed) as obs: ...`` starts them and waits for the first sample of
    each; :meth:`mark` records a labelled instant (e.g. the moment a fault is
    injected); :meth:`timeline` is a snapshot of everything seen so far.
    """

    def __init__(
        self,
        bed: Testbed,
        *,
        port: int = 8085,
        interval: float = 0.01,
        status_port: int | None = None,
        status_interval: float = 0.05,
        nodes: Sequence[Node] | None = None,
    ) -> None:
        self.bed = bed
        self.port = port
        self.interval = interval
        self.status_port = status_port
        self.status_interval = status_interval
        self.nodes = list(nodes if nodes is not None else bed.nodes)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._up: dict[str, list[tuple[float, bool]]] = {n.name: [] for n in self.nodes}
        self._status: dict[str, list[StatusSample]] = {n.name: [] for n in self.nodes}
        self._marks: list[tuple[float, str]] = []
        self._ready: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._running = False

    def __enter__(self) -> Observer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        self._running = True
        for node in self.nodes:
            status = f"127.0.0.1:{self.status_port}" if self.status_port else "-"
            proc = node.spawn(
                "observer",
                [
                    sys.executable,
                    "-I",
                    "-u",
                    "-c",
                    _SAMPLER_SRC,
                    node.name,
                    node.addr,
                    str(self.port),
                    str(self.interval),
                    status,
                    str(self.status_interval),
                ],
                stdout_pipe=True,
            )
            thread = threading.Thread(target=self._reader, args=(node.name, proc.stdout), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self._up[n.name] for n in self.nodes):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("observer samplers did not start")
                self._cond.wait(left)

    def _reader(self, name: str, stream: object) -> None:
        assert hasattr(stream, "readline")
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip("\n")
            kind, _, rest = line.partition(" ")
            try:
                if kind == "S":
                    t, ok = rest.split()
                    with self._cond:
                        self._up[name].append((float(t), ok == "1"))
                        self._cond.notify_all()
                elif kind == "T":
                    t, _, body = rest.partition(" ")
                    data = json.loads(body)
                    with self._cond:
                        self._status[name].append(
                            StatusSample(float(t), data.get("state"), data.get("service"), data.get("term"))
                        )
                        self._cond.notify_all()
            except ValueError:
                continue

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for node in self.nodes:
            node.kill("observer")
            with contextlib.suppress(Exception):
                node.wait_exit("observer", 5)
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def mark(self, label: str) -> float:
        """Record ``label`` at the current instant and return that instant."""
        t = time.monotonic()
        with self._lock:
            self._marks.append((t, label))
        return t

    def timeline(self) -> Timeline:
        with self._lock:
            return Timeline(
                up={n: list(s) for n, s in self._up.items()},
                status={n: list(s) for n, s in self._status.items()},
                marks=list(self._marks),
                interval=self.interval,
            )

    def clear(self) -> None:
        """Forget what was sampled so far (keeps the samplers running)."""
        with self._lock:
            for s in self._up.values():
                s.clear()
            for ss in self._status.values():
                ss.clear()
            self._marks.clear()

    # -- live view (for waiting on events) ------------------------------------------------
    def serving(self) -> set[str]:
        """Nodes whose latest sample answered."""
        with self._lock:
            return {n for n, s in self._up.items() if s and s[-1][1]}

    def serving_since(self, t: float) -> set[str]:
        """Nodes whose every sample since ``t`` answered (and that have one)."""
        with self._lock:
            out = set()
            for n, s in self._up.items():
                recent = [ok for ts, ok in s if ts >= t]
                if recent and all(recent):
                    out.add(n)
            return out

    def state(self, node: str) -> StatusSample | None:
        with self._lock:
            s = self._status.get(node)
            return s[-1] if s else None

    def wait(self, predicate: Callable[[], bool], *, timeout: float, what: str = "") -> float:
        """Block until ``predicate()`` holds (re-checked on every sample); return the instant."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what or predicate!r}")
            with self._cond:
                self._cond.wait(min(left, 0.1))

    def wait_serving(self, expected: set[str], *, timeout: float, hold: float = 0.0) -> float:
        """Wait until exactly ``expected`` serve (for at least ``hold`` seconds); return when it began."""
        start: list[float | None] = [None]

        def pred() -> bool:
            now_serving = self.serving()
            if now_serving != expected:
                start[0] = None
                return False
            if start[0] is None:
                start[0] = time.monotonic()
            return time.monotonic() - start[0] >= hold

        self.wait(pred, timeout=timeout + hold, what=f"exactly {sorted(expected)} serving")
        assert start[0] is not None
        return start[0]
