"""A client of the virtual IP: what users of the service see during a failover.

One sampler process in the testbed's switch namespace (its bridge gets an address in
the VIP's subnet) runs two clients of ``VIP:8085``:

- **short requests**: ``GET /`` every 10 ms over a new TCP connection each time, with a
  200 ms timeout, noting which node answered (the stand-in serves the node's name) and
  which MAC the client's ARP table holds for the VIP (``/proc/net/arp``, per network
  namespace);
- **a long-lived connection**: one HTTP/1.1 keep-alive connection (the stand-in serves
  HTTP/1.1) carrying ``GET /`` every 10 ms with a 1 s read timeout, as a dashboard or a
  northbound client holds one; on any error it notes how the request ended (``reset``,
  ``closed`` by the server, read ``timeout``, or ``noconnect`` when a new connection
  could not be opened within 200 ms) and opens a new connection.

:class:`ClientView` turns the samples into the client-visible figures: the longest gap
without an answer, the failed requests, when the ARP entry first pointed at a given
MAC, and for the long-lived connection its longest gap and how many requests hung
until the timeout (a connection to a node that no longer answers) instead of being
reset at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .testbed import Testbed

__all__ = ["ClientSampler", "ClientView"]

_SRC = r"""
import socket, sys, threading, time
vip, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
req = b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n"

def arp():
    try:
        with open("/proc/net/arp") as f:
            for line in f.read().splitlines()[1:]:
                p = line.split()
                if p[0] == vip and p[2] != "0x0":
                    return p[3]
    except OSError:
        pass
    return "-"

def parse(data):
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return head, body, int(v)
    return head, body, 0

def long_lived():
    conn = None
    while True:
        t = time.monotonic()
        who, how = "-", "ok"
        try:
            if conn is None:
                try:
                    conn = socket.create_connection((vip, port), timeout=0.2)
                except OSError as exc:
                    raise ConnectionError("noconnect") from exc
                conn.settimeout(1.0)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
            data = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    raise EOFError
                data += chunk
                head, body, length = parse(data)
                if b"\r\n\r\n" in data and len(body) >= length:
                    break
            if b" 200 " in head.split(b"\r\n", 1)[0]:
                who = body[:length].strip().decode(errors="replace") or "?"
        except (OSError, EOFError) as exc:
            how = "noconnect" if conn is None else {EOFError: "closed", ConnectionResetError: "reset", ConnectionRefusedError: "refused",
                   socket.timeout: "timeout", BrokenPipeError: "reset"}.get(type(exc), "error")
            if conn is not None:
                conn.close()
            conn = None
        print(f"L {t:.6f} {who} {how}", flush=True)
        time.sleep(max(0.0, t + interval - time.monotonic()))

threading.Thread(target=long_lived, daemon=True).start()
print("READY", flush=True)
while True:
    t = time.monotonic()
    who = "-"
    try:
        with socket.create_connection((vip, port), timeout=0.2) as s:
            s.settimeout(0.2)
            s.sendall(req)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        if b" 200 " in data.split(b"\r\n", 1)[0]:
            who = data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode(errors="replace") or "?"
    except OSError:
        pass
    print(f"C {t:.6f} {who} {arp()}", flush=True)
    time.sleep(max(0.0, t + interval - time.monotonic()))
"""


@dataclass(frozen=True)
class ClientView:
    """Samples ``(time, answering node or None, ARP MAC or None)``, oldest first."""

    samples: tuple[tuple[float, str | None, str | None], ...]
    #: the long-lived connection: ``(time, answering node or None, how)``, where how is
    #: ``ok``, ``reset``, ``closed``, ``timeout`` (read), ``noconnect`` or ``error``
    conn: tuple[tuple[float, str | None, str], ...] = ()

    def window(self, t0: float, t1: float) -> list[tuple[float, str | None, str | None]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]

    def longest_gap(self, t0: float, t1: float) -> float:
        """Longest time without an answer in [t0, t1]: from the last answer before a
        run of failures to the first answer after it."""
        return _longest_gap(self.samples, t0, t1)

    def conn_gap(self, t0: float, t1: float) -> float:
        """:meth:`longest_gap` of the long-lived connection (reconnections included)."""
        return _longest_gap(self.conn, t0, t1)

    def conn_ends(self, t0: float, t1: float) -> dict[str, int]:
        """How the long-lived connection's failed requests in [t0, t1] ended."""
        out: dict[str, int] = {}
        for t, _, how in self.conn:
            if t0 <= t <= t1 and how != "ok":
                out[how] = out.get(how, 0) + 1
        return out

    def failures(self, t0: float, t1: float) -> int:
        return sum(1 for _, who, _ in self.window(t0, t1) if who is None)

    def first_mac(self, mac: str, after: float) -> float | None:
        return next((t for t, _, m in self.samples if t >= after and m == mac), None)

    def first_answer(self, node: str, after: float) -> float | None:
        return next((t for t, who, _ in self.samples if t >= after and who == node), None)


def _longest_gap(samples: Sequence[tuple[float, str | None, str | None]], t0: float, t1: float) -> float:
    last_ok: float | None = None
    gap = 0.0
    for t, who, _ in samples:
        if t > t1:
            break
        if who is not None:
            if last_ok is not None and t >= t0:
                gap = max(gap, t - last_ok)
            last_ok = t
    return gap


class ClientSampler:
    """The client in ``bed``'s switch namespace, at ``address`` (with prefix)."""

    def __init__(self, bed: Testbed, vip: str, address: str, port: int = 8085, interval: float = 0.01) -> None:
        self.bed, self.vip, self.address, self.port, self.interval = bed, vip, address, port, interval
        self._samples: list[tuple[float, str | None, str | None]] = []
        self._conn: list[tuple[float, str | None, str]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClientSampler:
        subprocess.run(["ip", "-n", self.bed.sw_ns, "addr", "add", self.address, "dev", "br0"], check=True)
        argv = [sys.executable, "-c", _SRC, self.vip, str(self.port), str(self.interval)]
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.bed.sw_ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != b"READY":
            raise RuntimeError("the client sampler did not start")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in iter(self._proc.stdout.readline, b""):
            parts = raw.decode(errors="replace").split()
            if len(parts) == 4 and parts[0] == "C":
                _, t, who, mac = parts
                with self._lock:
                    self._samples.append((float(t), None if who == "-" else who, None if mac == "-" else mac))
            elif len(parts) == 4 and parts[0] == "L":
                _, t, who, how = parts
                with self._lock:
                    self._conn.append((float(t), None if who == "-" else who, how))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["ip", "-n", self.bed.sw_ns, "addr", "del", self.address, "dev", "br0"], check=True)

    def view(self) -> ClientView:
        with self._lock:
            return ClientView(tuple(self._samples), tuple(self._conn))

    def answering(self) -> str | None:
        with self._lock:
            return self._samples[-1][1] if self._samples else None

    def wait_answer(self, node: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.answering() != node:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client is not answered by {node}")
            time.sleep(0.02)
        return time.monotonic()
