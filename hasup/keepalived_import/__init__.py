"""``hasup import-keepalived``: turn a keepalived.conf (and its notify scripts) into a hasup.toml.

The importer reads keepalived's configuration language with a real tokenizer and
parser (comments ``!``/``#``, braces, quoted strings, ``include`` globs), picks one
``vrrp_instance`` and writes an equivalent, commented hasup.toml:

- ``notify_*`` scripts that run ``systemctl start|stop|restart X`` or
  ``docker start|stop X`` (in the notify line itself or inside the script file, read
  line by line and never executed) become the systemd / docker backend for X;
- a ``curl`` check becomes an ``http`` probe with real status handling;
- each address of ``virtual_ipaddress`` (and ``virtual_ipaddress_excluded``) becomes a
  ``[[vip]]`` table, with the ``garp_*`` announcement settings;
- anything else is kept as a ``command`` backend, an ``exec`` probe or a ``[[notify]]``
  hook, and listed as a warning with the keepalived line number;
- the recipe's known traps are reported with what hasup does instead.

Nothing is executed and nothing but the configuration and the scripts it names is read.

Modules, one per stage: ``_conf`` (tokenizer, parser), ``_shell`` (the script lexer),
``_recognize`` (systemctl/service/docker and curl calls), ``_probes`` (vrrp_script →
[[probe]]), ``_service`` (notify scripts → [service], [[notify]]), ``_vips``
(virtual_ipaddress → [[vip]]), ``_convert`` (the instance → hasup.toml), ``_toml``
(TOML text), ``_context`` (results, warnings, traps), ``_cli`` (``hasup import-keepalived``).
"""

from __future__ import annotations

from ._cli import _cmd_import
from ._context import ImportResult, Trap
from ._convert import convert

__all__ = ["ImportResult", "Trap", "_cmd_import", "convert"]
