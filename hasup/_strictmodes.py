"""Refuse files and directories that someone other than hasup's user could change,
and secrets that others could read (as sshd's ``StrictModes`` and PostgreSQL's key
file rules do).

hasup runs as root and acts on what these hold: the configuration says which
commands to run, the state directory holds the persisted term and the control token,
the key files are the group's secret. Each function returns the problem as one
sentence, or ``None``; callers turn it into a :class:`~hasup.ConfigError` naming the
key. Rules (``trusted`` = owned by root or by the user hasup runs as):

* a file hasup trusts: trusted owner, not writable by group or others, and its
  directory not writable by group or others unless sticky (``/tmp``-like);
* a directory hasup writes (``state_dir``): the same, and the directory itself;
* a secret: a trusted regular file; owned by hasup's user it must be ``0600`` or
  stricter, owned by root (hasup running as another user) ``0640`` (PostgreSQL's
  rule: a root-owned key may be shared with a group such as ``ssl-cert``).
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ._errors import ConfigError
from ._section import Source

if TYPE_CHECKING:
    from .config import Config

__all__ = ["check_run_files", "directory_problem", "file_problem", "secret_problem"]

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH


def _owner_problem(path: str, st: os.stat_result) -> str | None:
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        return f"{path} is owned by uid {st.st_uid}, not by root or uid {euid} (hasup's user)"
    return None


def _writable_problem(path: str, st: os.stat_result, what: str) -> str | None:
    if st.st_mode & _WRITABLE:
        mode = stat.S_IMODE(st.st_mode)
        return f"{what} {path} is writable by group or others (mode {mode:04o}); chmod go-w it"
    return None


def _parent_problem(path: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(parent)
    except OSError:
        return None  # the caller reports the file itself
    if st.st_mode & _WRITABLE and not st.st_mode & stat.S_ISVTX:
        return (
            f"directory {parent} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"anyone could replace {os.path.basename(path)}"
        )
    return _owner_problem(parent, st)


def file_problem(path: str) -> str | None:
    """A file hasup trusts (its configuration): see the module rules."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    return _owner_problem(path, st) or _writable_problem(path, st, "file") or _parent_problem(path)


def directory_problem(path: str) -> str | None:
    """A directory hasup writes into (``state_dir``); ``None`` if it does not exist yet
    (hasup creates it with mode 0700)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    return _owner_problem(path, st) or _writable_problem(path, st, "directory") or _parent_problem(path)


def secret_problem(path: str, st: os.stat_result | None = None) -> str | None:
    """A key or password file: see the module rules."""
    try:
        st = st or os.stat(path)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    problem = _owner_problem(path, st)
    if problem:
        return problem
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o640 if st.st_uid == 0 and os.geteuid() != 0 else 0o600
    if mode & 0o077 & ~allowed:
        return f"{path} is accessible to group or others (mode {mode:04o}); chmod {allowed:o} it"
    return _parent_problem(path)


def check_run_files(config: Config) -> None:
    """Before ``hasup run`` acts on ``config``: its file and ``node.state_dir``."""
    problem = file_problem(config.file)
    if problem:
        raise ConfigError(problem, file=config.file)
    problem = directory_problem(config.node.state_dir)
    if problem:
        line = Source(config.file, config.text).locate("node.state_dir")
        raise ConfigError(problem, file=config.file, key="node.state_dir", line=line)
