"""The handover ledger file and ``hasup ledger`` (fast tier: no supervisor)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from hasup._cli import main
from hasup._ledger import LEDGER_FILE, Ledger, format_csv, format_table, read_ledger
from hasup.protocol import Handover


def test_entries_survive_a_restart_and_stay_bounded(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "n2", limit=10)
    for term in range(1, 26):
        ledger.record(Handover(term, "n1" if term % 2 else "n2", "n2" if term % 2 else "n1", 0.25, 0.0))
    lines = (tmp_path / LEDGER_FILE).read_text().splitlines()
    assert len(lines) <= 11  # limit plus a tenth, then rewritten
    again = Ledger(str(tmp_path), "n2", limit=10)
    assert len(again) == 10
    assert [e["term"] for e in again.recent(3)] == [23, 24, 25]
    assert read_ledger(str(tmp_path))[-1] == {
        "time": again.recent(1)[0]["time"],
        "term": 25,
        "previous": "n1",
        "holder": "n2",
        "no_holder": 0.25,
        "two_holders": 0.0,
        "seen_by": "n2",
    }


def test_a_damaged_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text('{"term": 1, "holder": "a"}\nnot json\n{"term": 2, "holder"')
    assert read_ledger(str(tmp_path)) == [{"term": 1, "holder": "a"}]


def test_formats() -> None:
    entries = [{"time": 0, "term": 7, "previous": None, "holder": "n1", "no_holder": 1.5, "two_holders": 0.0}]
    table = format_table(entries)
    assert "1970-01-01 00:00:00" in table and "1.500" in table and " - " in table
    rows = list(csv.DictReader(io.StringIO(format_csv(entries))))
    assert rows == [
        {
            "time": "0",
            "term": "7",
            "previous": "",
            "holder": "n1",
            "no_holder": "1.5",
            "two_holders": "0.0",
            "seen_by": "",
        }
    ]


def _config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = tmp_path / "group.key"
    key.write_text("00" * 32 + "\n")
    key.chmod(0o600)
    path = tmp_path / "hasup.toml"
    path.write_text(
        f"""
[node]
name = "n1"
priority = 100
state_dir = "{state}"

[group]
id = 7
listen = "127.0.0.1:15405"
peers = ["127.0.0.2:15405"]
key_file = "{key}"

[service]
backend = "command"
start = ["true"]
stop = ["true"]
"""
    )
    path.chmod(0o600)
    return path


def test_hasup_ledger_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert main(["ledger", "-c", str(config)]) == 0
    assert "no handover recorded" in capsys.readouterr().out
    ledger = Ledger(str(tmp_path / "state"), "n1")
    ledger.record(Handover(3, "n2", "n1", 0.4, 0.0))
    ledger.record(Handover(4, "n1", "n2", 0.1, 0.05))
    assert main(["ledger", "-c", str(config), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["previous"], e["holder"], e["term"]) for e in entries] == [("n2", "n1", 3), ("n1", "n2", 4)]
    assert main(["ledger", "-c", str(config), "--csv", "--last", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "time,term,previous,holder,no_holder,two_holders,seen_by"
    assert out[1].split(",")[1:] == ["4", "n1", "n2", "0.1", "0.05", "n1"]
    assert main(["ledger", "-c", str(config)]) == 0
    assert "n1" in capsys.readouterr().out
