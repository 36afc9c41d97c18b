"""The status page in a real headless Chromium (Debian's ``chromium``, driven over the
DevTools protocol) against two real ``hasup run`` processes on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._support import missing_component, wait_until
from tests.test_cli_run import Node, Sampler, answers, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with a fresh profile, one page, driven over CDP."""

    def __init__(self, tmp: Path) -> None:
        try:
            import websocket  # websocket-client
        except ImportError:
            missing_component("websocket-client", "pip install -e '.[dev]'")
        if CHROMIUM is None:
            missing_component("chromium", "apt-get install chromium (scripts/test.sh does)")
        profile = tmp / "chromium-profile"
        profile.mkdir()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        wait_until(port_file.exists, timeout=30, what="chromium's DevTools port")
        wait_until(lambda: len(port_file.read_text().splitlines()) >= 2, timeout=5, what="DevToolsActivePort")
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.load(r)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=10, suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    def members(self) -> dict[str, str]:
        """What the page shows: node name -> state."""
        rows = self.eval(
            "JSON.stringify([...document.querySelectorAll('#members tbody tr')]"
            ".map(r => [r.dataset.node, r.dataset.state]))"
        )
        return dict(json.loads(rows)) if rows else {}

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of ``selector``."""
        box = json.loads(
            self.eval(
                f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                " const r = e.getBoundingClientRect(); return JSON.stringify([r.x + r.width / 2, r.y + r.height / 2]); })()"
            )
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.click(selector)
        self.call("Input.insertText", text=text)

    def text(self, selector: str) -> str:
        """``selector``'s text ("" while the page is still loading)."""
        return str(self.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def service_pid(node: Node) -> int:
    """The pid of ``node``'s managed ``http.server`` (a descendant of its hasup)."""
    assert node.proc is not None
    todo = [node.proc.pid]
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"http.server" in cmdline and str(node.http).encode() in cmdline:
                return pid
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    raise AssertionError(f"no service process under {node.name}'s hasup")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


OPERATOR_TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    subprocess.run(
        [sys.executable, "-m", "hasup", "keygen", str(tmp_path / "group.key")], check=True, capture_output=True
    )
    token = tmp_path / "operator.token"
    token.write_text(OPERATOR_TOKEN + "\n")
    token.chmod(0o600)
    extra = f'operator_token_file = "{token}"\n'  # appended to [status]
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    a, b = Node(tmp_path, "edge-a", 100, ua, ub, extra), Node(tmp_path, "edge-b", 90, ub, ua, extra)
    try:
        yield a, b
    finally:
        for n in (a, b):
            n.stop()
        for n in (a, b):
            if n.log.exists():
                sys.stdout.write(f"--- {n.name} log ---\n{n.log.read_text()[-3000:]}\n")


def post(node: Node, command: str, token: str, origin: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.status_port}/control/{command}", data=b"{}", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def start_pair(a: Node, b: Node) -> None:
    """Start both nodes and wait for the steady state: a MASTER and serving, b BACKUP."""
    a.start()
    b.start()
    wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="a MASTER, b BACKUP")
    wait_until(lambda: answers(a.http), timeout=10, what="a's service")


@pytest.mark.slow
def test_page_shows_both_nodes_and_a_failover_within_a_second(
    pair: tuple[Node, Node], browser: Browser, tmp_path: Path
) -> None:
    a, b = pair
    start_pair(a, b)
    # a phone-sized viewport: the page must be readable there
    browser.call("Emulation.setDeviceMetricsOverride", width=412, height=900, deviceScaleFactor=1, mobile=True)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"http://127.0.0.1:{b.status_port}/")
    wait_until(
        lambda: browser.members() == {"edge-b": "BACKUP", "edge-a": "MASTER"},
        timeout=10,
        what="the page lists both nodes",
    )
    assert browser.eval("document.getElementById('holder').textContent") == "edge-a"
    # every resource came from the node itself (CSP forbids the rest; nothing was blocked)
    assert browser.eval("document.getElementById('conn').className") == ""

    # failover: kill the master's service; b's /status and the page are watched together
    os.kill(service_pid(a), signal.SIGKILL)
    t_kill = time.monotonic()
    t_status = t_page = None
    deadline = t_kill + 15
    while time.monotonic() < deadline and (t_status is None or t_page is None):
        now = time.monotonic()
        if t_status is None and b.state() == "MASTER":
            t_status = now
        if t_page is None and browser.members().get("edge-b") == "MASTER":
            t_page = time.monotonic()
        time.sleep(0.005)  # sampling period of the watch loop, not a synchronisation
    assert t_status is not None, "b never became MASTER"
    assert t_page is not None, "the page never showed b as MASTER"
    latency = t_page - t_status
    sys.stdout.write(
        f"\npage: kill->status MASTER {t_status - t_kill:.3f} s, status->page {latency:.3f} s, "
        f"kill->page {t_page - t_kill:.3f} s\n"
    )
    assert latency < 1.0, f"the page showed the failover {latency:.3f} s after /status"
    wait_until(
        lambda: browser.eval("document.querySelectorAll('#moves tbody tr').length") >= 2,
        timeout=5,
        what="the move in the timeline",
    )
    shot = tmp_path / "status-page.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("HASUP_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["HASUP_SCREENSHOT_DIR"]) / "status-page.png")


def test_page_assets_are_served_with_a_strict_policy(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    a.start()
    wait_until(lambda: a.state() in ("BACKUP", "CLAIMING", "MASTER"), timeout=20, what="a running")
    weight = 0
    for path, kind in (("/", "text/html"), ("/page.js", "text/javascript"), ("/page.css", "text/css")):
        with urllib.request.urlopen(f"http://127.0.0.1:{a.status_port}{path}", timeout=5) as r:
            body = r.read()
            assert r.headers["content-type"].startswith(kind)
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
        weight += len(body)
        assert b"http://" not in body and b"https://" not in body, f"{path} refers to another origin"
        assert b"<script>" not in body, "no inline script"
    sys.stdout.write(f"\npage weight: {weight} bytes (HTML+JS+CSS, uncompressed)\n")
    assert weight < 16384


@pytest.mark.slow
def test_switchover_clicked_on_the_page_moves_the_service_with_no_overlap(
    pair: tuple[Node, Node], browser: Browser, tmp_path: Path
) -> None:
    a, b = pair
    start_pair(a, b)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"http://127.0.0.1:{a.status_port}/")
    wait_until(lambda: browser.members().get("edge-a") == "MASTER", timeout=10, what="the page shows a MASTER")
    assert browser.eval("document.getElementById('buttons').hidden") is True, "actions need a login first"

    # a wrong token is refused, and nothing is offered
    browser.type_into("#op-name", "mallory")
    browser.type_into("#op-token", "not-the-token")
    browser.click("#login-btn")
    wait_until(lambda: "refused" in browser.text("#action-result"), timeout=5, what="wrong token refused")
    assert browser.eval("document.getElementById('buttons').hidden") is True
    wait_until(lambda: "refused: missing or wrong token" in a.log.read_text(), timeout=5, what="refusal logged")
    # the right token from another site's page (CSRF) is refused too; without Origin (CLI) it works
    assert post(a, "check", OPERATOR_TOKEN, origin="http://evil.example") == 403
    assert post(a, "check", OPERATOR_TOKEN) == 200
    assert post(a, "check", "0" * 32) == 403

    # log in with the operator token, click "switch over": b takes the service, never both
    browser.eval("document.getElementById('op-name').value = ''")
    browser.type_into("#op-name", "alice")
    browser.type_into("#op-token", OPERATOR_TOKEN)
    browser.click("#login-btn")
    wait_until(lambda: "logged in as alice" in browser.text("#action-result"), timeout=5, what="login")
    sampler = Sampler([a, b])
    sampler.start()
    try:
        wait_until(lambda: len(sampler.samples) > 5, timeout=5, what="sampler running")
        browser.click("#buttons button[data-cmd=switchover]")
        wait_until(
            lambda: b.state() == "MASTER" and answers(b.http) and not answers(a.http), timeout=15, what="b serves"
        )
        wait_until(lambda: browser.members().get("edge-b") == "MASTER", timeout=2, what="the page shows b MASTER")
        wait_until(lambda: len(sampler.samples) > 5 + 10, timeout=5, what="samples after the move")
    finally:
        sampler.running = False
        sampler.join()
    assert sampler.both_active() == [], "two services answered at the same moment"
    assert any(up == {"edge-a"} for _, up in sampler.samples) and any(up == {"edge-b"} for _, up in sampler.samples)
    assert "switch over: done" in browser.text("#action-result")
    log = a.log.read_text()
    assert "operator command switchover {} by 'alice' with the operator token, from 127.0.0.1:" in log
    browser.call("Emulation.setDeviceMetricsOverride", width=800, height=760, deviceScaleFactor=1, mobile=False)
    browser.eval("window.scrollTo(0, 0)")
    shot = tmp_path / "status-page-actions.png"
    browser.screenshot(shot)
    if os.environ.get("HASUP_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["HASUP_SCREENSHOT_DIR"]) / "status-page-actions.png")


@pytest.mark.slow
def test_node_maintenance_survives_a_restart_of_both_nodes(
    pair: tuple[Node, Node], browser: Browser, tmp_path: Path
) -> None:
    a, b = pair
    a.start()
    b.start()
    wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="a MASTER, b BACKUP")
    on = subprocess.run(
        [sys.executable, "-m", "hasup", "maintenance", "on", "-c", str(b.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert on.returncode == 0, on.stderr
    assert b.status().get("maintenance") is True
    saved = json.loads((tmp_path / "state-edge-b" / "state.json").read_text())
    assert saved["maintenance"] is True
    # restart both hasup processes (SIGTERM: a resigns, its service stops)
    for n in (a, b):
        assert n.proc is not None
        n.proc.send_signal(signal.SIGTERM)
    for n in (a, b):
        assert n.proc is not None and n.proc.wait(15) == 0
    a.start()
    b.start()
    wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="the pair is back")
    assert b.status().get("maintenance") is True, "b's maintenance was forgotten at restart"
    assert a.status().get("maintenance") is False
    # both pages show it (a's from b's heartbeats' MAINTENANCE flag)
    row = "document.querySelector('#members tr[data-node=\"edge-b\"]')?.textContent"
    browser.call("Page.navigate", url=f"http://127.0.0.1:{b.status_port}/")
    wait_until(lambda: "maintenance" in str(browser.eval(row) or ""), timeout=10, what="maintenance on b's page")
    browser.call("Page.navigate", url=f"http://127.0.0.1:{a.status_port}/")
    wait_until(lambda: "maintenance" in str(browser.eval(row) or ""), timeout=10, what="maintenance on a's page")
    peers = a.status()["peers"]
    assert isinstance(peers, list)
    assert [p["maintenance"] for p in peers if p["name"] == "edge-b"] == [True]
    # b in maintenance never claims: a's node dies, nobody serves
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    deadline = time.monotonic() + 3.0  # 3 s = 10 master-down intervals at advert 100 ms
    while time.monotonic() < deadline:
        assert b.state() == "BACKUP" and not answers(b.http), "b claimed while in maintenance"
        time.sleep(0.05)  # sampling period of the check, not a synchronisation
    off = subprocess.run(
        [sys.executable, "-m", "hasup", "maintenance", "off", "-c", str(b.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert off.returncode == 0, off.stderr
    wait_until(lambda: b.state() == "MASTER" and answers(b.http), timeout=10, what="b claims after maintenance off")


def hasup_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hasup", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_group_maintenance_survives_a_restart_of_both_nodes(
    pair: tuple[Node, Node], browser: Browser, tmp_path: Path
) -> None:
    a, b = pair
    start_pair(a, b)
    on = hasup_cli("maintenance", "on", "--group", "-c", str(a.config))
    assert on.returncode == 0, on.stderr
    assert "group maintenance on" in on.stdout
    wait_until(lambda: b.status().get("group_maintenance") is True, timeout=5, what="b learns group maintenance")
    for n in (a, b):
        assert n.proc is not None
        n.proc.send_signal(signal.SIGKILL)  # hard restart; a's service dies with it (bind_to_hasup)
    for n in (a, b):
        assert n.proc is not None
        n.proc.wait(10)
    b.start()
    a.start()
    wait_until(lambda: a.state() and b.state(), timeout=20, what="both answer again")
    for n in (a, b):
        assert n.status().get("group_maintenance") is True, f"{n.name} forgot group maintenance at restart"
    assert "GROUP MAINTENANCE" in hasup_cli("status", "-c", str(b.config)).stdout
    # frozen: nobody claims, though nobody serves
    deadline = time.monotonic() + 3.0  # 3 s = 10 master-down intervals at advert 100 ms
    while time.monotonic() < deadline:
        assert "MASTER" not in (a.state(), b.state()), "a node claimed during group maintenance"
        time.sleep(0.05)  # sampling period of the check, not a synchronisation
    browser.call("Page.navigate", url=f"http://127.0.0.1:{b.status_port}/")
    wait_until(lambda: "GROUP MAINTENANCE" in browser.text("#maintenance"), timeout=10, what="the page shows it")
    off = hasup_cli("maintenance", "off", "--group", "-c", str(b.config))
    assert off.returncode == 0, off.stderr
    wait_until(lambda: a.state() == "MASTER" and answers(a.http), timeout=15, what="a claims after group maintenance")
    assert a.status().get("group_maintenance") is False
