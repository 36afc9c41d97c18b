from __future__ import annotations

import pytest

from hasup._addr import format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4:5405", ("1.2.3.4", 5405)),
        ("[fe80::1]:5405", ("fe80::1", 5405)),
        ("[fe80::1%eth0]:5405", ("fe80::1%eth0", 5405)),
        ("[::1]:0", ("::1", 0)),
        ("edge-b.lan:80", ("edge-b.lan", 80)),
        ("localhost:65535", ("localhost", 65535)),
        (" 10.0.0.1:1 ", ("10.0.0.1", 1)),
    ],
)
def test_valid(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 5405)),
        ("[::1]", ("::1", 5405)),
        ("fe80::1", ("fe80::1", 5405)),
        ("edge-b", ("edge-b", 5405)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
    ],
)
def test_default_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, default_port=5405) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("10.0.0.1", "missing ':port'"),
        ("10.0.0.1:", "is not a number"),
        ("10.0.0.1:http", "is not a number"),
        ("10.0.0.1:-1", "is not a number"),
        ("10.0.0.1:65536", "out of range"),
        ("fe80::1", "in brackets"),
        ("fe80::1:5405", "in brackets"),
        ("[fe80::1:5405", "missing ']'"),
        ("[fe80::1]5405", "expected ':port'"),
        ("[not-ipv6]:80", "not a valid IPv6"),
        (":5405", "missing host"),
        ("999.1.1.1:80", "not a valid IPv4"),
        ("10.0.0:80", "not a valid IPv4"),
        ("bad host:80", "not a valid host name"),
        ("-edge:80", "not a valid host name"),
        ("10.0.0.1:٣", "is not a number"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_not_a_string() -> None:
    with pytest.raises(ValueError, match="expected an address string"):
        parse_address(5405)  # type: ignore[arg-type]


def test_format_round_trip() -> None:
    for text in ("10.0.0.1:5405", "[fe80::1]:5405", "edge-b:1"):
        assert format_address(*parse_address(text)) == text
