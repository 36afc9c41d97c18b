"""The ``command`` backend: manage a service with commands, or run it directly.

Two modes, chosen by the keys of ``[service]``:

* **commands** — ``start``, ``stop`` and (recommended) ``status`` argv lists, e.g. the
  ``systemctl`` or init-script commands of an existing installation. ``status`` follows
  the LSB convention: exit 0 = running, 3 = stopped, anything else = failed.
* **managed process** — ``run = [...]``: hasup spawns the program itself, in its own
  session, and notices its exit the moment it happens (no polling). By default the
  program outlives hasup: its pid is kept in ``pid_file`` and a restarted hasup adopts
  it (ARCHITECTURE §2 rules 6 and 13). ``bind_to_hasup = true`` fences it instead: it
  is SIGKILLed when hasup dies.

Commands are argv lists executed without a shell: nothing in a configuration value is
ever interpreted by ``/bin/sh`` (no quoting bugs, no injection through a file name).
Every command runs in a new session so that a timeout can kill the command *and*
everything it started (its process group).

This module is the public face of the backend; the code lives in

* :mod:`._command_base` — :class:`CommandBackend`: options, validation, and the choice
  of the mode (constructing it gives an instance of the mode's subclass);
* :mod:`._commands` — :class:`CommandsBackend`, the commands mode;
* :mod:`._managed` — :class:`ManagedProcessBackend`, the managed-process mode;
* :mod:`._process` — spawning, process-group kill and output handling, shared by both
  modes and the ``exec`` probe (:func:`run_command`).

Importing this module registers both modes with :class:`CommandBackend`.
"""

from __future__ import annotations

from ._command_base import CommandBackend
from ._commands import CommandsBackend
from ._managed import ManagedProcessBackend
from ._process import CommandResult, run_command

__all__ = ["CommandBackend", "CommandResult", "CommandsBackend", "ManagedProcessBackend", "run_command"]
