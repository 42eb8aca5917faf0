"""HTTP tracker announce and scrape, sans-IO (BEP 3, BEP 7, BEP 23, BEP 48).

Builds the GET URL of an announce or scrape and parses the bencoded answer. The transport
(httpx, redirects, timeouts, the body size cap) lives in `torrentfs.net.tracker_client`.

Guarantees:

* URLs: the binary ``info_hash`` and ``peer_id`` are percent-encoded byte by byte -- every byte
  that is not an RFC 3986 unreserved character (``A-Z a-z 0-9 - . _ ~``) becomes ``%XX`` -- so
  what the tracker decodes is exactly our 20 bytes. Parameters are appended to a URL that may
  already carry a query (private trackers put a passkey there); a fragment is dropped.
* Parsing: only `TrackerError` leaves this module. The body is decoded with depth and size
  limits, a ``failure reason`` raises `TrackerFailure` carrying the tracker's text, and every
  peer entry is validated (see `torrentfs.tracker.PeerCollector`): a bad entry is dropped, not
  the whole answer.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

from .. import bencode
from ..errors import BencodeError, TrackerError
from . import (
    COMPACT_PEER6_LEN,
    COMPACT_PEER_LEN,
    DEFAULT_INTERVAL,
    AnnounceRequest,
    AnnounceResponse,
    Event,
    PeerCollector,
    ScrapeStats,
    TrackerFailure,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "MAX_BODY",
    "TrackerFailure",
    "announce_url",
    "parse_announce_response",
    "parse_scrape_response",
    "scrape_request_url",
    "scrape_url",
]

MAX_BODY = 1024 * 1024
"""Largest tracker answer accepted (bytes). 1 MiB holds ~170 000 compact peers."""

MAX_DEPTH = 8
"""A tracker answer nests at most dict > list > dict (non-compact peers) or dict > dict > dict
(scrape ``files``); anything deeper is garbage."""

MAX_TEXT = 1024
"""``failure reason`` / ``warning message`` are cut to this many characters for logs and UIs."""

MAX_SCRAPE_FILES = 1000
"""Entries read from a scrape answer's ``files``; we scrape one or a few torrents at a time."""


def _quote(value: bytes) -> str:
    # quote_from_bytes leaves exactly the RFC 3986 unreserved set alone when safe="".
    return quote_from_bytes(value, safe="")


def _append_query(base: str, params: list[tuple[str, str]]) -> str:
    try:
        parts = urlsplit(base)
    except ValueError as e:
        raise TrackerError(f"malformed tracker URL {base!r}: {e}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise TrackerError(f"not an HTTP(S) tracker URL: {base!r}")
    extra = "&".join(f"{name}={value}" for name, value in params)
    query = (
        f"{parts.query}&{extra}"
        if parts.query and not parts.query.endswith("&")
        else (parts.query + extra)
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def announce_url(base: str, params: AnnounceRequest, *, tracker_id: bytes | None = None) -> str:
    """The GET URL of an HTTP announce (BEP 3) to the tracker at `base`.

    Always asks for compact peers (``compact=1``, BEP 23) and no peer ids; ``event`` is left out
    for a regular announce; ``trackerid`` is echoed when a previous answer carried one.
    """
    query = [
        ("info_hash", _quote(params.info_hash)),
        ("peer_id", _quote(params.peer_id)),
        ("port", str(params.port)),
        ("uploaded", str(params.uploaded)),
        ("downloaded", str(params.downloaded)),
        ("left", str(params.left)),
        ("compact", "1"),
        ("no_peer_id", "1"),
    ]
    if params.event is not Event.NONE:
        query.append(("event", params.event.value))
    if params.numwant is not None:
        query.append(("numwant", str(params.numwant)))
    if params.key is not None:
        query.append(("key", f"{params.key:08x}"))
    if tracker_id is not None:
        query.append(("trackerid", _quote(tracker_id)))
    return _append_query(base, query)


def scrape_url(announce: str) -> str | None:
    """The scrape URL for an announce URL, by the convention of BEP 48; None if it has none.

    "If the text immediately following the last ``/`` [of the path] is ``announce``, substitute
    ``scrape``": ``http://t/x/announce.php?k=1`` -> ``http://t/x/scrape.php?k=1``.
    """
    try:
        parts = urlsplit(announce)
    except ValueError:
        return None
    head, slash, last = parts.path.rpartition("/")
    if not slash or not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce') :]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def scrape_request_url(scrape: str, info_hashes: list[bytes]) -> str:
    """The GET URL scraping `info_hashes` (one ``info_hash`` parameter each) at `scrape`."""
    for info_hash in info_hashes:
        if len(info_hash) != 20:
            raise ValueError("an info-hash is 20 bytes")
    return _append_query(scrape, [("info_hash", _quote(h)) for h in info_hashes])


def _decode_dict(body: bytes) -> dict[bytes, object]:
    if len(body) > MAX_BODY:
        raise TrackerError(f"tracker answer too large ({len(body)} bytes)")
    # A dict ends in "e", so whitespace some servers append after it can go without changing it.
    body = body.rstrip(b" \t\r\n")
    try:
        value = bencode.decode(body, max_depth=MAX_DEPTH, max_size=MAX_BODY)
    except BencodeError as e:
        raise TrackerError(f"tracker answered garbage: {e}") from None
    if not isinstance(value, dict):
        raise TrackerError("tracker answer is not a dictionary")
    return value


def _text(value: object) -> str | None:
    if not isinstance(value, bytes):
        return None
    return value[: MAX_TEXT * 4].decode("utf-8", "replace")[:MAX_TEXT]


def _check_failure(response: dict[bytes, object]) -> None:
    reason = response.get(b"failure reason")
    if reason is not None:
        raise TrackerFailure(_text(reason) or "tracker failure without a readable reason")


def _count(value: object) -> int | None:
    """A non-negative integer field, or None when absent or nonsensical."""
    if type(value) is int and value >= 0:
        return value
    return None


def parse_announce_response(body: bytes) -> AnnounceResponse:
    """Parse an HTTP announce answer (BEP 3; compact peers BEP 23; ``peers6`` BEP 7).

    Raises `TrackerFailure` for a ``failure reason`` and `TrackerError` for anything that is not
    a bencoded dictionary. ``peers`` may be a compact string or a list of ``{ip, port}`` dicts;
    IPv6 addresses from the list form land in ``peers6``. A missing or negative ``interval``
    becomes `DEFAULT_INTERVAL`.
    """
    response = _decode_dict(body)
    _check_failure(response)

    collector = PeerCollector()
    peers = response.get(b"peers")
    if isinstance(peers, bytes):
        collector.add_compact(peers, COMPACT_PEER_LEN)
    elif isinstance(peers, list):
        for entry in peers:
            if collector.full():
                break
            if isinstance(entry, dict):
                collector.add_entry(entry.get(b"ip"), entry.get(b"port"))
    peers6 = response.get(b"peers6")
    if isinstance(peers6, bytes):
        collector.add_compact(peers6, COMPACT_PEER6_LEN)

    interval = _count(response.get(b"interval"))
    tracker_id = response.get(b"tracker id")
    return AnnounceResponse(
        interval=DEFAULT_INTERVAL if interval is None else interval,
        min_interval=_count(response.get(b"min interval")),
        peers=tuple(collector.peers),
        peers6=tuple(collector.peers6),
        tracker_id=tracker_id if isinstance(tracker_id, bytes) and tracker_id else None,
        warning=_text(response.get(b"warning message")),
        complete=_count(response.get(b"complete")),
        incomplete=_count(response.get(b"incomplete")),
    )


def parse_scrape_response(body: bytes) -> dict[bytes, ScrapeStats]:
    """Parse a scrape answer (BEP 48): info-hash -> counters; malformed entries are skipped."""
    response = _decode_dict(body)
    _check_failure(response)
    files = response.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("scrape answer has no 'files' dictionary")
    result: dict[bytes, ScrapeStats] = {}
    for info_hash, stats in files.items():
        if len(result) >= MAX_SCRAPE_FILES:
            break
        if len(info_hash) != 20 or not isinstance(stats, dict):
            continue
        complete = _count(stats.get(b"complete"))
        downloaded = _count(stats.get(b"downloaded"))
        incomplete = _count(stats.get(b"incomplete"))
        if complete is None or incomplete is None:
            continue
        result[info_hash] = ScrapeStats(complete, downloaded or 0, incomplete)
    return result
