"""``hasup import-keepalived``: turn a keepalived.conf (and its notify scripts) into a hasup.toml.

The importer reads keepalived's configuration language with a real tokenizer and
parser (comments ``!``/``#``, braces, quoted strings, ``include`` globs), picks one
``vrrp_instance`` and writes an equivalent, commented hasup.toml:

- ``notify_*`` scripts that run ``systemctl start|stop|restart X`` or
  ``docker start|stop X`` (in the notify line itself or inside the script file, read
  line by line and never executed) become the systemd / docker backend for X;
- a ``curl`` check becomes an ``http`` probe with real status handling;
- anything else is kept as a ``command`` backend, an ``exec`` probe or a ``[[notify]]``
  hook, and listed as a warning with the keepalived line number;
- the recipe's known traps are reported with what hasup does instead.

Nothing is executed and nothing but the configuration and the scripts it names is read.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ._errors import ConfigError

__all__ = ["ImportResult", "Trap", "convert"]

DEFAULT_PORT = 5405
KEY_FILE = "/etc/hasup/group.key"
_MAX_INCLUDE_DEPTH = 16
_EVENTS = ("MASTER", "BACKUP", "FAULT", "STOP")


# =============================================================================== results
@dataclass(frozen=True)
class Trap:
    """A known problem of the keepalived recipe found in the input, and hasup's answer."""

    code: str
    where: str  # "file:line"
    problem: str
    instead: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem} hasup: {self.instead}"


@dataclass
class ImportResult:
    """The converted configuration: ``toml`` (commented text), ``warnings``, ``traps``."""

    toml: str
    instance: str
    warnings: list[str] = field(default_factory=list)
    traps: list[Trap] = field(default_factory=list)


# =============================================================================== tokenizer
@dataclass(frozen=True)
class _Loc:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class _Token:
    text: str
    loc: _Loc
    quoted: bool = False

    @property
    def is_newline(self) -> bool:
        return self.text == "\n" and not self.quoted

    def is_punct(self, char: str) -> bool:
        return self.text == char and not self.quoted


def _error(loc: _Loc, message: str) -> ConfigError:
    return ConfigError(message, file=loc.file, line=loc.line)


def _tokenize(text: str, file: str) -> list[_Token]:
    """keepalived's lexical rules: whitespace separated words, ``{``/``}`` on their own,
    ``"quoted strings"`` (on one line), ``!`` or ``#`` at the start of a word comment out
    the rest of the line. Each line ends with a newline token."""
    tokens: list[_Token] = []
    for number, line in enumerate(text.splitlines(), start=1):
        loc = _Loc(file, number)
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if ch.isspace():
                i += 1
            elif ch in "!#":
                break
            elif ch in "{}":
                tokens.append(_Token(ch, loc))
                i += 1
            elif ch == '"':
                end = line.find('"', i + 1)
                if end < 0:
                    raise _error(loc, "unterminated quoted string (missing closing '\"')")
                tokens.append(_Token(line[i + 1 : end], loc, quoted=True))
                i = end + 1
            else:
                start = i
                while i < n and not line[i].isspace() and line[i] not in "{}":
                    i += 1
                tokens.append(_Token(line[start:i], loc))
        tokens.append(_Token("\n", loc))
    return tokens


# =============================================================================== parser
@dataclass
class _Stmt:
    """One keepalived statement: ``keyword args...`` with an optional ``{ block }``."""

    key: _Token
    args: list[_Token]
    block: list[_Stmt] | None
    ended_by_newline: bool = True

    @property
    def keyword(self) -> str:
        return self.key.text

    @property
    def loc(self) -> _Loc:
        return self.key.loc

    def value(self, what: str = "a value") -> _Token:
        if not self.args:
            raise _error(self.loc, f"{self.keyword}: missing value (expected {what})")
        return self.args[0]

    def no_block(self) -> None:
        if self.block is not None:
            raise _error(self.loc, f"{self.keyword}: unexpected '{{' block")

    def need_block(self) -> list[_Stmt]:
        if self.block is None:
            raise _error(self.loc, f"{self.keyword}: expected a '{{ ... }}' block")
        return self.block


class _Parser:
    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.files: list[str] = []

    def parse_file(self, path: str, *, stack: tuple[str, ...] = (), at: _Loc | None = None) -> list[_Stmt]:
        real = os.path.realpath(path)
        if real in stack:
            raise _error(at or _Loc(path, 1), f"include loop: {path} is already being read")
        if len(stack) >= _MAX_INCLUDE_DEPTH:
            raise _error(at or _Loc(path, 1), f"includes nested deeper than {_MAX_INCLUDE_DEPTH}")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            if at is not None:
                raise _error(at, f"include: {path}: file not found") from None
            raise ConfigError("file not found", file=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            if at is not None:
                raise _error(at, f"include: {path}: cannot read: {exc}") from None
            raise ConfigError(f"cannot read: {exc}", file=path) from None
        self.files.append(path)
        tokens = _tokenize(text, path)
        stmts, _ = self._block(tokens, 0, None, (*stack, real))
        return stmts

    def _block(
        self, tokens: list[_Token], pos: int, opener: _Stmt | None, stack: tuple[str, ...]
    ) -> tuple[list[_Stmt], int]:
        stmts: list[_Stmt] = []
        words: list[_Token] = []
        last_flushed_by_newline = False

        def flush(by_newline: bool) -> None:
            nonlocal words, last_flushed_by_newline
            if words:
                stmt = _Stmt(words[0], words[1:], None, ended_by_newline=by_newline)
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
                    header = _Stmt(words[0], words[1:], [])
                    words = []
                elif stmts and stmts[-1].block is None and last_flushed_by_newline and stmts[-1].keyword != "include":
                    header = stmts.pop()  # "vrrp_instance VI_1" newline "{"
                else:
                    raise _error(tok.loc, "'{' without a keyword before it")
                header.block, pos = self._block(tokens, pos, header, stack)
                stmts.append(header)
                last_flushed_by_newline = False
                continue
            if tok.is_punct("}"):
                flush(False)
                if opener is None:
                    raise _error(tok.loc, "unbalanced '}': no block is open here")
                return stmts, pos
            words.append(tok)
        flush(True)
        if opener is not None:
            raise _error(opener.loc, f"unbalanced '{{': the block of '{opener.keyword}' opened here is never closed")
        return stmts, pos

    def _add(self, stmts: list[_Stmt], stmt: _Stmt, stack: tuple[str, ...]) -> None:
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


# =============================================================================== shell scripts
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_OPERATORS = {";", "&&", "||", "|", "&", ";;", "(", ")", "|&"}
_KEYWORDS = _words("if then else elif fi case esac for while until do done function { } ! [[ ]]")
_BENIGN = {"echo", "printf", "logger", "true", ":", "sleep", "date"}


@dataclass
class _Sym:
    """A piece of a shell script: a keyword, an operator or a simple command."""

    kind: str  # "kw" | "op" | "cmd"
    text: str
    words: list[str]
    line: int


def _is_redirect(tok: str) -> bool:
    return bool(tok) and set(tok) <= set("<>&|") and ("<" in tok or ">" in tok)


def _lex_line(line: str, number: int) -> list[_Sym]:
    """Split one line of a simple shell script into keywords, operators and commands.
    Redirections are dropped. Raises ValueError when the line cannot be lexed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    syms: list[_Sym] = []
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
                syms.append(_Sym("cmd", " ".join(words), words, number))
                words = []
            syms.append(_Sym("op", tok, [], number))
            continue
        if not words and tok in _KEYWORDS:
            syms.append(_Sym("kw", tok, [], number))
            continue
        words.append(tok)
    if words:
        syms.append(_Sym("cmd", " ".join(words), words, number))
    syms.append(_Sym("op", ";", [], number))
    return syms


def _lex_script(text: str) -> tuple[list[_Sym], list[int]]:
    """All lines of a script; returns the symbols and the numbers of lines that failed to lex."""
    syms: list[_Sym] = []
    bad: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            syms.extend(_lex_line(line, number))
        except ValueError:
            bad.append(number)
    return syms, bad


def _command_name(words: Sequence[str]) -> tuple[str, list[str]]:
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


@dataclass(frozen=True)
class _Action:
    kind: str  # "systemd" | "docker"
    verb: str  # "start" | "stop" | "restart"
    target: str


_SYSTEMCTL_VERBS = {
    "start": "start",
    "stop": "stop",
    "restart": "restart",
    "try-restart": "restart",
    "reload-or-restart": "restart",
}


def _service_actions(words: Sequence[str]) -> list[_Action] | None:
    """``systemctl start x``, ``service x start``, ``docker [container] stop x`` → actions."""
    name, args = _command_name(words)
    if name == "systemctl":
        positional = []
        for arg in args:
            if arg in ("--user", "-H", "--host", "-M", "--machine") or arg.startswith(("--host=", "--machine=")):
                return None  # another bus or machine: not this node's system service
            if not arg.startswith("-"):
                positional.append(arg)
        if len(positional) >= 2 and positional[0] in _SYSTEMCTL_VERBS:
            verb = _SYSTEMCTL_VERBS[positional[0]]
            return [_Action("systemd", verb, _unit_name(u)) for u in positional[1:]]
        return None
    if name == "service" and len(args) == 2 and args[1] in ("start", "stop", "restart"):
        return [_Action("systemd", args[1], _unit_name(args[0]))]
    if name == "docker":
        if args and args[0] == "container":
            args = args[1:]
        if not args or args[0] not in ("start", "stop", "restart"):
            return None
        verb, rest = args[0], args[1:]
        targets: list[str] = []
        skip = False
        for arg in rest:
            if skip:
                skip = False
            elif arg in ("-t", "--time", "-s", "--signal", "--detach-keys"):
                skip = True
            elif not arg.startswith("-"):
                targets.append(arg)
        if not targets:
            return None
        return [_Action("docker", verb, t) for t in targets]
    return None


def _unit_name(unit: str) -> str:
    return unit if "." in unit else unit + ".service"


# =============================================================================== curl
_CURL_VALUE_SHORT = set("oHXumAedxbcTrwEKCzYyQtDFU")
_CURL_VALUE_LONG = _words(
    "--output --header --request --user --max-time --user-agent --referer --data --data-raw "
    "--data-binary --data-urlencode --proxy --cookie --cookie-jar --upload-file --range "
    "--write-out --cert --config --connect-timeout --retry --retry-delay --retry-max-time "
    "--resolve --cacert --capath --key --interface --unix-socket --url --limit-rate --form "
    "--dump-header --connect-to --noproxy --proxy-user --oauth2-bearer"
)
_CURL_UNSUPPORTED = _words(
    "-d --data --data-raw --data-binary --data-urlencode -F --form -u --user -x --proxy "
    "--unix-socket -T --upload-file --resolve --connect-to -E --cert --key -K --config -b "
    "--cookie --oauth2-bearer --cacert --capath"
)


@dataclass
class _Curl:
    url: str
    fail: bool = False
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    notes: list[str] = field(default_factory=list)


def _parse_curl(args: Sequence[str]) -> _Curl | str:
    """The probe equivalent of ``curl ARGS``, or the reason it has none."""
    opts: list[tuple[str, str | None]] = []
    urls: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            value: str | None = None
            if name in _CURL_VALUE_LONG:
                if eq:
                    value = inline
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    return f"curl option {name} has no value"
            if name == "--url" and value is not None:
                urls.append(value)
            else:
                opts.append((name, value))
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                flag = "-" + arg[j]
                if arg[j] in _CURL_VALUE_SHORT:
                    if j + 1 < len(arg):
                        opts.append((flag, arg[j + 1 :]))
                    elif i < len(args):
                        opts.append((flag, args[i]))
                        i += 1
                    else:
                        return f"curl option {flag} has no value"
                    break
                opts.append((flag, None))
                j += 1
        else:
            urls.append(arg)
    if len(urls) != 1:
        return "curl call without exactly one URL"
    curl = _Curl(url="")
    for name, value in opts:
        if name in _CURL_UNSUPPORTED:
            return f"curl option {name} has no http-probe equivalent"
        if name in ("-f", "--fail", "--fail-with-body"):
            curl.fail = True
        elif name in ("-I", "--head"):
            curl.method = "HEAD"
        elif name in ("-X", "--request") and value is not None:
            if value.upper() not in ("GET", "HEAD", "POST", "PUT", "OPTIONS"):
                return f"curl -X {value} has no http-probe equivalent"
            curl.method = value.upper()
        elif name in ("-H", "--header") and value is not None:
            hname, colon, hvalue = value.partition(":")
            if not colon or not hname.strip():
                return f"curl header {value!r} is not 'Name: value'"
            curl.headers[hname.strip()] = hvalue.strip()
        elif name in ("-m", "--max-time") and value is not None:
            try:
                curl.timeout = float(value)
            except ValueError:
                return f"curl --max-time {value!r} is not a number"
        elif name in ("-L", "--location"):
            curl.notes.append("curl -L followed redirects; the http probe does not (3xx counts as healthy)")
        elif name in ("-k", "--insecure"):
            curl.notes.append("curl -k skipped TLS verification; the http probe verifies certificates")
    url = urls[0]
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{urls[0]!r} is not an http(s) URL"
    if not parts.path:
        url = parts._replace(path="/").geturl()
    curl.url = url
    return curl


_CHECK_SHAPES = [
    re.compile(p)
    for p in (
        r"CURL( ; EXIT\?)?",
        r"if ! CURL ; then( OUT ;)* EXITN ;? fi( ; EXIT0)?",
        r"CURL \|\| EXITN",
        r"CURL \|\| \{ ( ?OUT ;)* EXITN ;? \}",
    )
]


def _check_shape(syms: list[_Sym]) -> tuple[str, list[_Sym]]:
    """A normalized outline of a check script, and its curl commands."""
    out: list[str] = []
    curls: list[_Sym] = []
    for sym in syms:
        if sym.kind == "cmd":
            name, args = _command_name(sym.words)
            if name == "curl":
                curls.append(sym)
                piece = "CURL"
            elif name in ("echo", "printf", "logger"):
                piece = "OUT"
            elif name == "exit":
                code = args[0] if args else "0"
                piece = "EXIT0" if code == "0" else "EXIT?" if code == "$?" else "EXITN"
            elif name == "set":
                continue
            else:
                piece = "X"
            out.append(piece)
        elif sym.text == ";" and (not out or out[-1] in (";", "then", "else", "do", "{")):
            continue
        else:
            out.append(sym.text)
    while out and out[-1] == ";":
        out.pop()
    return " ".join(out), curls


# =============================================================================== the translation
@dataclass
class _Notify:
    event: str
    stmt: _Stmt
    argv: list[str]
    actions: list[tuple[_Action, str]] = field(default_factory=list)  # (action, "file:line")
    other: list[str] = field(default_factory=list)  # "file:line: text"
    complex: list[str] = field(default_factory=list)
    unreadable: str | None = None
    read_from: str | None = None


@dataclass
class _Probe:
    name: str
    lines: list[str]  # TOML lines of the [[probe]] table
    is_http: bool
    loc: _Loc


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _qlist(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _dur(seconds: float) -> str:
    if seconds == int(seconds):
        return f'"{int(seconds)}s"'
    ms = seconds * 1000
    if abs(ms - round(ms)) < 1e-9:
        return f'"{round(ms)}ms"'
    return f'"{seconds:g}s"'


def _num(stmt: _Stmt, *, integer: bool, lo: float, hi: float) -> float:
    tok = stmt.value("a number")
    try:
        value = float(int(tok.text)) if integer else float(tok.text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _error(tok.loc, f"{stmt.keyword}: expected {kind}, got {tok.text!r}") from None
    if not lo <= value <= hi:
        raise _error(tok.loc, f"{stmt.keyword}: must be between {lo:g} and {hi:g}, got {tok.text}")
    return value


def _ip(tok: _Token, what: str) -> str:
    try:
        return str(ipaddress.ip_address(tok.text.split("%")[0]))
    except ValueError:
        raise _error(tok.loc, f"{what}: {tok.text!r} is not an IP address") from None


def _addr(ip: str, port: int | None = None) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    if port is None:
        return host if ":" not in ip else f"{host}:{DEFAULT_PORT}"
    return f"{host}:{port}"


_TOP_IGNORED = _words(
    "vrrp_sync_group virtual_server virtual_server_group static_ipaddress static_routes "
    "static_rules vrrp_track_file track_file vrrp_track_process track_process "
    "linkbeat_interfaces bfd_instance garp_group local_address_group"
)
_INSTANCE_IGNORED = _words(
    "dont_track_primary garp_master_delay garp_master_repeat garp_master_refresh "
    "garp_master_refresh_repeat garp_lower_prio_delay garp_lower_prio_repeat garp_interval "
    "gna_interval lower_prio_no_advert higher_prio_send_advert use_vmac vmac_xmit_base "
    "native_ipv6 version strict_mode accept no_accept skip_check_adv_addr debug unicast_ttl "
    "unicast_fault_no_peer check_unicast_src smtp_alert smtp_alert_checker "
    "lvs_sync_daemon_interface mcast_src_ip notify_master_rx_lower_pri notify "
    "notify_priority_changes kernel_rx_buf_size track_src_ip old_unicast_checksum "
    "promote_secondaries linkbeat_use_polling vrrp_linkbeat virtual_ipaddress_excluded "
    "virtual_routes virtual_rules track_file track_process track_bfd notify_deleted "
    "no_accept_mode mcast_dst_ip"
)
_INSTANCE_KNOWN = _words(
    "state interface virtual_router_id priority advert_int nopreempt preempt preempt_delay "
    "authentication virtual_ipaddress unicast_peer unicast_src_ip track_script track_interface "
    "notify_master notify_backup notify_fault notify_stop"
)


class _Importer:
    def __init__(self, path: str, instance: str | None) -> None:
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.warnings: list[str] = []
        self.traps: list[Trap] = []
        parser = _Parser(self.warnings)
        self.top = parser.parse_file(path)
        self.scripts: dict[str, _Stmt] = {}
        self.instances: dict[str, _Stmt] = {}
        self.router_id: str | None = None
        self.state = "BACKUP"
        self.priority = 100
        self._read_top()
        self.inst = self._pick(instance)

    def warn(self, where: _Loc | str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def trap(self, code: str, where: _Loc | str, problem: str, instead: str) -> None:
        self.traps.append(Trap(code, str(where), problem, instead))

    # -- top level ---------------------------------------------------------------------
    def _read_top(self) -> None:
        for stmt in self.top:
            kw = stmt.keyword
            if kw == "global_defs":
                for sub in stmt.need_block():
                    if sub.keyword == "router_id" and sub.args:
                        self.router_id = sub.args[0].text
            elif kw in ("vrrp_script", "vrrp_instance"):
                name = stmt.value(f"the {kw} name").text
                stmt.need_block()
                table = self.scripts if kw == "vrrp_script" else self.instances
                if name in table:
                    raise _error(stmt.loc, f"{kw} {name} is defined twice (first at line {table[name].loc.line})")
                table[name] = stmt
            elif kw in _TOP_IGNORED:
                self.warn(stmt.loc, f"{kw} has no hasup equivalent and is not translated")
            elif kw.startswith("@") or kw.startswith("$"):
                raise _error(stmt.loc, f"{kw}: keepalived conditional lines and $parameters are not supported")
            elif stmt.block is not None:
                raise _error(stmt.loc, f"unknown block '{kw}'")
            else:
                raise _error(stmt.loc, f"unknown keyword '{kw}' at the top level")

    def _pick(self, instance: str | None) -> _Stmt:
        if not self.instances:
            raise ConfigError("no vrrp_instance block found", file=self.path)
        if instance is not None:
            if instance not in self.instances:
                raise ConfigError(
                    f"no vrrp_instance named {instance!r}; found: {', '.join(self.instances)}", file=self.path
                )
            return self.instances[instance]
        if len(self.instances) > 1:
            raise ConfigError(
                f"{len(self.instances)} vrrp_instance blocks ({', '.join(self.instances)}): "
                "choose one with --instance NAME (hasup runs one group per configuration file)",
                file=self.path,
            )
        return next(iter(self.instances.values()))

    # -- file lookup -------------------------------------------------------------------
    def _read_script(self, path: str) -> tuple[str, str] | None:
        """Text of a script named in the config: at its path, else next to keepalived.conf
        (for a copied /etc/keepalived directory). Returns (where it was read, text)."""
        if "/" not in path:
            return None  # a program found through $PATH, not a script of this configuration
        candidates = [path]
        if os.path.isabs(path):
            candidates.append(os.path.join(self.base_dir, os.path.basename(path)))
        else:
            candidates.insert(0, os.path.join(self.base_dir, path))
        for cand in candidates:
            try:
                data = Path(cand).read_bytes()
            except OSError:
                continue
            if b"\0" in data[:4096]:
                return None  # a binary program, not a script
            return cand, data.decode("utf-8", errors="replace")
        return None

    # -- the instance ------------------------------------------------------------------
    def convert(self) -> ImportResult:
        inst = self.inst
        name = inst.args[0].text
        settings: dict[str, _Stmt] = {}
        block = inst.need_block()
        for stmt in block:
            kw = stmt.keyword
            if kw in _INSTANCE_KNOWN:
                if kw in settings and kw not in ("track_script", "unicast_peer", "virtual_ipaddress"):
                    self.warn(stmt.loc, f"{kw} repeated; the last one (line {stmt.loc.line}) is used")
                settings[kw] = stmt
            elif kw in _INSTANCE_IGNORED:
                what = "a generic notify script (called with instance, state, priority)" if kw == "notify" else kw
                self.warn(stmt.loc, f"{what} has no hasup equivalent and is not translated")
            elif stmt.block is not None:
                raise _error(stmt.loc, f"unknown block '{kw}' in vrrp_instance {name}")
            else:
                self.warn(stmt.loc, f"unknown keyword '{kw}' in vrrp_instance {name}; ignored")

        out: list[str] = []
        body = [*self._node(settings), "", *self._group(settings)]
        probes = self._probes(settings)
        service, hooks = self._service(settings, probes)
        body += ["", *service]
        for probe in probes:
            body += ["", *probe.lines]
        for hook in hooks:
            body += ["", *hook]
        self._unsupported(settings)

        out.append(f"# hasup.toml generated by `hasup import-keepalived` from {self.path}")
        out.append(f"# (vrrp_instance {name}). Read every NOTE and TRAP below, then check it:")
        out.append("#   hasup check -c hasup.toml")
        if self.traps:
            out.append("#")
            out.append("# Traps of the keepalived recipe found in the input, and what hasup does instead:")
            for trap in self.traps:
                out.extend(_wrap(f"- {trap.where}: {trap.problem} hasup: {trap.instead}", "#   "))
        if self.warnings:
            out.append("#")
            out.append("# Not translated or changed (also printed as warnings):")
            for warning in self.warnings:
                out.extend(_wrap(f"- {warning}", "#   "))
        out.append("")
        for line in body:
            out.extend(_wrap(line[2:], "# ") if line.startswith("# ") and len(line) > 108 else [line])
        return ImportResult("\n".join(out).rstrip() + "\n", name, list(self.warnings), list(self.traps))

    def _node(self, s: dict[str, _Stmt]) -> list[str]:
        lines = ["[node]"]
        if self.router_id:
            lines.append(f"name = {_q(self.router_id)}  # keepalived router_id; must differ from the peers' names")
        else:
            lines.append('# name = "edge-a"  # defaults to the host name; must differ from the peers\' names')
        state = s.get("state")
        if state is not None:
            value = state.value("MASTER or BACKUP")
            if value.text not in ("MASTER", "BACKUP"):
                raise _error(value.loc, f"state: expected MASTER or BACKUP, got {value.text!r}")
            lines.append(
                f"# keepalived: state {value.text} ({state.loc}). hasup has no initial state: the highest "
                "priority that is healthy serves."
            )
        self.state = state.args[0].text if state is not None else "BACKUP"
        if "priority" in s:
            raw = _num(s["priority"], integer=True, lo=0, hi=255)
            prio = int(min(max(raw, 1), 254))
            if prio != raw:
                self.warn(s["priority"].loc, f"priority {int(raw)} clamped to {prio} (hasup priorities are 1..254)")
            lines.append(f"priority = {prio}  # {s['priority'].loc}: priority {int(raw)}")
        else:
            prio = 100
            lines.append("priority = 100  # keepalived's default priority")
        self.priority = prio
        if "nopreempt" in s and "preempt" not in s:
            stmt = s["nopreempt"]
            stmt_lower = self.state == "BACKUP" or prio < 100
            lines.append(f"preempt = false  # {stmt.loc}: nopreempt")
            lines.extend(
                _wrap(
                    "TRAP: nopreempt only acts on the node that would take the service back. On the "
                    "lower-priority node it does nothing, in keepalived as in hasup (hasup logs a warning). "
                    "Failback is decided on the preferred node: keep preempt = true there for automatic "
                    "failback, or set preempt = false there to keep the service where it is.",
                    "# ",
                )
            )
            self.trap(
                "nopreempt-lower-priority",
                stmt.loc,
                "nopreempt"
                + (
                    " on what looks like the lower-priority node (state BACKUP / priority below 100)"
                    if stmt_lower
                    else ""
                )
                + " does nothing: preemption is decided by the node that wants to take over.",
                "failback is controlled by preempt on the preferred node (preempt = true there means "
                "automatic "
                "failback through the release handshake, after preempt_delay).",
            )
        else:
            where = f"  # {s['preempt'].loc}: preempt" if "preempt" in s else ""
            lines.append(f"preempt = true{where}")
            lines.append(
                "# automatic failback: this node takes the service back from a live lower-priority holder "
                "(release handshake)"
            )
        if "preempt_delay" in s:
            delay = _num(s["preempt_delay"], integer=False, lo=0, hi=1000)
            lines.append(f"preempt_delay = {_dur(delay)}  # {s['preempt_delay'].loc}: preempt_delay")
        return lines

    def _group(self, s: dict[str, _Stmt]) -> list[str]:
        lines = ["[group]"]
        if "virtual_router_id" not in s:
            raise _error(self.inst.loc, f"vrrp_instance {self.inst.args[0].text}: virtual_router_id is missing")
        vrid = int(_num(s["virtual_router_id"], integer=True, lo=1, hi=255))
        lines.append(f"id = {vrid}  # {s['virtual_router_id'].loc}: virtual_router_id (must match on every node)")
        iface = s["interface"].value("an interface name").text if "interface" in s else None
        if "unicast_src_ip" in s:
            ip = _ip(s["unicast_src_ip"].value("an IP address"), "unicast_src_ip")
            lines.append(f"listen = {_q(_addr(ip, DEFAULT_PORT))}  # {s['unicast_src_ip'].loc}: unicast_src_ip")
        else:
            lines.append(f'listen = "0.0.0.0:{DEFAULT_PORT}"')
            hint = f" on {iface}" if iface else ""
            lines.append(
                f"# NOTE: no unicast_src_ip; if this node has several addresses, bind the one{hint} "
                f'that the peers list: listen = "<this node\'s IP>:{DEFAULT_PORT}"'
            )
        peers: list[str] = []
        if "unicast_peer" in s:
            for peer in s["unicast_peer"].need_block():
                peers.append(_addr(_ip(peer.key, "unicast_peer")))
                if peer.args:
                    self.warn(peer.loc, f"unicast_peer options {' '.join(a.text for a in peer.args)} are ignored")
            lines.append(f"peers = {_qlist(peers)}  # {s['unicast_peer'].loc}: unicast_peer")
        else:
            self.warn(self.inst.loc, "no unicast_peer: hasup talks unicast UDP only; fill in group.peers")
            lines.append(
                'peers = []  # FIXME: the other nodes\' addresses, e.g. ["10.0.0.223"] (keepalived used multicast)'
            )
        lines.append(f"key_file = {_q(KEY_FILE)}")
        lines.append(
            f"# create it once with `hasup keygen {KEY_FILE}` and copy it to every node (mode 0600): "
            "heartbeats are signed with HMAC"
        )
        if "authentication" in s:
            auth = s["authentication"]
            kind = None
            for sub in auth.need_block():
                if sub.keyword == "auth_type":
                    kind = sub.value("PASS or AH").text
                elif sub.keyword == "auth_pass":
                    sub.value("a password")
                else:
                    raise _error(sub.loc, f"unknown keyword '{sub.keyword}' in authentication")
            if kind == "PASS":
                self.warn(auth.loc, "auth_type PASS sent the password in plain text; replaced by key_file (HMAC)")
                lines.append(f"# TRAP ({auth.loc}): auth_type PASS was a plain-text password anyone could forge.")
                self.trap(
                    "pass-auth",
                    auth.loc,
                    "auth_type PASS sends the password in clear text; anyone on the segment can forge adverts.",
                    "every heartbeat carries an HMAC with a 256-bit key from key_file "
                    "(replay-protected); the old "
                    "auth_pass is not reused.",
                )
            elif kind is not None:
                self.warn(auth.loc, f"auth_type {kind} is not supported; replaced by key_file (HMAC)")
        if "advert_int" in s:
            adv = _num(s["advert_int"], integer=False, lo=0.001, hi=255)
            clamped = min(max(adv, 0.01), 60.0)
            if clamped != adv:
                self.warn(s["advert_int"].loc, f"advert_int {adv:g} clamped to {clamped:g}s (hasup: 10 ms .. 60 s)")
            lines.append(f"advert_interval = {_dur(clamped)}  # {s['advert_int'].loc}: advert_int")
        return lines

    # -- checks --------------------------------------------------------------------------
    def _probes(self, s: dict[str, _Stmt]) -> list[_Probe]:
        probes: list[_Probe] = []
        if "track_script" not in s:
            return probes
        for ref in s["track_script"].need_block():
            ref.no_block()
            name = ref.keyword
            if name not in self.scripts:
                raise _error(ref.loc, f"track_script: no vrrp_script named {name!r}")
            weight: int | None = None
            if ref.args:
                if ref.args[0].text != "weight" or len(ref.args) < 2:
                    raise _error(ref.loc, f"track_script {name}: expected 'weight N', got {ref.args[0].text!r}")
                weight = int(_num(_Stmt(ref.args[0], ref.args[1:], None), integer=True, lo=-253, hi=253))
                if len(ref.args) > 2:
                    self.warn(ref.loc, f"track_script {name}: {ref.args[2].text} is not supported; ignored")
            probes.append(self._probe(name, self.scripts[name], weight))
        return probes

    def _probe(self, name: str, stmt: _Stmt, weight_override: int | None) -> _Probe:
        opts: dict[str, _Stmt] = {}
        for sub in stmt.need_block():
            sub.no_block()
            if sub.keyword in (
                "script",
                "interval",
                "timeout",
                "fall",
                "rise",
                "weight",
                "user",
                "init_fail",
            ):
                opts[sub.keyword] = sub
            else:
                self.warn(sub.loc, f"vrrp_script {name}: unknown keyword '{sub.keyword}'; ignored")
        if "script" not in opts:
            raise _error(stmt.loc, f"vrrp_script {name}: script is missing")
        script_stmt = opts["script"]
        script_text = script_stmt.value("a command").text
        interval = _num(opts["interval"], integer=False, lo=0.01, hi=86400) if "interval" in opts else 1.0
        fall = int(_num(opts["fall"], integer=True, lo=1, hi=255)) if "fall" in opts else 1
        rise = int(_num(opts["rise"], integer=True, lo=1, hi=255)) if "rise" in opts else 1
        timeout = _num(opts["timeout"], integer=False, lo=0.001, hi=86400) if "timeout" in opts else None
        weight = weight_override
        if weight is None and "weight" in opts:
            weight = int(_num(opts["weight"], integer=True, lo=-253, hi=253))
            if len(opts["weight"].args) > 1:
                self.warn(
                    opts["weight"].loc,
                    f"vrrp_script {name}: weight {opts['weight'].args[1].text} not supported",
                )
        if weight == 0:
            weight = None
        for key in ("user", "init_fail"):
            if key in opts:
                self.warn(opts[key].loc, f"vrrp_script {name}: {key} is not translated (probes run as hasup's user)")
        if len(script_stmt.args) > 1:
            self.warn(script_stmt.loc, f"vrrp_script {name}: script user/group are not translated")

        loc = script_stmt.loc
        lines = ["[[probe]]", f"name = {_q(name)}  # {stmt.loc}: vrrp_script {name}"]
        details = self._check(name, script_text, loc)
        is_http = isinstance(details, _Curl)
        if isinstance(details, _Curl):
            lines.append('type = "http"')
            lines.append(f"url = {_q(details.url)}  # {loc}: script {_q(script_text)}")
            lines.append('expect_status = "200-399"')
            if not details.fail:
                lines.extend(
                    _wrap(
                        "TRAP: curl without -f succeeded on any HTTP answer, 401 and 500 included; "
                        "this probe fails on them. Widen expect_status only if that is really wanted.",
                        "# ",
                    )
                )
                self.trap(
                    "curl-without-f",
                    loc,
                    "the health check runs curl without -f, so a 401/500 answer counts as healthy.",
                    'the http probe checks the status: expect_status = "200-399", anything else is a failure.',
                )
            if details.method:
                lines.append(f"method = {_q(details.method)}")
            if details.headers:
                inner = ", ".join(f"{_q(k)} = {_q(v)}" for k, v in details.headers.items())
                lines.append(f"headers = {{ {inner} }}")
            for note in details.notes:
                self.warn(loc, note)
            if timeout is None and details.timeout is not None:
                timeout = details.timeout
        else:
            lines.append('type = "exec"')
            lines.append(f"command = {_qlist(details)}  # {loc}: script {_q(script_text)}")
        lines.append(f"interval = {_dur(interval)}  # keepalived interval {interval:g}")
        if timeout is not None:
            lines.append(f"timeout = {_dur(timeout)}")
        else:
            lines.append("# timeout: hasup's default is 2s (or the interval if shorter)")
        lines.append(f"fall = {fall}" + ("" if "fall" in opts else "  # keepalived's default"))
        lines.append(f"rise = {rise}" + ("" if "rise" in opts else "  # keepalived's default"))
        if weight is not None:
            lines.append('when = "always"  # a weighted check adjusts priority instead of faulting, as in keepalived')
            lines.append(f"weight = {weight}")
        else:
            lines.append('when = "active"  # runs while this node holds the service; failing -> stop, FAULT, handover')
            lines.extend(
                _wrap(
                    'keepalived ran it on the backup too; use when = "always" for checks that do not '
                    "depend on "
                    "the service (e.g. a gateway ping).",
                    "# ",
                )
            )
        if interval * fall > 5:
            lines.append(
                f"# NOTE: interval {interval:g}s x fall {fall} = {interval * fall:g}s before a "
                "failure is noticed; "
                'consider interval = "1s" and start_period for the service\'s start-up time.'
            )
        return _Probe(name, lines, is_http, stmt.loc)

    def _check(self, name: str, text: str, loc: _Loc) -> _Curl | list[str]:
        """Translate a vrrp_script command: an http probe (curl) or an exec argv."""
        needs_shell = False
        try:
            syms = _lex_line(text, loc.line)
            argv = shlex.split(text)
        except ValueError:
            self.warn(loc, f"vrrp_script {name}: cannot split {text!r}; kept as /bin/sh -c")
            return ["/bin/sh", "-c", text]
        cmds = [s for s in syms if s.kind == "cmd"]
        ops = [s for s in syms if s.kind != "cmd" and s.text != ";"]
        if ops or len(cmds) != 1 or any("$" in w or "`" in w for w in argv) or ";" in text or ">" in text:
            needs_shell = True
        if needs_shell:
            shape, curls = _check_shape(syms)
            if len(curls) == 1 and any(p.fullmatch(shape) for p in _CHECK_SHAPES):
                curl = _parse_curl(_command_name(curls[0].words)[1])
                if isinstance(curl, _Curl):
                    return curl
            self.warn(
                loc,
                f"vrrp_script {name}: {text!r} needs a shell (pipes, &&, ;, $VAR or redirections); kept as "
                '["/bin/sh", "-c", ...] exec probe: check that it still means what it did',
            )
            return ["/bin/sh", "-c", text]
        prog, args = _command_name(argv)
        if prog == "curl":
            curl = _parse_curl(args)
            if isinstance(curl, _Curl):
                return curl
            self.warn(loc, f"vrrp_script {name}: {curl}; kept as an exec probe")
            return argv
        found = self._read_script(argv[0])
        if found is None:
            why = "could not be read" if "/" in argv[0] else "is not a curl call"
            self.warn(loc, f"vrrp_script {name}: {argv[0]} {why}; kept as an exec probe: {argv}")
            return argv
        where, script = found
        syms, bad = _lex_script(script)
        shape, curls = _check_shape(syms)
        if not bad and len(curls) == 1 and any(p.fullmatch(shape) for p in _CHECK_SHAPES):
            curl = _parse_curl(_command_name(curls[0].words)[1])
            if isinstance(curl, _Curl):
                if len(argv) > 1:
                    self.warn(loc, f"vrrp_script {name}: arguments {argv[1:]} to {argv[0]} are dropped")
                self.warn(loc, f"vrrp_script {name}: {where}:{curls[0].line}: curl check became an http probe")
                return curl
            self.warn(loc, f"vrrp_script {name}: {where}:{curls[0].line}: {curl}; kept as an exec probe")
            return argv
        self.warn(loc, f"vrrp_script {name}: {where} is not a single curl check; kept as an exec probe")
        return argv

    # -- notify scripts and the service -----------------------------------------------------
    def _notify(self, event: str, stmt: _Stmt) -> _Notify:
        tok = stmt.value("a script")
        try:
            argv = shlex.split(tok.text)
        except ValueError:
            raise _error(tok.loc, f"{stmt.keyword}: cannot split {tok.text!r} (unbalanced quotes)") from None
        if not argv:
            raise _error(tok.loc, f"{stmt.keyword}: empty command")
        if len(stmt.args) > 1:
            self.warn(
                stmt.loc,
                f"{stmt.keyword}: user/group {' '.join(a.text for a in stmt.args[1:])} not translated",
            )
        info = _Notify(event, stmt, argv)
        direct = _service_actions(argv)
        if direct is not None:
            info.actions = [(a, str(stmt.loc)) for a in direct]
            return info
        prog, _ = _command_name(argv)
        if prog in _BENIGN:
            return info
        found = self._read_script(argv[0])
        if found is None:
            info.unreadable = f"{stmt.loc}: {stmt.keyword}: {argv[0]} could not be read (not a systemctl/docker call)"
            return info
        where, text = found
        info.read_from = where
        syms, bad = _lex_script(text)
        for number in bad:
            info.complex.append(f"{where}:{number}")
        for sym in syms:
            at = f"{where}:{sym.line}"
            if sym.kind == "kw" or (sym.kind == "op" and sym.text != ";"):
                info.complex.append(f"{at}: {sym.text}")
                continue
            if sym.kind != "cmd":
                continue
            prog, args = _command_name(sym.words)
            if prog in _BENIGN:
                continue
            if prog in ("exit", "set") and all(not a.startswith("$") for a in args):
                continue
            if any("$" in w or "`" in w for w in sym.words):
                info.complex.append(f"{at}: {sym.text}")
                continue
            actions = _service_actions(sym.words)
            if actions is None:
                info.other.append(f"{at}: {sym.text}")
            else:
                info.actions.extend((a, at) for a in actions)
        return info

    def _service(self, s: dict[str, _Stmt], probes: list[_Probe]) -> tuple[list[str], list[list[str]]]:
        notifies: dict[str, _Notify] = {}
        for event in _EVENTS:
            key = f"notify_{event.lower()}"
            if key in s:
                notifies[event] = self._notify(event, s[key])
        lines = ["[service]"]
        hooks: list[list[str]] = []
        if notifies:
            first = min(notifies.values(), key=lambda n: n.stmt.loc.line)
            self.trap(
                "notify-fire-and-forget",
                first.stmt.loc,
                "notify scripts are fire-and-forget: no ordering, no check that start/stop worked, the new "
                "master's start can overlap the old master's stop.",
                "the backend's start/stop are awaited and verified, a stop is confirmed (or "
                "escalated to a kill) "
                "before the peer starts, and hooks run in order, one at a time.",
            )
        usable = all(not n.complex and n.unreadable is None for n in notifies.values())
        targets = {(a.kind, a.target) for n in notifies.values() for a, _ in n.actions}
        master = notifies.get("MASTER")
        backend: tuple[str, str] | None = None
        if usable and len(targets) == 1 and master is not None and master.actions:
            backend = next(iter(targets))
        if backend is not None:
            kind, target = backend
            sources = ", ".join(f"{n.stmt.keyword} ({n.stmt.loc})" for n in notifies.values() if n.actions)
            lines.extend(_wrap(f"from {sources}", "# "))
            for n in notifies.values():
                if n.read_from is not None and n.read_from != n.argv[0]:
                    lines.append(f"# ({n.argv[0]} was read from {n.read_from})")
            if kind == "systemd":
                lines.append('backend = "systemd"')
                lines.append(f"unit = {_q(target)}")
                lines.append(
                    f"# run `systemctl disable {target.removesuffix('.service')}` on every node: only hasup starts it"
                )
            else:
                lines.append('backend = "docker"')
                lines.append(f"container = {_q(target)}")
                lines.append('# give the container restart policy "no": only hasup starts it')
            self._check_verbs(notifies)
            for event, info in notifies.items():
                for other in info.other:
                    self.warn(
                        other.split(": ", 1)[0],
                        f"notify_{event.lower()}: {other.split(': ', 1)[1]!r} is not "
                        "translated (the backend replaces the systemctl/docker line only)",
                    )
            hooks.extend(self._hooks(notifies, set()))
            missing = [e for e in ("BACKUP", "FAULT") if e not in notifies]
            if missing:
                lines.extend(
                    _wrap(
                        f"NOTE: keepalived had no notify for {' or '.join(missing)} here, so the "
                        "service kept "
                        f"running in {'/'.join(missing)}; hasup stops it whenever this node is not MASTER "
                        "(one copy only).",
                        "# ",
                    )
                )
            fault = notifies.get("FAULT")
            if fault is not None and probes and any(a.verb == "stop" for a, _ in fault.actions):
                self.trap(
                    "fault-stops-probed-service",
                    fault.stmt.loc,
                    f"notify_fault stops {target}, which the health check "
                    f"({', '.join(p.name for p in probes)}) "
                    "probes: the check can never pass again, so the node stays FAULT until an "
                    "operator steps in.",
                    "FAULT stops the service too, but active probes run only while the node holds "
                    "the service, "
                    "and FAULT -> BACKUP happens after fault_holddown without depending on the service.",
                )
        else:
            command, used = self._command_backend(notifies)
            lines.extend(command)
            hooks.extend(self._hooks(notifies, used))
        if not probes:
            lines.append(
                "# NOTE: this keepalived config has no track_script; hasup watches the backend's "
                "status only. "
                "Consider the same [[probe]] as on the other node."
            )
        return lines, hooks

    def _check_verbs(self, notifies: dict[str, _Notify]) -> None:
        for event, info in notifies.items():
            for action, at in info.actions:
                if event == "MASTER" and action.verb == "restart":
                    self.warn(at, f"notify_master restarts {action.target}; hasup starts it (a running one is kept)")
                elif event == "MASTER" and action.verb == "stop":
                    self.warn(at, f"notify_master stops {action.target}; hasup starts the service on MASTER")
                elif event != "MASTER" and action.verb != "stop":
                    self.warn(
                        at,
                        f"notify_{event.lower()} runs {action.verb} {action.target}; hasup stops it in {event}",
                    )

    def _command_backend(self, notifies: dict[str, _Notify]) -> tuple[list[str], set[str]]:
        """The notify scripts as a command backend; returns the lines and the events used."""
        lines: list[str] = []
        master = notifies.get("MASTER")
        stoppers = [notifies[e] for e in ("BACKUP", "FAULT", "STOP") if e in notifies]
        stoppers.sort(key=lambda n: not any(a.verb == "stop" for a, _ in n.actions))
        stopper = stoppers[0] if stoppers else None
        reasons: list[str] = []
        for info in notifies.values():
            if info.unreadable:
                reasons.append(info.unreadable)
            for c in info.complex:
                reasons.append(f"{c}: control flow or $variables")
        targets = {(a.kind, a.target) for n in notifies.values() for a, _ in n.actions}
        if len(targets) > 1:
            reasons.append(f"several services: {', '.join(t for _, t in sorted(targets))}")
        if master is None:
            self.warn(self.inst.loc, "no notify_master: nothing says how to start the service; fill in [service]")
            lines.append(
                'backend = "FIXME"  # no notify_master: say how to start the service (systemd, docker, command)'
            )
            return lines, set(notifies)
        for reason in reasons:
            self.warn(master.stmt.loc, f"kept as a command backend: {reason}")
        if not reasons and not master.actions:
            self.warn(
                master.stmt.loc,
                f"notify_master {master.argv[0]} runs no systemctl/docker start; kept as a command backend",
            )
        lines.append('backend = "command"')
        lines.append(f"start = {_qlist(master.argv)}  # {master.stmt.loc}: notify_master")
        if stopper is not None:
            lines.append(f"stop = {_qlist(stopper.argv)}  # {stopper.stmt.loc}: {stopper.stmt.keyword}")
        else:
            self.warn(master.stmt.loc, "no notify_backup/fault/stop: nothing says how to stop the service")
            lines.append('stop = ["FIXME"]  # no notify_backup/fault/stop: say how to stop the service')
        lines.extend(
            _wrap(
                "NOTE: add status = [...] (exit 0 running, 3 stopped) so hasup can confirm starts and stops; "
                "without it hasup trusts the exit codes.",
                "# ",
            )
        )
        return lines, {"MASTER"} | ({stopper.event} if stopper is not None else set())

    def _hooks(self, notifies: dict[str, _Notify], used: set[str]) -> list[list[str]]:
        """[[notify]] hooks for scripts that do something besides starting/stopping the service.

        ``used``: events whose script already is the command backend's start or stop."""
        hooks: list[list[str]] = []
        for event, info in notifies.items():
            if event in used:
                continue
            if info.actions:
                if not info.other:
                    continue  # only starts/stops the service: the backend does that now
                prefix = "# "
                head = [
                    f"# {info.stmt.loc}: {info.stmt.keyword} also does more than start/stop the service "
                    f"({'; '.join(o.split(': ', 1)[1] for o in info.other)}).",
                    "# Running the whole script as a hook would start/stop the service a second time; "
                    "move the other lines into their own script and enable this hook:",
                ]
            elif info.other or info.complex or info.unreadable:
                prefix = ""
                head = [f"# {info.stmt.loc}: {info.stmt.keyword}, now awaited, in order, with a timeout"]
                self.warn(
                    info.stmt.loc,
                    f"{info.stmt.keyword} kept as a [[notify]] hook on {event}; it gets HASUP_STATE, "
                    "HASUP_PREVIOUS_STATE, HASUP_NODE, HASUP_GROUP in its environment, no arguments",
                )
            else:
                continue
            hooks.append(
                [
                    *head,
                    f"{prefix}[[notify]]",
                    f"{prefix}on = [{_q(event)}]",
                    f"{prefix}command = {_qlist(info.argv)}",
                    f'{prefix}timeout = "10s"',
                ]
            )
        return hooks

    def _unsupported(self, s: dict[str, _Stmt]) -> None:
        if "virtual_ipaddress" in s:
            stmt = s["virtual_ipaddress"]
            addrs = [" ".join([e.keyword, *(a.text for a in e.args)]) for e in stmt.need_block()]
            self.warn(
                stmt.loc,
                f"virtual_ipaddress {', '.join(addrs) or '(empty)'}: hasup does not manage virtual IPs yet; "
                "clients should use the service through its node address or a [[notify]] hook",
            )
        if "track_interface" in s:
            stmt = s["track_interface"]
            names = [e.keyword for e in stmt.need_block()]
            self.warn(
                stmt.loc,
                f"track_interface {', '.join(names)}: not translated; an always-probe with witness = true "
                "(e.g. ping the gateway) covers isolation",
            )


def _wrap(text: str, prefix: str, width: int = 108) -> list[str]:
    words = text.split(" ")
    lines: list[str] = []
    current = prefix
    indent = prefix + ("  " if prefix.endswith("   ") else "")
    for word in words:
        if len(current) + len(word) + 1 > width and current.strip() not in ("", "#", "#   -"):
            lines.append(current.rstrip())
            current = indent
        current += word + " "
    lines.append(current.rstrip())
    return lines


# =============================================================================== API + CLI
def convert(path: str | os.PathLike[str], *, instance: str | None = None) -> ImportResult:
    """Convert one keepalived.conf (and the scripts it names) into a commented hasup.toml.

    Raises :class:`~hasup.ConfigError` (with file and line) on a malformed file, an
    unknown block, a missing value, or several instances without ``instance``.
    """
    return _Importer(os.fspath(path), instance).convert()


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
