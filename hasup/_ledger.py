"""The handover ledger: every change of holder this node saw, kept in its state directory.

The core says which move happened (:class:`~hasup.protocol.Handover`: term, previous
holder, new holder, and the windows with no holder and with two holders as measured on
its inputs); this module only stores it with the wall-clock time it was recorded, so a
historian can mark or backfill the gap (``hasup ledger``, ``/status``, ``/metrics``).

``ledger.jsonl`` holds one JSON object per line, oldest first, at most ``limit``
entries: when it grows past ``limit`` plus a tenth, it is rewritten (temporary file,
fsync, rename) with the newest ``limit``. A damaged line is skipped, never fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from .protocol import Handover

__all__ = [
    "LEDGER_FILE",
    "Ledger",
    "add_ledger_parser",
    "cmd_ledger",
    "describe_handover",
    "format_csv",
    "format_table",
    "read_ledger",
]

LEDGER_FILE = "ledger.jsonl"
FIELDS = ("time", "term", "previous", "holder", "no_holder", "two_holders", "seen_by")


def read_ledger(state_dir: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The entries in ``state_dir`` (the newest ``limit``), oldest first."""
    entries: deque[dict[str, Any]] = deque(maxlen=limit)
    try:
        with open(os.path.join(state_dir, LEDGER_FILE), encoding="utf-8") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        entries.append(entry)
    except FileNotFoundError:
        pass
    return list(entries)


class Ledger:
    """The bounded ledger file of one node."""

    def __init__(self, state_dir: str, node: str, *, limit: int = 1000) -> None:
        self.path = os.path.join(state_dir, LEDGER_FILE)
        self.node = node
        self.limit = limit
        self._recent: deque[dict[str, Any]] = deque(read_ledger(state_dir, limit), maxlen=limit)
        self._lines = len(self._recent)

    def record(self, move: Handover) -> dict[str, Any]:
        """Append ``move`` (with the current wall-clock time); trim the file when due."""
        entry = {
            "time": round(time.time(), 3),
            "term": move.term,
            "previous": move.previous,
            "holder": move.holder,
            "no_holder": move.no_holder,
            "two_holders": move.two_holders,
            "seen_by": self.node,
        }
        self._recent.append(entry)
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        try:
            if self._lines + 1 > self.limit + max(1, self.limit // 10):
                self._rewrite()
            else:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                self._lines += 1
        except OSError:
            pass  # the ledger is an observation: losing a line never stops the supervisor
        return entry

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for entry in self._recent:
                fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self._recent)

    def recent(self, n: int = 10) -> list[dict[str, Any]]:
        return list(self._recent)[-n:]

    def __len__(self) -> int:
        return len(self._recent)


def format_table(entries: Iterable[dict[str, Any]]) -> str:
    rows = [("time (UTC)", "term", "from", "to", "no holder s", "two holders s", "seen by")]
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(e.get("time", 0))))
        rows.append(
            (
                when,
                str(e.get("term", "")),
                str(e.get("previous") or "-"),
                str(e.get("holder", "")),
                f"{float(e.get('no_holder', 0)):.3f}",
                f"{float(e.get('two_holders', 0)):.3f}",
                str(e.get("seen_by", "")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def format_csv(entries: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for e in entries:
        writer.writerow([e.get(f, "") if e.get(f) is not None else "" for f in FIELDS])
    return out.getvalue()


def describe_handover(e: dict[str, Any]) -> str:
    return (
        f"{e.get('previous') or '-'} -> {e.get('holder')} (term {e.get('term')}), "
        f"{e.get('no_holder')} s without a holder, {e.get('two_holders')} s with two"
    )


def cmd_ledger(args: argparse.Namespace) -> int:
    """``hasup ledger``: the ledger from the state directory (hasup may be stopped)."""
    from ._errors import ConfigError
    from .config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hasup: {exc}", file=sys.stderr)
        return 2
    entries = read_ledger(config.node.state_dir, args.last)
    if args.json:
        print(json.dumps(entries, indent=2))
    elif args.csv:
        sys.stdout.write(format_csv(entries))
    elif entries:
        print(format_table(entries))
    else:
        print(f"no handover recorded in {config.node.state_dir}")
    return 0


def add_ledger_parser(sub: Any, config_arg: Any) -> None:
    """The ``hasup ledger`` sub-command (``config_arg`` adds ``-c``)."""
    p = sub.add_parser("ledger", help="every change of holder this node saw, with the gap and the overlap")
    config_arg(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    p.add_argument("--last", type=int, default=None, metavar="N", help="only the newest N entries")
    p.set_defaults(func=cmd_ledger)
