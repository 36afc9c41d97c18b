"""http, tcp and exec probes against real local servers and processes."""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from hasup._errors import ConfigError
from hasup._httpserver import serve_http
from hasup._section import Section, Source
from hasup.probes.base import ProbeOptions
from hasup.probes.exec import ExecProbe
from hasup.probes.http import HttpProbe, parse_status_set
from hasup.probes.tcp import TcpProbe

from .._support import wait_until

OPTIONS = ProbeOptions(name="t", timeout=2.0)


def section(toml: str) -> Section:
    text = "[[probe]]\n" + toml
    data = tomllib.loads(text)["probe"][0]
    return Section(data, path="probe[0]", source=Source("hasup.toml", text))


def free_port() -> int:
    """A port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- http: real server ----------------------------------------------------------------------


@pytest.fixture
async def web() -> AsyncIterator[str]:
    async def handler(
        method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        code = int(target.strip("/").split("?")[0] or 200)
        return code, "text/html", b"<h1>NeuronEX dashboard</h1>"

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1:0", handler)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_http_ok(web: str) -> None:
    probe = HttpProbe(OPTIONS, url=f"{web}/200")
    outcome = await probe.check()
    await probe.aclose()
    assert outcome.ok, outcome.detail
    assert outcome.detail == "HTTP 200"


@pytest.mark.anyio
@pytest.mark.parametrize("code", [401, 403, 500, 503])
async def test_http_error_status_is_unhealthy(web: str, code: int) -> None:
    # The keepalived recipe's `curl URL` (no -f) counts these as healthy.
    probe = HttpProbe(OPTIONS, url=f"{web}/{code}")
    outcome = await probe.check()
    await probe.aclose()
    assert not outcome.ok
    assert outcome.detail == f"HTTP {code}, expected 200-399"


@pytest.mark.anyio
async def test_http_body_contains(web: str) -> None:
    good = HttpProbe(OPTIONS, url=f"{web}/200", body_contains="NeuronEX")
    bad = HttpProbe(OPTIONS, url=f"{web}/200", body_contains="Grafana")
    assert (await good.check()).ok
    outcome = await bad.check()
    assert not outcome.ok
    assert "does not contain 'Grafana'" in outcome.detail
    await good.aclose()
    await bad.aclose()


@pytest.mark.anyio
async def test_http_connection_refused() -> None:
    probe = HttpProbe(OPTIONS, url=f"http://127.0.0.1:{free_port()}/")
    outcome = await probe.check()
    await probe.aclose()
    assert not outcome.ok
    assert outcome.detail.startswith("ConnectError")


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers (a hung service)."""

    async def hold(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_http_hung_service_fails_within_timeout(silent_server: int) -> None:
    probe = HttpProbe(ProbeOptions(name="t", timeout=0.2), url=f"http://127.0.0.1:{silent_server}/")
    with anyio.fail_after(2):
        outcome = await probe.check()
    await probe.aclose()
    assert not outcome.ok


# -- http: status logic against a real server that answers any status ---------------------


@pytest.fixture
async def echo_web() -> AsyncIterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    """``GET /<status>`` answers that status (with a Location header); records requests."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def handler(
        method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        seen.append((method, target, dict(headers)))
        return int(target.strip("/").split("?")[0]), "text/plain", b"body"

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1:0", handler)
        yield f"http://127.0.0.1:{port}", seen
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "expect", "ok"),
    [
        (200, "200", True),
        (204, "200", False),
        (204, "200-299", True),
        (302, "200-299", False),
        (302, "200-399", True),  # the default: redirects are not followed, a 3xx is judged
        (404, "200-399", False),
        (204, "200,204,300-399", True),
        (301, "200,204,300-399", True),
        (201, "200,204,300-399", False),
        (401, "401", True),
    ],
)
async def test_status_ranges(
    echo_web: tuple[str, list[tuple[str, str, dict[str, str]]]], status: int, expect: str, ok: bool
) -> None:
    web, seen = echo_web
    probe = HttpProbe(OPTIONS, url=f"{web}/{status}", expect_status=expect)
    assert (await probe.check()).ok is ok
    assert len(seen) == 1  # a 3xx was not followed
    await probe.aclose()


@pytest.mark.anyio
async def test_method_and_headers_are_sent(echo_web: tuple[str, list[tuple[str, str, dict[str, str]]]]) -> None:
    web, seen = echo_web
    probe = HttpProbe(OPTIONS, url=f"{web}/200?x=1", method="POST", headers={"Authorization": "Bearer t"})
    assert (await probe.check()).ok
    method, target, headers = seen[0]
    assert (method, target) == ("POST", "/200?x=1")
    assert headers["authorization"] == "Bearer t"
    assert headers["user-agent"] == "hasup-probe"
    await probe.aclose()


@pytest.mark.anyio
async def test_http_body_charset_and_garbage(echo_web: tuple[str, list[tuple[str, str, dict[str, str]]]]) -> None:
    # A server that answers garbage is unhealthy with a reason, never an exception.
    async def garbage(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"SPLAT\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, garbage)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        outcome = await HttpProbe(OPTIONS, url=f"http://127.0.0.1:{port}/").check()
        tg.cancel_scope.cancel()
    assert not outcome.ok
    assert outcome.detail.startswith("RemoteProtocolError")


def test_parse_status_set() -> None:
    assert parse_status_set("200") == ((200, 200),)
    assert parse_status_set("200-299") == ((200, 299),)
    assert parse_status_set("200, 204 ,300-399") == ((200, 200), (204, 204), (300, 399))
    for bad in ("", "ok", "200-", "-200", "99", "600", "300-200", "200;204"):
        with pytest.raises(ValueError, match=r"status|range"):
            parse_status_set(bad)


def test_http_from_config() -> None:
    probe = HttpProbe.from_config(
        section('url = "http://127.0.0.1:8085/"\nexpect_status = "200-299"\nheaders = { X-Probe = "1" }'),
        OPTIONS,
    )
    assert probe.status_ranges == ((200, 299),)
    assert probe.headers == {"X-Probe": "1"}
    assert HttpProbe.from_config(section('url = "http://a/"\nexpect_status = 204'), OPTIONS).status_ok(204)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('url = "ftp://a/"', "url: 'ftp://a/' is not an http"),
        ('url = "http://a/"\nexpect_status = "2xx"', "expect_status: '2xx' is not a status list"),
        ('url = "http://a/"\nexpect_status = ["200"]', "expect_status: expected a string"),
        ('url = "http://a/"\nmethod = "DELETE"', "method: must be one of"),
        ('url = "http://a/"\nheaders = { X = 1 }', "headers.X: expected a string"),
        ('url = "http://a/"\nexpect = "200"', "expect: unknown key"),
        ("expect_status = '200'", "url: is required"),
    ],
)
def test_http_config_errors(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HttpProbe.from_config(section(toml), OPTIONS)


# -- tcp --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tcp_ok_and_refused(web: str) -> None:
    port = int(web.rsplit(":", 1)[1])
    outcome = await TcpProbe(OPTIONS, address=f"127.0.0.1:{port}").check()
    assert outcome.ok, outcome.detail
    outcome = await TcpProbe(OPTIONS, address=f"127.0.0.1:{free_port()}").check()
    assert not outcome.ok
    assert "cannot connect" in outcome.detail


@pytest.mark.anyio
async def test_tcp_ipv6() -> None:
    try:
        listener = await anyio.create_tcp_listener(local_host="::1", local_port=0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        probe = TcpProbe(OPTIONS, address=f"[::1]:{port}")
        assert probe.describe() == f"tcp probe 't': [::1]:{port}"
        assert (await probe.check()).ok


def test_tcp_config() -> None:
    assert TcpProbe.from_config(section('address = "[::1]:80"'), OPTIONS).host == "::1"
    with pytest.raises(ConfigError, match="address: 'localhost': missing ':port'"):
        TcpProbe.from_config(section('address = "localhost"'), OPTIONS)
    with pytest.raises(ConfigError, match="port 0 cannot be probed"):
        TcpProbe.from_config(section('address = "127.0.0.1:0"'), OPTIONS)


# -- exec -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exec_exit_status() -> None:
    assert (await ExecProbe(OPTIONS, command=["true"]).check()).ok
    outcome = await ExecProbe(OPTIONS, command=["sh", "-c", "echo broken >&2; exit 4"]).check()
    assert not outcome.ok
    assert outcome.detail == "exit status 4: broken"


@pytest.mark.anyio
async def test_exec_missing_program() -> None:
    outcome = await ExecProbe(OPTIONS, command=["/nonexistent/check"]).check()
    assert not outcome.ok
    assert "cannot run '/nonexistent/check'" in outcome.detail


@pytest.mark.anyio
async def test_exec_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # The probe's shell starts a child and waits: on timeout both must die.
    script = f"sleep 30 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"
    probe = ExecProbe(ProbeOptions(name="t", timeout=0.5), command=["sh", "-c", script])
    with anyio.fail_after(5):
        outcome = await probe.check()
    assert not outcome.ok
    assert outcome.detail.startswith("timed out after 0.5s")
    child = int(pidfile.read_text())
    wait_until(lambda: not _alive(child), timeout=5, what="the probe's child to be killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_exec_config() -> None:
    assert ExecProbe.from_config(section('command = ["pg_isready", "-q"]'), OPTIONS).command == (
        "pg_isready",
        "-q",
    )
    with pytest.raises(ConfigError, match="not shell strings"):
        ExecProbe.from_config(section('command = "pg_isready -q"'), OPTIONS)


def test_os_is_linux() -> None:
    # The process-group checks above read /proc.
    assert os.path.isdir("/proc/self")
