"""``vrrp_script`` → ``[[probe]]``: a curl check becomes an ``http`` probe, anything else
an ``exec`` probe."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ._conf import Loc, Stmt, error, read_number
from ._context import Context
from ._recognize import CHECK_SHAPES, Curl, check_shape, parse_curl
from ._shell import command_name, lex_line, lex_script
from ._toml import duration, quote, quote_list, wrap

__all__ = ["Probe", "translate_probes"]


@dataclass
class Probe:
    name: str
    lines: list[str]  # TOML lines of the [[probe]] table
    is_http: bool
    loc: Loc


def translate_probes(ctx: Context, s: dict[str, Stmt], scripts: dict[str, Stmt]) -> list[Probe]:
    """One [[probe]] per ``track_script`` of the instance."""
    probes: list[Probe] = []
    if "track_script" not in s:
        return probes
    for ref in s["track_script"].need_block():
        ref.no_block()
        name = ref.keyword
        if name not in scripts:
            raise error(ref.loc, f"track_script: no vrrp_script named {name!r}")
        weight: int | None = None
        if ref.args:
            if ref.args[0].text != "weight" or len(ref.args) < 2:
                raise error(ref.loc, f"track_script {name}: expected 'weight N', got {ref.args[0].text!r}")
            weight = int(read_number(Stmt(ref.args[0], ref.args[1:], None), integer=True, lo=-253, hi=253))
            if len(ref.args) > 2:
                ctx.warn(ref.loc, f"track_script {name}: {ref.args[2].text} is not supported; ignored")
        probes.append(_probe(ctx, name, scripts[name], weight))
    return probes


def _probe(ctx: Context, name: str, stmt: Stmt, weight_override: int | None) -> Probe:
    opts: dict[str, Stmt] = {}
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
            ctx.warn(sub.loc, f"vrrp_script {name}: unknown keyword '{sub.keyword}'; ignored")
    if "script" not in opts:
        raise error(stmt.loc, f"vrrp_script {name}: script is missing")
    script_stmt = opts["script"]
    script_text = script_stmt.value("a command").text
    interval = read_number(opts["interval"], integer=False, lo=0.01, hi=86400) if "interval" in opts else 1.0
    fall = int(read_number(opts["fall"], integer=True, lo=1, hi=255)) if "fall" in opts else 1
    rise = int(read_number(opts["rise"], integer=True, lo=1, hi=255)) if "rise" in opts else 1
    timeout = read_number(opts["timeout"], integer=False, lo=0.001, hi=86400) if "timeout" in opts else None
    weight = weight_override
    if weight is None and "weight" in opts:
        weight = int(read_number(opts["weight"], integer=True, lo=-253, hi=253))
        if len(opts["weight"].args) > 1:
            ctx.warn(
                opts["weight"].loc,
                f"vrrp_script {name}: weight {opts['weight'].args[1].text} not supported",
            )
    if weight == 0:
        weight = None
    for key in ("user", "init_fail"):
        if key in opts:
            ctx.warn(opts[key].loc, f"vrrp_script {name}: {key} is not translated (probes run as hasup's user)")
    if len(script_stmt.args) > 1:
        ctx.warn(script_stmt.loc, f"vrrp_script {name}: script user/group are not translated")

    loc = script_stmt.loc
    lines = ["[[probe]]", f"name = {quote(name)}  # {stmt.loc}: vrrp_script {name}"]
    details = _check(ctx, name, script_text, loc)
    is_http = isinstance(details, Curl)
    if isinstance(details, Curl):
        lines.append('type = "http"')
        lines.append(f"url = {quote(details.url)}  # {loc}: script {quote(script_text)}")
        lines.append('expect_status = "200-399"')
        if not details.fail:
            lines.extend(
                wrap(
                    "TRAP: curl without -f succeeded on any HTTP answer, 401 and 500 included; "
                    "this probe fails on them. Widen expect_status only if that is really wanted.",
                    "# ",
                )
            )
            ctx.trap(
                "curl-without-f",
                loc,
                "the health check runs curl without -f, so a 401/500 answer counts as healthy.",
                'the http probe checks the status: expect_status = "200-399", anything else is a failure.',
            )
        if details.method:
            lines.append(f"method = {quote(details.method)}")
        if details.headers:
            inner = ", ".join(f"{quote(k)} = {quote(v)}" for k, v in details.headers.items())
            lines.append(f"headers = {{ {inner} }}")
        for note in details.notes:
            ctx.warn(loc, note)
        if timeout is None and details.timeout is not None:
            timeout = details.timeout
    else:
        lines.append('type = "exec"')
        lines.append(f"command = {quote_list(details)}  # {loc}: script {quote(script_text)}")
    lines.append(f"interval = {duration(interval)}  # keepalived interval {interval:g}")
    if timeout is not None:
        lines.append(f"timeout = {duration(timeout)}")
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
            wrap(
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
    return Probe(name, lines, is_http, stmt.loc)


def _check(ctx: Context, name: str, text: str, loc: Loc) -> Curl | list[str]:
    """Translate a vrrp_script command: an http probe (curl) or an exec argv."""
    needs_shell = False
    try:
        syms = lex_line(text, loc.line)
        argv = shlex.split(text)
    except ValueError:
        ctx.warn(loc, f"vrrp_script {name}: cannot split {text!r}; kept as /bin/sh -c")
        return ["/bin/sh", "-c", text]
    cmds = [s for s in syms if s.kind == "cmd"]
    ops = [s for s in syms if s.kind != "cmd" and s.text != ";"]
    if ops or len(cmds) != 1 or any("$" in w or "`" in w for w in argv) or ";" in text or ">" in text:
        needs_shell = True
    if needs_shell:
        shape, curls = check_shape(syms)
        if len(curls) == 1 and any(p.fullmatch(shape) for p in CHECK_SHAPES):
            curl = parse_curl(command_name(curls[0].words)[1])
            if isinstance(curl, Curl):
                return curl
        ctx.warn(
            loc,
            f"vrrp_script {name}: {text!r} needs a shell (pipes, &&, ;, $VAR or redirections); kept as "
            '["/bin/sh", "-c", ...] exec probe: check that it still means what it did',
        )
        return ["/bin/sh", "-c", text]
    prog, args = command_name(argv)
    if prog == "curl":
        curl = parse_curl(args)
        if isinstance(curl, Curl):
            return curl
        ctx.warn(loc, f"vrrp_script {name}: {curl}; kept as an exec probe")
        return argv
    found = ctx.read_script(argv[0])
    if found is None:
        why = "could not be read" if "/" in argv[0] else "is not a curl call"
        ctx.warn(loc, f"vrrp_script {name}: {argv[0]} {why}; kept as an exec probe: {argv}")
        return argv
    where, script = found
    syms, bad = lex_script(script)
    shape, curls = check_shape(syms)
    if not bad and len(curls) == 1 and any(p.fullmatch(shape) for p in CHECK_SHAPES):
        curl = parse_curl(command_name(curls[0].words)[1])
        if isinstance(curl, Curl):
            if len(argv) > 1:
                ctx.warn(loc, f"vrrp_script {name}: arguments {argv[1:]} to {argv[0]} are dropped")
            ctx.warn(loc, f"vrrp_script {name}: {where}:{curls[0].line}: curl check became an http probe")
            return curl
        ctx.warn(loc, f"vrrp_script {name}: {where}:{curls[0].line}: {curl}; kept as an exec probe")
        return argv
    ctx.warn(loc, f"vrrp_script {name}: {where} is not a single curl check; kept as an exec probe")
    return argv
