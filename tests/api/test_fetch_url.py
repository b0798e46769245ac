"""URL image inputs against a real local HTTP server: refused by default (it is on
loopback), fetched when the test lets its one address through, and every other
refusal (private ranges, redirects to loopback, other schemes, size, content,
time) a 4xx naming the field."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import trustme
from PIL import Image

from pixelpool.api.errors import ApiError
from pixelpool.api.fetch_url import (
    IPAddress,
    address_problem,
    fetch_image,
    fetch_url,
    looks_like_url,
)
from pixelpool.config import Settings

FIELD = "images[0]"
LOCAL = ipaddress.ip_address("127.0.0.1")
MAX_BYTES = 4096


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 60)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set by the fixture; /slow waits for it

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parsed = urlparse(self.path)
        query = parse_qs(parsed.query)
        path = parsed.path
        if path == "/img.png":  # the header lies: the bytes say PNG
            self._send(200, PNG, "text/plain")
        elif path == "/html":  # the header lies the other way
            self._send(200, b"<html><body>not an image</body></html>", "image/png")
        elif path == "/big":
            self._send(200, b"\0" * (MAX_BYTES + 1), "image/png")
        elif path == "/big-stream":  # no Content-Length: the body ends when the server closes
            self.close_connection = True
            self._send(200, b"\0" * (MAX_BYTES * 4), "image/png", length=False)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/host":  # only for the original Host: shows the pinned connection
            expected = query["expect"][0]
            ok = self.headers.get("Host") == expected
            self._send(200 if ok else 400, PNG if ok else b"wrong host", "image/png")
        elif path == "/slow":
            self.release.wait(30)
            self._send(200, PNG, "image/png")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    release.set()
    httpd.shutdown()
    httpd.server_close()


def _fetch(url: str, timeout_s: float = 10.0, **kwargs: Any) -> bytes:
    return asyncio.run(fetch_url(url, FIELD, max_bytes=MAX_BYTES, timeout_s=timeout_s, **kwargs))


def _refused(url: str, status: int, words: str, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        _fetch(url, **kwargs)
    assert err.value.status == status, err.value.message
    assert err.value.field == FIELD
    assert err.value.message.startswith(f"{FIELD}: ")
    assert words in err.value.message, err.value.message
    return err.value


def _enabled(**limits: Any) -> Settings:
    return Settings.model_validate({"limits": {"fetch_urls": True, **limits}})


# --- the default path refuses ---------------------------------------------------------


def test_urls_are_off_by_default_and_the_error_says_how_to_enable() -> None:
    assert Settings().limits.fetch_urls is False
    with pytest.raises(ApiError) as err:
        asyncio.run(fetch_image(Settings(), "https://example.com/a.png", FIELD))
    assert err.value.status == 400 and err.value.field == FIELD
    assert "limits.fetch_urls" in err.value.message


def test_the_local_server_is_refused_when_fetching_is_on(server: str) -> None:
    with pytest.raises(ApiError) as err:
        asyncio.run(fetch_image(_enabled(), f"{server}/img.png", FIELD))
    assert err.value.status == 403 and err.value.field == FIELD
    assert "loopback" in err.value.message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.1.2.3/a.png", "private"),
        ("http://192.168.0.10/a.png", "private"),
        ("http://172.16.5.4/a.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
        ("http://[::ffff:10.0.0.1]/a.png", "private"),
        ("http://[fe80::1]/a.png", "link-local"),
        ("http://[fd00::1]/a.png", "private"),
        ("http://[2002:7f00:1::]/a.png", "loopback"),  # 6to4 around 127.0.0.1
        ("http://0.0.0.0/a.png", "unspecified"),
        ("http://[::]/a.png", "unspecified"),
        ("http://224.0.0.1/a.png", "multicast"),
        ("http://100.64.0.1/a.png", "shared"),
        ("http://240.0.0.1/a.png", "reserved"),
        ("http://2130706433/a.png", "loopback"),  # 127.0.0.1 as one number
        ("http://127.1/a.png", "loopback"),
        ("http://0/a.png", "unspecified"),
        ("http://localhost:1/a.png", "loopback"),
    ],
)
def test_non_public_addresses_are_refused(url: str, words: str) -> None:
    _refused(url, 403, words)


def test_a_name_with_any_non_public_address_is_refused() -> None:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]

    _refused("https://images.example/a.png", 403, "private", resolve=resolve)


def test_a_name_that_does_not_resolve_is_a_400() -> None:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    _refused("https://images.invalid/a.png", 400, "does not resolve", resolve=resolve)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/1", "data:,x"]
)
def test_only_http_and_https(url: str) -> None:
    _refused(url, 400, "scheme")


def test_looks_like_url() -> None:
    assert looks_like_url("https://example.com/a.png")
    assert looks_like_url("file:///etc/passwd")
    assert not looks_like_url("iVBORw0KGgoAAAANSUhEUgAA")
    assert not looks_like_url("data:image/png;base64,iVBO")


@pytest.mark.parametrize("ip", ["8.8.8.8", "2606:4700:4700::1111", "93.184.216.34"])
def test_public_addresses_pass(ip: str) -> None:
    assert address_problem(ipaddress.ip_address(ip)) is None


# --- with the test server's own address let through ----------------------------------


def test_fetches_a_png_whatever_the_header_says(server: str) -> None:
    settings = _enabled()
    checked = asyncio.run(fetch_image(settings, f"{server}/img.png", FIELD, allowed={LOCAL}))
    assert checked.data == PNG
    assert (checked.width, checked.height, checked.media_type) == (16, 12, "image/png")


def test_connects_to_the_checked_address_with_the_original_host(server: str) -> None:
    """The name resolves once (here: to the test server); the request goes to that
    address, Host names the URL's host. `.invalid` never resolves, so a second lookup
    would have failed."""
    port = server.rsplit(":", 1)[1]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [LOCAL]

    host = f"images.invalid:{port}"
    url = f"http://{host}/host?expect={host}"
    assert _fetch(url, resolve=resolve, allowed={LOCAL}) == PNG
    assert asked == ["images.invalid"]


def test_relative_redirects_are_followed(server: str) -> None:
    assert _fetch(f"{server}/redirect?to=/img.png", allowed={LOCAL}) == PNG


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("http://127.0.0.2:{port}/img.png", "loopback"),
        ("http://[::1]:{port}/img.png", "loopback"),
        ("http://10.0.0.1/img.png", "private"),
        ("http://[::ffff:127.0.0.1]:{port}/img.png", "loopback"),
    ],
)
def test_a_redirect_to_a_non_public_address_is_refused(
    server: str, target: str, words: str
) -> None:
    port = server.rsplit(":", 1)[1]
    _refused(f"{server}/redirect?to={target.format(port=port)}", 403, words, allowed={LOCAL})


def test_a_redirect_to_another_scheme_is_refused(server: str) -> None:
    _refused(f"{server}/redirect?to=file:///etc/passwd", 400, "scheme", allowed={LOCAL})


def test_a_redirect_to_a_malformed_url_is_a_400(server: str) -> None:
    _refused(f"{server}/redirect?to=http://[::1", 400, "URL", allowed={LOCAL})


def test_at_most_three_redirects(server: str) -> None:
    hop = "/img.png"
    for _ in range(3):
        hop = f"/redirect?to={hop.replace('?', '%3F').replace('=', '%3D')}"
    assert _fetch(server + hop, allowed={LOCAL}) == PNG
    hop = f"/redirect?to={hop.replace('%', '%25').replace('?', '%3F').replace('=', '%3D')}"
    _refused(server + hop, 400, "more than 3", allowed={LOCAL})


def test_oversize_bodies_are_a_413(server: str) -> None:
    _refused(f"{server}/big", 413, f"larger than {MAX_BYTES} bytes", allowed={LOCAL})
    _refused(f"{server}/big-stream", 413, f"larger than {MAX_BYTES} bytes", allowed={LOCAL})


def test_upload_limit_applies_to_fetches(server: str) -> None:
    settings = Settings.model_validate(
        {"limits": {"fetch_urls": True}, "server": {"max_body_bytes": 1024}}
    )
    big = f"{server}/big-stream"
    with pytest.raises(ApiError) as err:
        asyncio.run(fetch_image(settings, big, FIELD, allowed={LOCAL}))
    assert err.value.status == 413 and "1024" in err.value.message


def test_content_that_is_not_an_image_is_a_422(server: str) -> None:
    with pytest.raises(ApiError) as err:
        asyncio.run(fetch_image(_enabled(), f"{server}/html", FIELD, allowed={LOCAL}))
    assert err.value.status == 422 and err.value.field == FIELD
    assert "URL's content is not an image" in err.value.message


def test_an_error_status_is_a_400(server: str) -> None:
    _refused(f"{server}/missing.png", 400, "HTTP 404", allowed={LOCAL})


def test_a_fetch_that_takes_too_long_is_a_400(server: str) -> None:
    _refused(f"{server}/slow", 400, "did not answer within 0.3 s", timeout_s=0.3, allowed={LOCAL})


def test_an_unreachable_port_is_a_400(server: str) -> None:
    from pixelpool.testing.server import free_port

    _refused(f"http://127.0.0.1:{free_port()}/a.png", 400, "could not be fetched", allowed={LOCAL})


def test_malformed_urls_are_a_400() -> None:
    _refused("http://", 400, "")
    _refused("http://" + "a" * 5000, 400, "longer than")


# --- https: the pinned address, with the URL's host for SNI and the certificate -------


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[str, ssl.SSLContext]]:
    """An https server on 127.0.0.1 whose certificate names only `images.test`."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("images.test").configure_cert(context)
    handler = type("Handler", (_Handler,), {"release": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    yield str(httpd.server_address[1]), client_context
    httpd.shutdown()
    httpd.server_close()


async def _to_local(host: str, port: int) -> list[IPAddress]:
    return [LOCAL]


def test_https_verifies_the_certificate_against_the_urls_host(tls_server: tuple) -> None:
    port, trust = tls_server
    url = f"https://images.test:{port}/host?expect=images.test:{port}"
    assert _fetch(url, resolve=_to_local, allowed={LOCAL}, verify=trust) == PNG


def test_https_to_a_host_the_certificate_does_not_name_fails(tls_server: tuple) -> None:
    port, trust = tls_server
    url = f"https://other.test:{port}/img.png"
    kwargs = {"resolve": _to_local, "allowed": {LOCAL}, "verify": trust}
    _refused(url, 400, "could not be fetched", **kwargs)
