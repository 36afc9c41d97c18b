"""Logging set-up of the command line: plain text, JSON lines, or journald priorities."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

__all__ = ["setup_logging"]

#: syslog priorities of sd-daemon(3) prefixes, for stderr captured by journald
_JOURNAL_PRIORITY = {logging.DEBUG: "<7>", logging.INFO: "<6>", logging.WARNING: "<4>", logging.ERROR: "<3>"}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class _JournalFormatter(logging.Formatter):
    """``<priority>message``: journald takes the level from the prefix (sd-daemon(3))
    and adds its own timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = _JOURNAL_PRIORITY.get(record.levelno, "<2>" if record.levelno > logging.ERROR else "<6>")
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def _stderr_is_journal() -> bool:
    """True when stderr is the stream systemd connected to journald (``JOURNAL_STREAM``
    holds its ``device:inode``; a redirected stderr does not match)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif _stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
