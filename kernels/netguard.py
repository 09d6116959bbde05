"""Where the app may connect for a kernel server that a person registered (request forgery guard).

Rules:
- A registered server's URL is only a place: http or https, a host, an optional port and a plain
  path (`clean_url`). No user info, query or fragment: the app appends its own API paths, and a
  URL ending in `?` must not push them into a query string of the caller's choosing.
- Its host must resolve only to public addresses. Loopback, private, link-local, unique-local,
  shared, multicast, unspecified, reserved and cloud metadata addresses are refused, IPv4 and
  IPv6 alike, also when an IPv6 address carries an IPv4 one (mapped, 6to4, NAT64, Teredo).
  Exceptions: the deployment's own default server (`JUPYTER_SERVER_URL`, its exact origin) and
  the hosts `KERNEL_SERVER_ALLOW_HOSTS` names.
- The check runs again on every connection, and the connection goes to the very address just
  checked (`PinnedBackend` for HTTP, `pinned_address` for the kernel websocket), so a DNS answer
  that changes between the check and the connect cannot swap the address. The Host header and
  the TLS server name stay the URL's host.
- `resolve` is the only place a name is resolved (tests replace it). It blocks: call it from a
  thread (`to_thread`) when in the event loop.
- Refusals are a fixed set of sentences naming the host and the class of address, never
  anything a server said.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import re
import socket
import typing
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
from django.conf import settings

MAX_URL_LENGTH = 500  # KernelServer.url's column

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services outside the link-local range
METADATA = {
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_PATH = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")


class Refused(Exception):
    """The app may not connect there; the message is a sentence for the server's owner."""


def clean_url(url: str) -> str:
    """The normalised server URL (`scheme://host[:port][/path]`, no trailing slash), or `Refused`."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"The address is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("That is not a valid http:// or https:// address.") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Refused("Give an http:// or https:// address.")
    if "?" in url or "#" in url:
        raise Refused("Give the server's address without a query (?) or fragment (#).")
    if "@" in parts.netloc:
        raise Refused(
            "Give the server's address without a user name or password; the token has its own field."
        )
    if not _PATH.fullmatch(parts.path) or any(ord(c) < 33 for c in url):
        raise Refused("The address's path may hold only letters, digits and - . _ ~ / (or %-escapes).")
    path = posixpath.normpath("/" + parts.path).lstrip("/") if parts.path.strip("/") else ""
    host = parts.hostname.lower()
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme.lower(), netloc, "/" + path if path else "", "", ""))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, 6to4, NAT64, Teredo)."""
    found: list[Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_class(address: str) -> str:
    """What kind of non-public address this is ("" if public)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates = [*_embedded_ipv4(ip), ip]  # name the IPv4 address's class first
    for one in candidates:
        if label := _class_of(one):
            return label
    return ""


def _class_of(ip: Address) -> str:
    checks = (
        (ip in METADATA, "a cloud metadata address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in UNIQUE_LOCAL, "a unique-local address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "a non-public address"),
    )
    return next((label for hit, label in checks if hit), "")


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (blocking)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def matches(host: str, pattern: str) -> bool:
    return pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def explicitly_allowed(scheme: str, host: str, port: int) -> bool:
    """The deployment's default server, or a host `KERNEL_SERVER_ALLOW_HOSTS` names."""
    host = host.strip("[]").lower()
    default = settings.JUPYTER_SERVER_URL
    if default and origin(default) == (scheme, host, port):
        return True
    return any(matches(host, p) for p in settings.KERNEL_SERVER_ALLOW_HOSTS if p != "*")


def checked_address(scheme: str, host: str, port: int) -> str:
    """The address to connect to for `host`, checked now (blocking: resolves), or `Refused`."""
    host = host.strip("[]").lower()
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        literal = False
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError):
            raise Refused(f"The name {host} could not be resolved.") from None
    if not addresses:
        raise Refused(f"The name {host} could not be resolved.")
    if not explicitly_allowed(scheme, host, port):
        for address in addresses:
            if label := address_class(address):
                what = "it is" if literal else "it resolves to"
                raise Refused(f"This site does not run kernels on {host}: {what} {label}.")
    return addresses[0]


def url_refusal(url: str) -> str:
    """Why the app may not connect to the server at `url` ("" if it may). Blocking (resolves)."""
    try:
        scheme, host, port = origin(clean_url(url))
        checked_address(scheme, host, port)
    except Refused as exc:
        return str(exc)
    return ""


async def pinned_address(url: str) -> str:
    """`checked_address` for `url`, from the event loop."""
    return await asyncio.to_thread(checked_address, *origin(url))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network, but every TCP connection goes to an address checked just before."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self._direct = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await asyncio.to_thread(checked_address, self.scheme, host, port)
        return await self._direct.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, *args: typing.Any, **kwargs: typing.Any
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("This site does not run kernels on local sockets.")

    async def sleep(self, seconds: float) -> None:
        await self._direct.sleep(seconds)


def pinned_transport(base_url: str) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only to checked addresses (no proxies, no env)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx has no public way to pass a network backend; the pool is what it builds by default
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=PinnedBackend(origin(base_url)[0]),
    )
    return transport
