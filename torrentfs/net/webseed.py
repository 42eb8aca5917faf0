"""Web seeds (BEP 19, ``url-list``; magnet ``ws=``): pieces fetched with HTTP range requests (L4).

A web seed is an HTTP(S) server holding the torrent's files under their torrent names. The engine
treats it as one more peer that has every piece: it asks the `PiecePicker` for work like any peer
(so reader deadlines, priorities and streaming order apply), and every byte it returns goes
through the same SHA-1 verification as peer data (DESIGN.md §3 rule 6) -- a server is never
trusted more than a peer.

What this module guarantees:

- **BEP 19 URLs** (`file_urls`): for a single-file torrent the URL is used as is, unless it ends in
  ``/``, in which case the torrent's name is appended; for a multi-file torrent the name and the
  file's path are appended (a ``/`` is added first if missing). Every appended component is
  percent-escaped (RFC 3986: only unreserved characters stay) from the torrent's own bytes
  (``name.utf-8``/``path.utf-8`` when present, as libtorrent does), not from the sanitised names
  the mount shows. BEP 47 pad files are never requested: their zeros are made locally.
- **Strict answers** (`fetch_range`): one ``Range: bytes=a-b`` GET per file slice, with
  ``Accept-Encoding: identity``. Accepted: ``206`` whose ``Content-Range`` names exactly the range
  asked (and the file's length, when the server states it), or ``200`` only when the range is the
  whole file. The body must be exactly the range's length: a truncated or oversized body, any
  other status (404, 416, 5xx ...), an encoded body, a redirect loop, more than
  `WebSeedConfig.max_redirects` redirects, a transport error or a timeout is a `WebSeedError`.
  Redirects are followed by hand, so their number is bounded per request.
- **Back-off** (`backoff_delay`): each failure doubles the pause before the next request
  (`WebSeedConfig.backoff_base` .. `backoff_max`, or a longer ``Retry-After``); while paused the
  web seed leaves the picker (its blocks go back to other peers at once). A success resets it.
  Data that fails its hash check counts as a failure too; after `max_hash_failures` such pieces
  the web seed is dropped for the torrent's lifetime.
- **Bounded cost**: at most `connections` requests in flight per web seed, each at most
  `request_bytes` long (rounded up to a block), and every request ends within `timeout` seconds
  (DESIGN.md §3 rule 4); the body is read into one buffer of the expected size and never beyond.
- **Every task has a parent**: `WebSeed.run` runs in the torrent's nursery and its requests in a
  nursery of its own; cancelling it ends them all and hands their blocks back to the picker.
"""

from __future__ import annotations

import bisect
import logging
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from torrentfs import bencode
from torrentfs.errors import BencodeError, TorrentfsError
from torrentfs.metainfo import Metainfo
from torrentfs.rate import RateMeter
from torrentfs.types import BLOCK_SIZE

if TYPE_CHECKING:
    # Imported where a web seed is first fetched from: every torrent imports this module, and
    # httpx costs ~40 ms of start-up that a download from peers alone does not need.
    import httpx

log = logging.getLogger(__name__)

USER_AGENT = "torrentfs/0.1"


class WebSeedError(TorrentfsError):
    """A web seed request that did not return exactly the bytes asked for.

    ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent a usable one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class WebSeedConfig:
    """Limits of one web seed (per torrent)."""

    connections: int = 2
    """Requests in flight at once."""
    request_bytes: int = 1 << 20
    """Most bytes asked in one job (several HTTP requests when it spans files)."""
    timeout: float = 20.0
    """Seconds one HTTP request (redirects and body included) may take."""
    max_redirects: int = 5
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    max_hash_failures: int = 3
    """Pieces failing their hash check before the web seed is dropped for good."""


@dataclass(frozen=True, slots=True)
class FileRange:
    """Bytes ``[first, last]`` (inclusive, as in HTTP) of one file of the torrent.

    ``url`` is None for a BEP 47 pad file (zeros, never fetched).
    """

    url: str | None
    first: int
    last: int
    file_length: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


# ------------------------------------------------------------------------------ URLs (BEP 19)


def _escape(component: bytes) -> str:
    return urllib.parse.quote(component, safe="")


def _text_bytes(value: object) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _utf8_or(preferred: object, fallback: object) -> bytes | None:
    """``name.utf-8`` / ``path.utf-8`` when it is valid UTF-8, else the plain field."""
    if isinstance(preferred, bytes):
        try:
            preferred.decode("utf-8")
            return preferred
        except UnicodeDecodeError:
            pass
    return _text_bytes(fallback)


def _path_of(value: object) -> tuple[bytes, ...] | None:
    if isinstance(value, list) and value and all(isinstance(c, bytes) for c in value):
        return tuple(value)
    return None


def _raw_paths(metainfo: Metainfo) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """The torrent's name and each file's path as bytes, in `metainfo.files` order."""
    try:
        info = bencode.decode(metainfo.info_bytes)
    except BencodeError as exc:  # parse_metainfo decoded these very bytes: a bug if it fails
        raise WebSeedError(f"cannot re-read the info dictionary: {exc}") from None
    if not isinstance(info, dict):
        raise WebSeedError("info dictionary is not a dictionary")
    name = _utf8_or(info.get(b"name.utf-8"), info.get(b"name")) or metainfo.name.encode()
    files = info.get(b"files")
    if not metainfo.multi_file or not isinstance(files, list):
        return name, [(name,)]
    paths: list[tuple[bytes, ...]] = []
    for entry in files:
        entry = entry if isinstance(entry, dict) else {}
        path = _path_of(entry.get(b"path.utf-8"))
        if path is not None:
            try:
                for c in path:
                    c.decode("utf-8")
            except UnicodeDecodeError:
                path = None
        paths.append(path or _path_of(entry.get(b"path")) or ())
    return name, paths


def file_urls(base: str, metainfo: Metainfo) -> list[str | None]:
    """The URL of every file of `metainfo` (None for pad files) under web seed `base` (BEP 19)."""
    base = base.strip().replace(" ", "%20")
    name, paths = _raw_paths(metainfo)
    if not metainfo.multi_file:
        return [base + _escape(name) if base.endswith("/") else base]
    root = base if base.endswith("/") else base + "/"
    root += _escape(name) + "/"
    urls: list[str | None] = []
    for entry, path in zip(metainfo.files, paths, strict=True):
        urls.append(None if entry.pad else root + "/".join(_escape(c) for c in path))
    return urls


class UrlLayout:
    """Maps byte ranges of the torrent to HTTP ranges of files under one web seed."""

    def __init__(self, base: str, metainfo: Metainfo) -> None:
        self.base = base
        self.urls = file_urls(base, metainfo)
        self._files = [f for f in metainfo.files if f.length > 0]
        self._starts = [f.offset for f in self._files]
        self.total_size = metainfo.total_size

    def ranges(self, offset: int, length: int) -> list[FileRange]:
        """The file slices covering torrent bytes ``[offset, offset+length)``, in order."""
        if offset < 0 or length <= 0 or offset + length > self.total_size:
            raise ValueError(f"range {offset}+{length} outside the torrent ({self.total_size})")
        out: list[FileRange] = []
        i = bisect.bisect_right(self._starts, offset) - 1
        end = offset + length
        while offset < end:
            f = self._files[i]
            first = offset - f.offset
            last = min(f.length, end - f.offset) - 1
            out.append(FileRange(self.urls[f.index], first, last, f.length))
            offset = f.offset + last + 1
            i += 1
        return out


def coalesce(
    blocks: Sequence[tuple[int, int, int]], piece_length: int
) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Group ``(piece, begin, length)`` blocks into runs contiguous in the torrent's bytes.

    Returns ``(offset, length, blocks)`` per run, in the order the blocks came (the picker's:
    urgent first), merging only a block that directly follows the previous one.
    """
    runs: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for block in blocks:
        piece, begin, length = block
        offset = piece * piece_length + begin
        if runs:
            start, size, members = runs[-1]
            if start + size == offset:
                runs[-1] = (start, size + length, [*members, block])
                continue
        runs.append((offset, length, [block]))
    return runs


# ------------------------------------------------------------------------------ HTTP


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _check_status(response: httpx.Response, r: FileRange) -> None:
    """Raise unless `response` announces exactly the bytes of `r` (see the module doc)."""
    status = response.status_code
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise WebSeedError(f"HTTP body encoded as {encoding!r} (asked for identity)")
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match is None:
            raise WebSeedError("HTTP 206 without a usable Content-Range")
        first, last, total = int(match[1]), int(match[2]), match[3]
        if (first, last) != (r.first, r.last):
            raise WebSeedError(f"HTTP 206 for bytes {first}-{last}, asked for {r.first}-{r.last}")
        if total != "*" and int(total) != r.file_length:
            raise WebSeedError(f"file is {total} bytes on the server, {r.file_length} expected")
        return
    if status == 200:
        if r.first != 0 or r.last != r.file_length - 1:
            raise WebSeedError("HTTP 200 (whole file) for a range request")
        return
    raise WebSeedError(f"HTTP {status}", retry_after=_retry_after(response))


async def _read_body(response: httpx.Response, size: int) -> bytearray:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) != size:
        raise WebSeedError(f"Content-Length {declared}, expected {size}")
    body = bytearray(size)
    got = 0
    async for chunk in response.aiter_raw():
        if got + len(chunk) > size:
            raise WebSeedError(f"HTTP body longer than the {size} bytes asked for")
        body[got : got + len(chunk)] = chunk
        got += len(chunk)
    if got != size:
        raise WebSeedError(f"HTTP body truncated: {got} of {size} bytes")
    return body


async def fetch_range(client: httpx.AsyncClient, r: FileRange, config: WebSeedConfig) -> bytes:
    """Exactly the bytes of `r`, or `WebSeedError` (within `config.timeout` seconds)."""
    import httpx  # already imported by whoever built `client`: a dict lookup

    if r.url is None:
        return bytes(r.length)
    headers = {
        "Range": f"bytes={r.first}-{r.last}",
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
    url = r.url
    try:
        with trio.fail_after(config.timeout):
            for _ in range(config.max_redirects + 1):
                request = client.build_request("GET", url, headers=headers)
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.next_request is not None:
                        url = str(response.next_request.url)
                        continue
                    _check_status(response, r)
                    return bytes(await _read_body(response, r.length))
                finally:
                    await response.aclose()
            raise WebSeedError(f"more than {config.max_redirects} redirects")
    except trio.TooSlowError:
        raise WebSeedError(f"no answer within {config.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as exc:
        raise WebSeedError(f"{type(exc).__name__}: {exc}") from None


def backoff_delay(failures: int, config: WebSeedConfig, retry_after: float | None = None) -> float:
    """Seconds to pause after the `failures`-th failure in a row (exponential, capped)."""
    if failures <= 0:
        return 0.0
    delay = min(config.backoff_base * 2.0 ** min(failures - 1, 30), config.backoff_max)
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.backoff_max))
    return delay


# ------------------------------------------------------------------------------ the "peer"


class WebSeedHost(Protocol):
    """What a `WebSeed` needs from its torrent (implemented by `torrent.Torrent`)."""

    def web_seed_available(self, seed: WebSeed, available: bool) -> None:
        """Add the seed to the picker as having every piece, or take it out (back-off, end)."""

    def web_seed_pick(self, seed: WebSeed, count: int) -> list[tuple[int, int, int]]:
        """Up to `count` blocks to fetch now (recorded as requested from `seed`)."""

    def web_seed_release(self, seed: WebSeed, blocks: Sequence[tuple[int, int, int]]) -> None:
        """Blocks that were asked of `seed` and did not arrive: pending again."""

    async def web_seed_block(self, seed: WebSeed, piece: int, begin: int, block: bytes) -> None:
        """One received block, into the same path as a peer's ``piece`` message."""


def _label(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class WebSeed:
    """One web seed of one torrent: its state, back-off, and the task fetching from it."""

    def __init__(self, url: str, metainfo: Metainfo, config: WebSeedConfig) -> None:
        self.url = url
        self.address = _label(url)
        """For log lines (like `Peer.address`)."""
        self.config = config
        self.layout = UrlLayout(url, metainfo)
        self.piece_length = metainfo.piece_length
        self.download = RateMeter()
        self.snubbed = False
        self.failures = 0
        self.hash_failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.disabled: str | None = None
        self.in_flight = 0
        self._available = False
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return f"<WebSeed {self.address}>"

    def wake(self) -> None:
        """Something changed (a want, a verified piece): look for work now."""
        self._wake.set()

    def state(self) -> str:
        if self.disabled:
            return f"disabled: {self.disabled}"
        if self.retry_at > trio.current_time():
            return f"backing off: {self.last_error}"
        return "active"

    def hash_failed(self, piece: int, host: WebSeedHost) -> None:
        """A piece this seed contributed to failed its SHA-1: it counts against the seed."""
        self.hash_failures += 1
        why = f"piece {piece} failed its hash check"
        if self.disabled:
            return  # pieces already fetched before it was dropped
        if self.hash_failures >= self.config.max_hash_failures:
            self.disabled = f"{self.hash_failures} pieces failed their hash check"
            log.warning("web seed %s dropped: %s", self.address, self.disabled)
            self._set_available(host, False)
            self.wake()
        else:
            self._failed(host, WebSeedError(why))

    def _set_available(self, host: WebSeedHost, available: bool) -> None:
        if available != self._available:
            self._available = available
            host.web_seed_available(self, available)

    def _failed(self, host: WebSeedHost, exc: WebSeedError) -> None:
        now = trio.current_time()
        self.failures += 1
        self.last_error = str(exc)
        delay = backoff_delay(self.failures, self.config, exc.retry_after)
        self.retry_at = max(self.retry_at, now + delay)
        self._set_available(host, False)
        log.warning("web seed %s: %s; next try in %.0f s", self.address, exc, self.retry_at - now)

    async def run(self, client: httpx.AsyncClient, host: WebSeedHost) -> None:
        """Fetch picked blocks until cancelled or disabled; at most `connections` at once."""
        per_job = max(1, -(-self.config.request_bytes // BLOCK_SIZE))
        try:
            async with trio.open_nursery() as nursery:
                while self.disabled is None:
                    now = trio.current_time()
                    if now < self.retry_at:
                        await trio.sleep(min(self.retry_at - now, self.config.backoff_max))
                        continue
                    self._set_available(host, True)
                    if self.in_flight < max(1, self.config.connections):
                        blocks = host.web_seed_pick(self, per_job)
                        if blocks:
                            self.in_flight += 1
                            nursery.start_soon(self._job, client, host, blocks)
                            continue
                    self._wake = trio.Event()
                    with trio.move_on_after(1.0):
                        await self._wake.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._set_available(host, False)

    async def _job(
        self, client: httpx.AsyncClient, host: WebSeedHost, blocks: list[tuple[int, int, int]]
    ) -> None:
        delivered: set[tuple[int, int]] = set()
        try:
            for offset, length, members in coalesce(blocks, self.piece_length):
                data = bytearray()
                for r in self.layout.ranges(offset, length):
                    data += await fetch_range(client, r, self.config)
                view = memoryview(data)
                for piece, begin, size in members:
                    start = piece * self.piece_length + begin - offset
                    await host.web_seed_block(self, piece, begin, bytes(view[start : start + size]))
                    delivered.add((piece, begin))
            self.failures = 0
        except WebSeedError as exc:
            self._failed(host, exc)
        finally:
            self.in_flight -= 1
            host.web_seed_release(self, [b for b in blocks if (b[0], b[1]) not in delivered])
            self.wake()


def parse_web_seed_url(url: str) -> str | None:
    """`url` if it is an http(s) URL with a host (BEP 19 seeds we can use), else None."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url.strip()


__all__ = [
    "FileRange",
    "UrlLayout",
    "WebSeed",
    "WebSeedConfig",
    "WebSeedError",
    "WebSeedHost",
    "backoff_delay",
    "coalesce",
    "fetch_range",
    "file_urls",
    "parse_web_seed_url",
]
