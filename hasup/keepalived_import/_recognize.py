"""Recognition of what a script line does: ``systemctl``/``service``/``docker`` service
actions, ``curl`` health checks and the outlines of check scripts that wrap one curl."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._shell import Sym, command_name, word_set

__all__ = ["BENIGN", "CHECK_SHAPES", "Action", "Curl", "check_shape", "parse_curl", "service_actions"]

#: Commands that only log or wait: harmless in a notify script.
BENIGN = {"echo", "printf", "logger", "true", ":", "sleep", "date"}


@dataclass(frozen=True)
class Action:
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


def service_actions(words: Sequence[str]) -> list[Action] | None:
    """``systemctl start x``, ``service x start``, ``docker [container] stop x`` → actions."""
    name, args = command_name(words)
    if name == "systemctl":
        positional = []
        for arg in args:
            if arg in ("--user", "-H", "--host", "-M", "--machine") or arg.startswith(("--host=", "--machine=")):
                return None  # another bus or machine: not this node's system service
            if not arg.startswith("-"):
                positional.append(arg)
        if len(positional) >= 2 and positional[0] in _SYSTEMCTL_VERBS:
            verb = _SYSTEMCTL_VERBS[positional[0]]
            return [Action("systemd", verb, _unit_name(u)) for u in positional[1:]]
        return None
    if name == "service" and len(args) == 2 and args[1] in ("start", "stop", "restart"):
        return [Action("systemd", args[1], _unit_name(args[0]))]
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
        return [Action("docker", verb, t) for t in targets]
    return None


def _unit_name(unit: str) -> str:
    return unit if "." in unit else unit + ".service"


# =============================================================================== curl
_CURL_VALUE_SHORT = set("oHXumAedxbcTrwEKCzYyQtDFU")
_CURL_VALUE_LONG = word_set(
    "--output --header --request --user --max-time --user-agent --referer --data --data-raw "
    "--data-binary --data-urlencode --proxy --cookie --cookie-jar --upload-file --range "
    "--write-out --cert --config --connect-timeout --retry --retry-delay --retry-max-time "
    "--resolve --cacert --capath --key --interface --unix-socket --url --limit-rate --form "
    "--dump-header --connect-to --noproxy --proxy-user --oauth2-bearer"
)
_CURL_UNSUPPORTED = word_set(
    "-d --data --data-raw --data-binary --data-urlencode -F --form -u --user -x --proxy "
    "--unix-socket -T --upload-file --resolve --connect-to -E --cert --key -K --config -b "
    "--cookie --oauth2-bearer --cacert --capath"
)


@dataclass
class Curl:
    url: str
    fail: bool = False
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    notes: list[str] = field(default_factory=list)


def parse_curl(args: Sequence[str]) -> Curl | str:
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
    curl = Curl(url="")
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


CHECK_SHAPES = [
    re.compile(p)
    for p in (
        r"CURL( ; EXIT\?)?",
        r"if ! CURL ; then( OUT ;)* EXITN ;? fi( ; EXIT0)?",
        r"CURL \|\| EXITN",
        r"CURL \|\| \{ ( ?OUT ;)* EXITN ;? \}",
    )
]


def check_shape(syms: list[Sym]) -> tuple[str, list[Sym]]:
    """A normalized outline of a check script, and its curl commands."""
    out: list[str] = []
    curls: list[Sym] = []
    for sym in syms:
        if sym.kind == "cmd":
            name, args = command_name(sym.words)
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
