"""A small threaded HTTP/1.1 file server with Range support and fault modes (BEP 19 tests).

It serves the files under ``root`` at ``/<percent-escaped relative path>`` -- what a web seed
(``url-list``) of a torrent made from ``root``'s contents looks like -- and answers single
``Range: bytes=a-b`` / ``a-`` / ``-n`` requests with ``206`` and a ``Content-Range`` (``416`` if
unsatisfiable), like nginx or Apache.

``fault`` changes every answer from then on (tests switch it while a client runs):

* ``None``: correct answers;  ``"404"``, ``"416"``, ``"500"``: that status, no body;
* ``"503"``: 503 with ``Retry-After: 1``;
* ``"truncate"``: the right headers, then half the body and a closed connection;
* ``"oversize"``: the right Content-Range, but a body (and Content-Length) one byte longer;
* ``"corrupt"``: the right headers and length, every byte of the body flipped;
* ``"ignore-range"``: ``200`` with the whole file, whatever the range;
* ``"wrong-range"``: ``206`` for a range shifted by one byte;
* ``"hang"``: headers never come (the client must time out);
* ``"redirect"``: ``302`` to the same path under ``/moved``, which serves normally;
* ``"redirect-loop"``: ``302`` to itself, forever.

``rate`` (bytes/s, 0 = unlimited) throttles every body.  ``requests`` records
``(path, Range header)`` of every request (thread-safe).  Binds ``host`` (a loopback address)
on a free port; a context manager stops the server and its threads.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class WebSeedServer:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root.resolve()
        self.fault: str | None = None
        self.rate = 0
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def url_for(self, *components: str) -> str:
        return self.url + "/".join(urllib.parse.quote(c, safe="") for c in components)

    def __enter__(self) -> WebSeedServer:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def paths_requested(self) -> list[str]:
        with self._lock:
            return [p for p, _ in self.requests]

    # ------------------------------------------------------------------ one request

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        fault = self.fault
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append((h.path, rng))
        path = h.path.split("?", 1)[0]
        if fault == "hang":
            self._stop.wait(60)
            h.close_connection = True
            return
        if fault in ("404", "416", "500", "503"):
            h.send_response(int(fault))
            if fault == "503":
                h.send_header("Retry-After", "1")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if path.startswith("/moved/"):
            path = path[len("/moved") :]
        elif fault in ("redirect", "redirect-loop"):
            h.send_response(302)
            h.send_header("Location", h.path if fault == "redirect-loop" else "/moved" + h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        rel = urllib.parse.unquote(path.lstrip("/"))
        target = (self.root / rel).resolve()
        if not target.is_file() or self.root not in target.parents:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        size = target.stat().st_size
        first, last = 0, size - 1
        status = 200
        if rng is not None and fault != "ignore-range":
            m = _RANGE.match(rng.strip())
            if m is None or (not m[1] and not m[2]):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            if m[1]:
                first = int(m[1])
                last = min(int(m[2]), size - 1) if m[2] else size - 1
            else:
                first, last = max(0, size - int(m[2])), size - 1
            if first >= size or last < first:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        with target.open("rb") as f:
            f.seek(first)
            body = f.read(last - first + 1)
        claimed_first, claimed_last = first, last
        if fault == "wrong-range":
            claimed_first, claimed_last = first + 1, last + 1
        if fault == "oversize":
            body += b"\0"
        if fault == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        h.send_response(status)
        if status == 206:
            h.send_header("Content-Range", f"bytes {claimed_first}-{claimed_last}/{size}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if fault == "truncate":
            body = body[: len(body) // 2]
            h.close_connection = True
        self._send(h, body)

    def _send(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            if not self.rate:
                h.wfile.write(body)
                return
            chunk = max(1, self.rate // 20)
            for i in range(0, len(body), chunk):
                if self._stop.is_set():
                    return
                h.wfile.write(body[i : i + chunk])
                time.sleep(chunk / self.rate)
        except OSError:
            h.close_connection = True
