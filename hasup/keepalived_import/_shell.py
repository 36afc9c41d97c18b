"""A lexer for the simple shell scripts keepalived runs: keywords, operators and simple
commands, line by line (the scripts are read, never executed)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Sym", "command_name", "lex_line", "lex_script", "word_set"]


def word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_OPERATORS = {";", "&&", "||", "|", "&", ";;", "(", ")", "|&"}
_KEYWORDS = word_set("if then else elif fi case esac for while until do done function { } ! [[ ]]")


@dataclass
class Sym:
    """A piece of a shell script: a keyword, an operator or a simple command."""

    kind: str  # "kw" | "op" | "cmd"
    text: str
    words: list[str]
    line: int


def _is_redirect(tok: str) -> bool:
    return bool(tok) and set(tok) <= set("<>&|") and ("<" in tok or ">" in tok)


def lex_line(line: str, number: int) -> list[Sym]:
    """Split one line of a simple shell script into keywords, operators and commands.
    Redirections are dropped. Raises ValueError when the line cannot be lexed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    syms: list[Sym] = []
    words: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if _is_redirect(tok):
            if words and words[-1].isdigit():
                words.pop()  # the fd of "2>&1"
            i += 1  # the target
            continue
        if tok in _OPERATORS:
            if words:
                syms.append(Sym("cmd", " ".join(words), words, number))
                words = []
            syms.append(Sym("op", tok, [], number))
            continue
        if not words and tok in _KEYWORDS:
            syms.append(Sym("kw", tok, [], number))
            continue
        words.append(tok)
    if words:
        syms.append(Sym("cmd", " ".join(words), words, number))
    syms.append(Sym("op", ";", [], number))
    return syms


def lex_script(text: str) -> tuple[list[Sym], list[int]]:
    """All lines of a script; returns the symbols and the numbers of lines that failed to lex."""
    syms: list[Sym] = []
    bad: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            syms.extend(lex_line(line, number))
        except ValueError:
            bad.append(number)
    return syms, bad


def command_name(words: Sequence[str]) -> tuple[str, list[str]]:
    """Strip ``sudo``, ``exec``, ``env``, ``VAR=value`` and the directory of the program."""
    rest = list(words)
    while rest:
        head = os.path.basename(rest[0])
        if head in ("sudo", "exec", "env", "command", "nohup"):
            rest = rest[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[1:]
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
            rest = rest[1:]
        else:
            return head, rest[1:]
    return "", []
