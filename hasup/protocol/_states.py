"""The state table: every transition a node can make, as data (like h11's ``_state.py``).

``Node`` changes state only through :func:`transition`, so this table is the whole truth;
``docs/render_states.py`` renders it into the diagram in ``docs/protocol.md``.

Rules header (see docs/protocol.md for the full semantics):

* INIT listens one master-down interval (or one advert when it can resume MASTER).
* Only CLAIMING starts the service, and only when no live peer is ACTIVE.
* Only MASTER hands over (RELEASING), and only after the backend confirmed the stop
  does it stop being ACTIVE.
* FAULT is left only for BACKUP, after the hold-down, with the service confirmed stopped.
* STOPPING is final.
"""

from __future__ import annotations

import enum

from .._errors import ProtocolError
from ._enums import State

__all__ = ["TRANSITIONS", "Event", "transition"]


class Event(enum.Enum):
    LISTEN_DONE = "listen done"
    RESUME = "resume running service"
    CLAIM = "claim"
    STARTED = "service started"
    ABORT_CLAIM = "higher claim or master seen"
    RELEASE = "release requested / yield"
    RELEASED = "release complete"
    FAULT = "fault"
    RECOVER = "fault cleared"
    SHUTDOWN = "shutdown"


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.INIT, E.LISTEN_DONE): S.BACKUP,
    (S.INIT, E.RESUME): S.MASTER,
    (S.INIT, E.FAULT): S.FAULT,
    (S.INIT, E.SHUTDOWN): S.STOPPING,
    (S.BACKUP, E.CLAIM): S.CLAIMING,
    (S.BACKUP, E.FAULT): S.FAULT,
    (S.BACKUP, E.SHUTDOWN): S.STOPPING,
    (S.CLAIMING, E.STARTED): S.MASTER,
    (S.CLAIMING, E.ABORT_CLAIM): S.BACKUP,
    (S.CLAIMING, E.FAULT): S.FAULT,
    (S.CLAIMING, E.SHUTDOWN): S.STOPPING,
    (S.MASTER, E.RELEASE): S.RELEASING,
    (S.MASTER, E.FAULT): S.FAULT,
    (S.MASTER, E.SHUTDOWN): S.STOPPING,
    (S.RELEASING, E.RELEASED): S.BACKUP,
    (S.RELEASING, E.FAULT): S.FAULT,
    (S.RELEASING, E.SHUTDOWN): S.STOPPING,
    (S.FAULT, E.RECOVER): S.BACKUP,
    (S.FAULT, E.SHUTDOWN): S.STOPPING,
}


def transition(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; ``ProtocolError`` if the table forbids it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ProtocolError(f"no transition from {state.name} on {event.value!r}") from None
