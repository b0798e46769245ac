"""A model hub on loopback, speaking the part of the Hub's HTTP API that huggingface_hub
uses to download: repo info with its file list, and `resolve` with the headers it
checks (X-Repo-Commit, ETag, Content-Length) and Range requests for resuming."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_FILES = re.compile(r"^/files/(?P<file>[^/]+)$")


class FakeHub:
    """repos: repo id -> {path in repo: file on disk}; files: direct URL downloads."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}
        self.files: dict[str, Path] = {}
        self.requested: list[tuple[str, str]] = []
        self.ranges: list[str] = []  # Range headers received (resumed downloads)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _missing(self, code: str, body: bool) -> None:
                data = json.dumps({"error": code}).encode()
                self._send(
                    404, {"X-Error-Code": code, "Content-Type": "application/json"}, data, body
                )

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requested.append((self.command, path))
                if m := _INFO.match(path):
                    repo = hub.repos.get(m["repo"])
                    if repo is None:
                        return self._missing("RepoNotFound", body)
                    siblings = [{"rfilename": p, "size": f.stat().st_size} for p, f in repo.items()]
                    info = {"id": m["repo"], "sha": hub.commit(m["repo"]), "siblings": siblings}
                    return self._send(200, {"Content-Type": "application/json"},
                                      json.dumps(info).encode(), body)  # fmt: skip
                if m := _RESOLVE.match(path):
                    repo = hub.repos.get(m["repo"])
                    if repo is None:
                        return self._missing("RepoNotFound", body)
                    if m["file"] not in repo:
                        return self._missing("EntryNotFound", body)
                    return self._file(
                        repo[m["file"]], {"X-Repo-Commit": hub.commit(m["repo"])}, body
                    )
                if (m := _FILES.match(path)) and m["file"] in hub.files:
                    return self._file(hub.files[m["file"]], {}, body)
                return self._missing("EntryNotFound", body)

            def _file(self, file: Path, headers: dict[str, str], body: bool) -> None:
                data = file.read_bytes()
                headers = {**headers, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes"}  # fmt: skip
                if m := re.match(r"bytes=(\d+)-$", self.headers.get("Range", "")):
                    hub.ranges.append(m[0])
                    start = int(m[1])
                    if start >= len(data):
                        return self._send(416, headers, b"", body)
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._send(206, headers, data[start:], body)
                return self._send(200, headers, data, body)

        return Handler
