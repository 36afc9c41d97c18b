"""``hasup import-keepalived`` (the argument parser is defined in ``hasup._cli``)."""

from __future__ import annotations

import argparse
import os
import sys

from .._errors import ConfigError
from ._convert import convert

__all__ = ["_cmd_import"]


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        result = convert(args.path, instance=args.instance)
    except ConfigError as exc:
        print(f"hasup: {exc}", file=sys.stderr)
        return 2
    for trap in result.traps:
        print(f"trap: {trap}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output is None or args.output == "-":
        sys.stdout.write(result.toml)
        return 0
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.output, flags, 0o644)
    except FileExistsError:
        print(f"hasup: {args.output} exists; use --force to overwrite it", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hasup: cannot create {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(result.toml)
    print(
        f"wrote {args.output} (vrrp_instance {result.instance}); check it with `hasup check -c {args.output}`",
        file=sys.stderr,
    )
    return 0
