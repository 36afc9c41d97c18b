"""``type = "http"``: a request whose status must be in the expected set.

Unlike ``curl URL`` without ``-f`` (the keepalived recipe's check), a 401 or a 500 is
*unhealthy* here: only the statuses in ``expect_status`` count as healthy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import anyio

from .._httpclient import HttpClientError, parse_http_url, request
from .base import Probe, ProbeOptions, ProbeOutcome

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["HttpProbe", "parse_status_set"]

#: Read at most this much of the body when looking for ``body_contains``.
_MAX_BODY = 1 << 20
_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")


def parse_status_set(text: str) -> tuple[tuple[int, int], ...]:
    """``"200"``, ``"200-299"`` or ``"200,204,300-399"`` → inclusive ranges.

    Raise ``ValueError`` with a readable reason otherwise.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        item = part.strip()
        low_text, sep, high_text = item.partition("-")
        low_text, high_text = low_text.strip(), high_text.strip()
        if not low_text.isdigit() or (sep and not high_text.isdigit()):
            raise ValueError(f'{text!r} is not a status list (use e.g. "200", "200-299" or "200,204,300-399")')
        low = int(low_text)
        high = int(high_text) if sep else low
        for code in (low, high):
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status (100-599)")
        if high < low:
            raise ValueError(f"{item!r}: range is reversed")
        ranges.append((low, high))
    return tuple(ranges)


class HttpProbe(Probe):
    """Healthy when ``method url`` answers with a status in ``expect_status`` (and the
    body contains ``body_contains``, if given) within ``options.timeout``.

    Redirects are not followed (a 3xx is judged by ``expect_status``); proxies from
    the environment are ignored (a health check must reach the service directly); each
    check opens a new connection (a pooled one would hide a listener that stopped
    accepting). The request is made by :mod:`hasup._httpclient` (h11).
    """

    kind: ClassVar[str] = "http"

    def __init__(
        self,
        options: ProbeOptions,
        *,
        url: str,
        expect_status: str = "200-399",
        body_contains: str | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(options)
        self._url = parse_http_url(url)
        self.url = url
        self.expect_status = expect_status
        self.status_ranges = parse_status_set(expect_status)
        self.body_contains = body_contains
        self.method = method.upper()
        self.headers = dict(headers or {})

    @classmethod
    def from_config(cls, section: Section, options: ProbeOptions) -> Self:
        url = section.get_str("url")
        try:
            parse_http_url(url)
        except ValueError as exc:
            raise section.error("url", str(exc)) from None
        raw_status = section.raw("expect_status", "200-399")
        if isinstance(raw_status, int) and not isinstance(raw_status, bool):
            raw_status = str(raw_status)
        if not isinstance(raw_status, str):
            raise section.error("expect_status", 'expected a string such as "200-399" or "200,204"')
        try:
            parse_status_set(raw_status)
        except ValueError as exc:
            raise section.error("expect_status", str(exc)) from None
        headers = section.get_str_table("headers")
        probe = cls(
            options,
            url=url,
            expect_status=raw_status,
            body_contains=section.get_str("body_contains", None),
            method=section.get_str("method", "GET", choices=_METHODS),
            headers=headers,
        )
        section.finish()
        return probe

    def status_ok(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_ranges)

    async def check(self) -> ProbeOutcome:
        # Bound the whole exchange, so a slowly trickling answer cannot exceed the timeout.
        with anyio.move_on_after(self.options.timeout):
            return await self._check()
        return ProbeOutcome(False, f"no complete answer within {self.options.timeout:g}s")

    async def _check(self) -> ProbeOutcome:
        try:
            answer = await request(
                self._url,
                method=self.method,
                headers=self.headers,
                read_body=_MAX_BODY if self.body_contains is not None else 0,
            )
        except HttpClientError as exc:
            return ProbeOutcome(False, str(exc))
        status = answer.status
        if not self.status_ok(status):
            return ProbeOutcome(False, f"HTTP {status}, expected {self.expect_status}")
        if self.body_contains is not None:
            try:
                text = answer.body.decode(answer.charset, "replace")
            except LookupError:  # an unknown charset
                text = answer.body.decode("utf-8", "replace")
            if self.body_contains not in text:
                return ProbeOutcome(False, f"HTTP {status}, body does not contain {self.body_contains!r}")
        return ProbeOutcome(True, f"HTTP {status}")

    def describe(self) -> str:
        return f"http probe {self.options.name!r}: {self.method} {self.url} expecting {self.expect_status}"
