"""The status endpoint's page and operator commands, on the handler itself (fast tier;
tests/test_page_browser.py drives the same in a real Chromium against real nodes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from hasup import ConfigError
from hasup._statusapi import PAGE_ASSETS, StatusAPI
from hasup.config import load_config
from hasup.protocol import State
from tests.test_config import GOOD, write

pytestmark = pytest.mark.anyio

SECRET = bytes(range(16))


class FakeControls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.maintenance = False
        self.group_maintenance = False
        self.state = State.MASTER

    def snapshot(self) -> dict[str, Any]:
        return {"node": "edge-a", "state": "MASTER", "peers": []}

    def render_metrics(self) -> bytes:
        return b""

    async def switchover(self, target: str | None = None) -> str:
        self.calls.append(("switchover", target))
        return "edge-b"

    async def set_maintenance(self, on: bool) -> None:
        self.calls.append(("maintenance", on))
        self.maintenance = on

    async def set_group_maintenance(self, on: bool) -> None:
        self.calls.append(("group-maintenance", on))
        self.group_maintenance = on

    async def forget_peer(self, name: str) -> None:
        self.calls.append(("forget-peer", name))

    async def sync_now(self) -> list[int]:
        return []

    async def confirm_stopped(self) -> None:
        self.calls.append(("confirm-stopped", None))


def request(token: str | None, **extra: str) -> dict[str, str]:
    headers = {"host": "127.0.0.1:9105", ":peer": "192.0.2.7:40000", **extra}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def test_page_assets_are_served() -> None:
    api = StatusAPI(FakeControls())
    for path in PAGE_ASSETS:
        status, kind, body = await api.handle("GET", path, {}, b"")
        assert status == 200 and body
    status, kind, body = await api.handle("GET", "/", {}, b"")
    assert kind.startswith("text/html") and b'<script src="page.js"' in body
    status, kind, _ = await api.handle("GET", "/page.js", {}, b"")
    assert kind.startswith("text/javascript")
    assert (await api.handle("GET", "/nothing.js", {}, b""))[0] == 404


@pytest.mark.parametrize("supplied", [SECRET.hex(), SECRET.hex().upper()])
async def test_operator_token_runs_a_command_and_logs_who(supplied: str, caplog: pytest.LogCaptureFixture) -> None:
    controls = FakeControls()
    api = StatusAPI(controls, "local-token", SECRET)
    with caplog.at_level(logging.WARNING, logger="hasup"):
        status, _, body = await api.handle(
            "POST", "/control/maintenance", request(supplied, **{"x-hasup-operator": "alice"}), b'{"on": true}'
        )
    assert status == 200 and json.loads(body) == {"ok": True, "maintenance": True, "group_maintenance": False}
    assert controls.calls == [("maintenance", True)]
    assert "by 'alice' with the operator token, from 192.0.2.7:40000" in caplog.text


async def test_control_token_still_works_and_check_says_which() -> None:
    api = StatusAPI(FakeControls(), "local-token", SECRET)
    status, _, body = await api.handle("POST", "/control/check", request("local-token"), b"")
    assert status == 200 and json.loads(body)["as"] == "control token"


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET.hex()[:-2], "local-token"])
async def test_wrong_or_missing_token_is_refused(token: str | None, caplog: pytest.LogCaptureFixture) -> None:
    controls = FakeControls()
    api = StatusAPI(controls, None, SECRET)  # no local control token: "local-token" is wrong too
    with caplog.at_level(logging.WARNING, logger="hasup"):
        status, _, _ = await api.handle("POST", "/control/switchover", request(token), b"{}")
    assert status == 403 and controls.calls == []
    assert "refused: missing or wrong token, from 192.0.2.7:40000" in caplog.text


async def test_no_operator_token_configured_refuses_everything_but_the_control_token() -> None:
    api = StatusAPI(FakeControls(), "local-token")
    assert (await api.handle("POST", "/control/check", request(SECRET.hex()), b""))[0] == 403
    assert (await api.handle("POST", "/control/check", request("local-token"), b""))[0] == 200


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:9105", True),
        ("https://127.0.0.1:9105", True),
        ("http://evil.example", False),
        ("http://127.0.0.1:9106", False),
        ("null", False),
    ],
)
async def test_cross_origin_commands_are_refused(origin: str, allowed: bool) -> None:
    controls = FakeControls()
    api = StatusAPI(controls, None, SECRET)
    status, _, _ = await api.handle("POST", "/control/switchover", request(SECRET.hex(), origin=origin), b"{}")
    assert (status == 200) is allowed
    assert (controls.calls == [("switchover", None)]) is allowed


async def test_commands_need_post() -> None:
    api = StatusAPI(FakeControls(), None, SECRET)
    assert (await api.handle("GET", "/control/switchover", request(SECRET.hex()), b""))[0] == 405


def test_operator_token_file_is_read_and_checked(tmp_path: Path) -> None:
    keyfile = tmp_path / "group.key"
    keyfile.write_text("ab" * 32 + "\n")
    keyfile.chmod(0o600)
    token = tmp_path / "operator.token"
    token.write_text(SECRET.hex() + "\n")
    token.chmod(0o600)
    text = GOOD + f'operator_token_file = "{token}"\n'
    assert load_config(write(tmp_path, text, keyfile)).status.operator_token == SECRET
    token.chmod(0o644)
    with pytest.raises(ConfigError, match=r"status.operator_token_file: key file .* readable by group or others"):
        load_config(write(tmp_path, text, keyfile))
    token.chmod(0o600)
    token.write_text("short\n")
    with pytest.raises(ConfigError, match=r"status.operator_token_file: .* at least 16"):
        load_config(write(tmp_path, text, keyfile))


async def test_group_maintenance_command() -> None:
    controls = FakeControls()
    api = StatusAPI(controls, "local-token")
    status, _, body = await api.handle(
        "POST", "/control/maintenance", request("local-token"), b'{"on": true, "group": true}'
    )
    assert status == 200 and json.loads(body)["group_maintenance"] is True
    assert controls.calls == [("group-maintenance", True)]
