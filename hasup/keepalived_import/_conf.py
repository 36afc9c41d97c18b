"""keepalived.conf's language: a tokenizer, a parser (blocks, ``include`` globs) and the
readers of typed values (numbers, IP addresses)."""

from __future__ import annotations

import glob
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError

__all__ = ["Loc", "Parser", "Stmt", "Token", "error", "read_ip", "read_number", "tokenize"]

_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Loc:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Token:
    text: str
    loc: Loc
    quoted: bool = False

    @property
    def is_newline(self) -> bool:
        return self.text == "\n" and not self.quoted

    def is_punct(self, char: str) -> bool:
        return self.text == char and not self.quoted


def error(loc: Loc, message: str) -> ConfigError:
    return ConfigError(message, file=loc.file, line=loc.line)


def tokenize(text: str, file: str) -> list[Token]:
    """keepalived's lexical rules: whitespace separated words, ``{``/``}`` on their own,
    ``"quoted strings"`` (on one line), ``!`` or ``#`` at the start of a word comment out
    the rest of the line. Each line ends with a newline token."""
    tokens: list[Token] = []
    for number, line in enumerate(text.splitlines(), start=1):
        loc = Loc(file, number)
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if ch.isspace():
                i += 1
            elif ch in "!#":
                break
            elif ch in "{}":
                tokens.append(Token(ch, loc))
                i += 1
            elif ch == '"':
                end = line.find('"', i + 1)
                if end < 0:
                    raise error(loc, "unterminated quoted string (missing closing '\"')")
                tokens.append(Token(line[i + 1 : end], loc, quoted=True))
                i = end + 1
            else:
                start = i
                while i < n and not line[i].isspace() and line[i] not in "{}":
                    i += 1
                tokens.append(Token(line[start:i], loc))
        tokens.append(Token("\n", loc))
    return tokens


# =============================================================================== parser
@dataclass
class Stmt:
    """One keepalived statement: ``keyword args...`` with an optional ``{ block }``."""

    key: Token
    args: list[Token]
    block: list[Stmt] | None
    ended_by_newline: bool = True

    @property
    def keyword(self) -> str:
        return self.key.text

    @property
    def loc(self) -> Loc:
        return self.key.loc

    def value(self, what: str = "a value") -> Token:
        if not self.args:
            raise error(self.loc, f"{self.keyword}: missing value (expected {what})")
        return self.args[0]

    def no_block(self) -> None:
        if self.block is not None:
            raise error(self.loc, f"{self.keyword}: unexpected '{{' block")

    def need_block(self) -> list[Stmt]:
        if self.block is None:
            raise error(self.loc, f"{self.keyword}: expected a '{{ ... }}' block")
        return self.block


class Parser:
    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.files: list[str] = []

    def parse_file(self, path: str, *, stack: tuple[str, ...] = (), at: Loc | None = None) -> list[Stmt]:
        real = os.path.realpath(path)
        if real in stack:
            raise error(at or Loc(path, 1), f"include loop: {path} is already being read")
        if len(stack) >= _MAX_INCLUDE_DEPTH:
            raise error(at or Loc(path, 1), f"includes nested deeper than {_MAX_INCLUDE_DEPTH}")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            if at is not None:
                raise error(at, f"include: {path}: file not found") from None
            raise ConfigError("file not found", file=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            if at is not None:
                raise error(at, f"include: {path}: cannot read: {exc}") from None
            raise ConfigError(f"cannot read: {exc}", file=path) from None
        self.files.append(path)
        tokens = tokenize(text, path)
        stmts, _ = self._block(tokens, 0, None, (*stack, real))
        return stmts

    def _block(
        self, tokens: list[Token], pos: int, opener: Stmt | None, stack: tuple[str, ...]
    ) -> tuple[list[Stmt], int]:
        stmts: list[Stmt] = []
        words: list[Token] = []
        last_flushed_by_newline = False

        def flush(by_newline: bool) -> None:
            nonlocal words, last_flushed_by_newline
            if words:
                stmt = Stmt(words[0], words[1:], None, ended_by_newline=by_newline)
                self._add(stmts, stmt, stack)
                words = []
                last_flushed_by_newline = by_newline

        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok.is_newline:
                flush(True)
                continue
            if tok.is_punct("{"):
                if words:
                    header = Stmt(words[0], words[1:], [])
                    words = []
                elif stmts and stmts[-1].block is None and last_flushed_by_newline and stmts[-1].keyword != "include":
                    header = stmts.pop()  # "vrrp_instance VI_1" newline "{"
                else:
                    raise error(tok.loc, "'{' without a keyword before it")
                header.block, pos = self._block(tokens, pos, header, stack)
                stmts.append(header)
                last_flushed_by_newline = False
                continue
            if tok.is_punct("}"):
                flush(False)
                if opener is None:
                    raise error(tok.loc, "unbalanced '}': no block is open here")
                return stmts, pos
            words.append(tok)
        flush(True)
        if opener is not None:
            raise error(opener.loc, f"unbalanced '{{': the block of '{opener.keyword}' opened here is never closed")
        return stmts, pos

    def _add(self, stmts: list[Stmt], stmt: Stmt, stack: tuple[str, ...]) -> None:
        if stmt.keyword != "include" or stmt.key.quoted:
            stmts.append(stmt)
            return
        pattern = stmt.value("a file name or glob").text
        base = os.path.dirname(stmt.loc.file)
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        if glob.has_magic(full):
            matches = sorted(glob.glob(full))
            if not matches:
                self.warnings.append(f"{stmt.loc}: include {pattern}: no file matches; nothing included")
        else:
            matches = [full]
        for path in matches:
            stmts.extend(self.parse_file(path, stack=stack, at=stmt.loc))


def read_number(stmt: Stmt, *, integer: bool, lo: float, hi: float) -> float:
    tok = stmt.value("a number")
    try:
        value = float(int(tok.text)) if integer else float(tok.text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise error(tok.loc, f"{stmt.keyword}: expected {kind}, got {tok.text!r}") from None
    if not lo <= value <= hi:
        raise error(tok.loc, f"{stmt.keyword}: must be between {lo:g} and {hi:g}, got {tok.text}")
    return value


def read_ip(tok: Token, what: str) -> str:
    try:
        return str(ipaddress.ip_address(tok.text.split("%")[0]))
    except ValueError:
        raise error(tok.loc, f"{what}: {tok.text!r} is not an IP address") from None
