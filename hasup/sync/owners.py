"""File owners across machines: numeric ids are mapped by user and group *name*.

Two edge boxes installed from the same image share their ids, but nothing guarantees it:
uid 1001 may be ``neuron`` on one box and ``admin`` on the other. The source therefore
sends, next to its manifest, the names of the ids it uses (:func:`names_for`), and the
standby (when it runs as root, the only case where owners are set at all) maps them
(:class:`OwnerMap`):

* a name known on the standby -> the standby's id for that name;
* a name unknown on the standby -> the owner of the standby's own target directory (never
  an arbitrary local account that happens to have the number);
* an id without a name on the source -> kept as the number (there is nothing else to go by).
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Iterable, Mapping

import attrs

from ._errors import UnsafeSnapshot

__all__ = ["OwnerMap", "Owners", "names_for"]

#: Bound on the names one snapshot may carry (untrusted input).
MAX_NAMES = 4096


@attrs.frozen
class Owners:
    """The names of the numeric ids a snapshot uses (``{id: name}`` per kind)."""

    users: Mapping[int, str] = attrs.field(factory=dict)
    groups: Mapping[int, str] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            "u": {str(k): v for k, v in sorted(self.users.items())},
            "g": {str(k): v for k, v in sorted(self.groups.items())},
        }

    @classmethod
    def from_json(cls, obj: object) -> Owners:
        """Strict decoding of untrusted input; absent (an older source) means no names."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise UnsafeSnapshot("owner names are not an object")
        return cls(_ids(obj.get("u", {})), _ids(obj.get("g", {})))


def _ids(obj: object) -> dict[int, str]:
    if not isinstance(obj, dict) or len(obj) > MAX_NAMES:
        raise UnsafeSnapshot("malformed owner names")
    out: dict[int, str] = {}
    for key, name in obj.items():
        if not isinstance(key, str) or not key.isdigit() or not isinstance(name, str) or not 0 < len(name) <= 256:
            raise UnsafeSnapshot("malformed owner names")
        out[int(key)] = name
    return out


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def names_for(uids: Iterable[int], gids: Iterable[int]) -> Owners:
    """The source side: this machine's names for the ids it is about to send."""
    users = {u: n for u in set(uids) if (n := _user_name(u)) is not None}
    groups = {g: n for g in set(gids) if (n := _group_name(g)) is not None}
    return Owners(users, groups)


def _local_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _local_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class OwnerMap:
    """The standby side: source ids -> local ids (see the module docstring)."""

    def __init__(
        self,
        owners: Owners,
        *,
        fallback: tuple[int, int],
        lookup_user: Callable[[str], int | None] = _local_uid,
        lookup_group: Callable[[str], int | None] = _local_gid,
    ) -> None:
        self._users = {k: _or(lookup_user(v), fallback[0]) for k, v in owners.users.items()}
        self._groups = {k: _or(lookup_group(v), fallback[1]) for k, v in owners.groups.items()}

    def uid(self, uid: int) -> int:
        return self._users.get(uid, uid)

    def gid(self, gid: int) -> int:
        return self._groups.get(gid, gid)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
