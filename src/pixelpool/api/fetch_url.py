"""Image inputs given as http(s) URLs: fetched by the server, off by default.

Fetching a URL for a client makes the server a client of whatever the URL names,
so the rules are strict (see docs/security.md, "URL inputs"):

- `limits.fetch_urls` must be on; otherwise a URL is a 400 saying how to enable it.
- http and https only. The host is resolved once; if ANY of its addresses is not
  a public one (loopback, private, link-local, multicast, reserved, unspecified,
  shared, IPv4 embedded in IPv6 that is one of these), the URL is refused (403).
- The connection goes to the checked address itself (no second lookup that could
  answer differently), with the URL's host as the Host header and TLS server name,
  so certificates are still verified against the host name. No proxy is used.
- Redirects are followed by hand, at most MAX_REDIRECTS, each hop checked anew.
- The body is streamed and cut off past `server.max_body_bytes` (413), and the whole
  fetch, lookups and redirects included, must end within `limits.fetch_timeout_s`
  (400: the URL is the client's input; 408 would invite an automatic retry).
- The type is read from the bytes (`uploads.check_image`), never from the
  Content-Type header: what is not an image is a 422.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import httpx

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.uploads import CheckedImage, check_image
from pixelpool.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_REDIRECTS = 3
MAX_URL_CHARS = 4096
SCHEMES = ("http", "https")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_CHUNK = 64 * 1024


def looks_like_url(value: str) -> bool:
    """Whether an image input is meant as a URL (`scheme://...`) rather than base64."""
    return bool(_URL_LIKE.match(value))


def address_problem(ip: IPAddress) -> str | None:
    """Why the server must not connect to `ip` ("a loopback address"...), or None if public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (inside an IPv6 address)" if problem else None
    checks = (
        ("an unspecified address", ip.is_unspecified),
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
        ("a shared (carrier-grade NAT) address", ip in _SHARED),
        ("an address that is not public", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (off the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


@dataclass(frozen=True)
class _Fetch:
    """One URL fetch for an input `field`, under its limits."""

    field: str
    max_bytes: int
    timeout_s: float
    resolve: Resolver
    allowed: Collection[IPAddress]
    verify: ssl.SSLContext | None

    def error(self, message: str, status: int = 400) -> ApiError:
        return field_error(self.field, message, status)

    async def check(self, url: httpx.URL) -> IPAddress:
        """The address to connect to for `url`, once the scheme and every address passed."""
        if url.scheme not in SCHEMES:
            shown = url.scheme or "none"
            raise self.error(f"URL scheme {shown!r} is not allowed; use http or https")
        host = url.host
        if not host:
            raise self.error("URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = await self.resolve(host, port)
            except (OSError, UnicodeError, ValueError) as exc:
                raise self.error(f"URL host {host!r} does not resolve") from exc
        if not addresses:
            raise self.error(f"URL host {host!r} does not resolve")
        for ip in addresses:
            problem = None if ip in self.allowed else address_problem(ip)
            if problem:
                raise self.error(f"URL resolves to {problem} ({ip}); refused", 403)
        return addresses[0]

    async def follow(self, url: httpx.URL) -> bytes:
        """GET `url`, following redirects by hand, each hop checked and pinned."""
        timeout = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=timeout, verify=self.verify or True
        ) as client:
            for hop in range(MAX_REDIRECTS + 1):
                request = _pinned_request(client, url, await self.check(url))
                try:
                    response = await client.send(request, stream=True)
                except httpx.TimeoutException as exc:
                    raise TimeoutError from exc
                except httpx.HTTPError as exc:
                    raise self.error(f"URL could not be fetched ({type(exc).__name__})") from exc
                try:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        if hop == MAX_REDIRECTS:
                            raise self.error(f"URL redirects more than {MAX_REDIRECTS} times")
                        url = self.redirect(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise self.error(f"URL answered HTTP {response.status_code}, not an image")
                    return await self.read(response)
                finally:
                    await response.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    def redirect(self, url: httpx.URL, location: str) -> httpx.URL:
        try:
            return url.join(location)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise self.error("URL redirects to an invalid URL") from exc

    async def read(self, response: httpx.Response) -> bytes:
        """The body, stopping as soon as it passes `max_bytes` (413)."""
        too_large = self.error(f"URL's content is larger than {self.max_bytes} bytes", 413)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        seen = 0
        try:
            async for chunk in response.aiter_bytes(_CHUNK):
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise too_large
                chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise TimeoutError from exc
        except httpx.HTTPError as exc:
            raise self.error(f"URL's content could not be read ({type(exc).__name__})") from exc
        return b"".join(chunks)


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: IPAddress) -> httpx.Request:
    """A GET to `address` itself, with the URL's host as the Host header and TLS name."""
    host_header = url.netloc.decode("ascii").rpartition("@")[2]
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        headers={"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"},
        extensions={"sni_hostname": url.raw_host.decode("ascii")},
    )


async def fetch_url(
    url: str,
    field: str,
    *,
    max_bytes: int,
    timeout_s: float,
    resolve: Resolver = system_resolve,
    allowed: Collection[IPAddress] = (),
    verify: ssl.SSLContext | None = None,
) -> bytes:
    """The body of `url`, under the rules above, or an ApiError naming `field`.

    resolve, allowed and verify exist for tests (a name that resolves to a test
    address; the test server's own address let through; a test CA to trust); the
    server never passes them."""
    fetch = _Fetch(field, max_bytes, timeout_s, resolve, allowed, verify)
    if len(url) > MAX_URL_CHARS:
        raise fetch.error(f"URL is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise fetch.error(f"is not a valid URL: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            return await fetch.follow(parsed)
    except TimeoutError as exc:
        message = f"URL did not answer within {timeout_s:g} s (limits.fetch_timeout_s)"
        raise fetch.error(message) from exc


def check_fetch_enabled(settings: Settings, field: str) -> None:
    """A URL input while `limits.fetch_urls` is off: a 400 saying how to enable it."""
    if not settings.limits.fetch_urls:
        message = (
            "is a URL, and this server does not fetch URLs; send the image as base64,"
            " or set limits.fetch_urls = true (PIXELPOOL_LIMITS__FETCH_URLS=1)"
        )
        raise field_error(field, message, 400)


async def fetch_image(
    settings: Settings,
    url: str,
    field: str,
    *,
    resolve: Resolver = system_resolve,
    allowed: Collection[IPAddress] = (),
) -> CheckedImage:
    """The image at `url`, fetched and checked like an upload, for an input `field`
    (e.g. `images[0]`): what a route calls (with `state.settings`) when
    `looks_like_url` holds. resolve and allowed: for tests only, as in `fetch_url`."""
    check_fetch_enabled(settings, field)
    data = await fetch_url(
        url,
        field,
        max_bytes=settings.server.max_body_bytes,
        timeout_s=settings.limits.fetch_timeout_s,
        resolve=resolve,
        allowed=allowed,
    )
    try:
        return await asyncio.to_thread(check_image, data, field, settings.limits.max_input_pixels)
    except ApiError as exc:  # say that it is the URL's content that is not an image
        raise ApiError(exc.status, f"{field}: URL's content {exc.detail}", field) from exc
