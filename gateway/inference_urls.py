"""Which ``inference_url`` values a collection may name: the gateway dials them, so they are allow-listed.

By default a collection may only name models of MODELS; ``INFERENCE_URL_HOSTS`` (comma list) lists the
inference services collections may name directly. Each pattern is ``host`` (any port), ``host:port``,
``*.example.com`` (any subdomain, any port), ``*.example.com:50051``, or ``*`` (any address: every
host:port the gateway can reach, only for trusted callers). IPv6 addresses are written in brackets
(``[fd00::5]:50051``). Host names compare case-insensitively, without a trailing dot.
"""

from __future__ import annotations


def split_address(address: str) -> tuple[str, str]:
    """``host:port`` -> (host, port); the host without brackets, lower-case, no trailing dot."""
    host, sep, port = address.strip().rpartition(":")
    if not sep:
        host, port = address.strip(), ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower().rstrip("."), port


def _pattern(pattern: str) -> tuple[str, str]:
    """A pattern's (host, port); port "" means any. A bare IPv6 address (no brackets) is a host."""
    text = pattern.strip()
    if text.count(":") > 1 and not text.startswith("["):
        return text.lower(), ""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isdigit() or port == "*"):
        return split_address(text)[0], ""
    return split_address(text)[0], "" if port == "*" else port


def _host_matches(host: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def inference_url_allowed(address: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when ``address`` (host:port) matches one of ``patterns`` (see the module doc)."""
    host, port = split_address(address)
    for raw in patterns:
        p_host, p_port = _pattern(raw)
        if p_port and p_port != port:
            continue
        if _host_matches(host, p_host):
            return True
    return False
