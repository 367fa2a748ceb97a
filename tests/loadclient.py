"""An asyncio HTTP/1.1 client for load and soak runs against the relay.

Hundreds of keep-alive connections cost one thread this way (boto3 would need
a thread and a pool per connection).  Every request is SigV4-signed with
``tests.rawclient.sign`` and every answer is checked -- status, and the body's
bytes or hash -- so that a run counts errors, not just requests.  Used by
tests/integration/test_e2e_load.py and bench/soak.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable
from xml.etree import ElementTree

from s3relay.s3 import sigv4
from tests.rawclient import sign

KiB = 1024
MiB = 1024 * KiB
#: Bytes a large transfer writes or reads at once.
CHUNK = 256 * KiB
#: Seconds any one request may take before it counts as an error.
REQUEST_SECONDS = 120.0


class ProtocolError(Exception):
    """The relay answered something that is not a well-formed HTTP/1.1 response."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    #: The body, or b"" when it went into a hash sink.
    body: bytes
    length: int


class Connection:
    """One keep-alive client connection; requests on it run one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: Times the relay closed the connection and it had to be opened again.
        self.reopened = 0
        self.opened = 0

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] = b"",
        sink: Any = None,
    ) -> Response:
        """Send one request (exactly ``headers``) and read its whole response.

        With ``sink`` (a hashlib object) the body is hashed as it arrives
        rather than kept.
        """
        return await asyncio.wait_for(
            self._request(method, target, headers, body, sink), REQUEST_SECONDS
        )

    async def _request(
        self, method: str, target: str, headers: dict[str, str],
        body: bytes | Iterable[bytes], sink: Any,
    ) -> Response:
        if self._writer is None:
            self.reopened += 1
            await self.open()
        assert self._reader is not None and self._writer is not None
        head = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for chunk in [body] if isinstance(body, bytes) else body:
            self._writer.write(chunk)
            await self._writer.drain()
        await self._writer.drain()
        response = await self._response(method, sink)
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def _response(self, method: str, sink: Any) -> Response:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.1 (\d{3}) ?.*", lines[0])
        if match is None:
            raise ProtocolError(f"bad status line {lines[0]!r}")
        status = int(match.group(1))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, headers, b"", 0)
        pieces: list[bytes] = []
        length = 0

        def take(piece: bytes) -> None:
            nonlocal length
            length += len(piece)
            if sink is not None:
                sink.update(piece)
            else:
                pieces.append(piece)

        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self._reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while await self._reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                await self._read_exactly(size, take)
                if await self._reader.readexactly(2) != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
        elif "content-length" in headers:
            await self._read_exactly(int(headers["content-length"]), take)
        else:  # delimited by close
            while piece := await self._reader.read(CHUNK):
                take(piece)
            headers["connection"] = "close"
        return Response(status, headers, b"".join(pieces), length)

    async def _read_exactly(self, size: int, take: Any) -> None:
        assert self._reader is not None
        while size > 0:
            piece = await self._reader.read(min(size, CHUNK))
            if not piece:
                raise ProtocolError(f"connection closed with {size} body bytes to come")
            take(piece)
            size -= len(piece)


@dataclass
class Outcome:
    """One request's result, and whether it was the expected one."""

    kind: str
    method: str
    path: str
    status: int
    expected: int
    request_id: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.status == self.expected


@dataclass
class Workload:
    """A mix of small signed S3 requests against one bucket through the relay.

    ``seeds`` are objects stored before the run (their bytes, to check GETs);
    PUTs write new keys under ``put/`` and check the ETag (MD5) the upstream
    returns; listings ask for the first ``LIST_KEYS`` keys under ``seed/``.
    """

    host: str
    port: int
    bucket: str
    key: tuple[str, str]
    seeds: dict[str, bytes]
    puts: dict[str, str] = field(default_factory=dict)  # key -> md5 hex
    #: PUT keys cycle through this many names (a soak's bucket stays small);
    #: 0: every PUT writes a new key.
    put_key_space: int = 0
    _serial: int = 0

    LIST_KEYS = 20
    #: The mix: one request kind per slot, picked round-robin with an offset.
    KINDS = ("put", "put-signed", "get", "get", "get", "head", "list", "missing")

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def signed(self, method: str, target: str, payload_hash: str,
               extra: dict[str, str] | None = None) -> dict[str, str]:
        return sign(method, f"http://{self.netloc}{target}", extra or {}, payload_hash, self.key)

    async def one(self, connection: Connection, slot: int) -> Outcome:
        """Run request kind ``KINDS[slot % len(KINDS)]`` and check its answer."""
        kind = self.KINDS[slot % len(self.KINDS)]
        seed_keys = sorted(self.seeds)
        seed = seed_keys[slot % len(seed_keys)]
        self._serial += 1
        try:
            if kind.startswith("put"):
                name = (f"put/{self._serial % self.put_key_space:05d}" if self.put_key_space
                        else f"put/{self._serial:07d}-{slot}")
                return await self._put(connection, kind, name)
            if kind == "get":
                return await self._get(connection, seed)
            if kind == "head":
                return await self._head(connection, seed)
            if kind == "list":
                return await self._list(connection)
            return await self._missing(connection, f"absent/{self._serial}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ProtocolError,
                asyncio.LimitOverrunError, ValueError) as e:
            await connection.close()
            return Outcome(kind, "?", "?", 0, 0, None, f"{type(e).__name__}: {e}")

    async def _put(self, connection: Connection, kind: str, key: str) -> Outcome:
        data = os.urandom(KiB + self._serial % (3 * KiB))
        target = f"/{self.bucket}/{key}"
        payload = hashlib.sha256(data).hexdigest() if kind == "put-signed" else \
            sigv4.UNSIGNED_PAYLOAD
        headers = self.signed("PUT", target, payload, {"content-length": str(len(data))})
        response = await connection.request("PUT", target, headers, data)
        outcome = _outcome(kind, "PUT", target, response, 200)
        md5 = hashlib.md5(data).hexdigest()
        if response.status == 200 and response.headers.get("etag", "").strip('"') != md5:
            outcome.error = f"ETag {response.headers.get('etag')} is not MD5 {md5}"
        if outcome.ok:
            self.puts[key] = md5
        return outcome

    async def _get(self, connection: Connection, key: str) -> Outcome:
        target = f"/{self.bucket}/{key}"
        response = await connection.request(
            "GET", target, self.signed("GET", target, sigv4.EMPTY_SHA256))
        outcome = _outcome("get", "GET", target, response, 200)
        if response.status == 200 and response.body != self.seeds[key]:
            outcome.error = f"body of {len(response.body)} bytes differs from the object"
        return outcome

    async def _head(self, connection: Connection, key: str) -> Outcome:
        target = f"/{self.bucket}/{key}"
        response = await connection.request(
            "HEAD", target, self.signed("HEAD", target, sigv4.EMPTY_SHA256))
        outcome = _outcome("head", "HEAD", target, response, 200)
        if response.status == 200 and \
                response.headers.get("content-length") != str(len(self.seeds[key])):
            outcome.error = f"content-length {response.headers.get('content-length')}"
        return outcome

    async def _list(self, connection: Connection) -> Outcome:
        target = f"/{self.bucket}?list-type=2&max-keys={self.LIST_KEYS}&prefix=seed%2F"
        response = await connection.request(
            "GET", target, self.signed("GET", target, sigv4.EMPTY_SHA256))
        outcome = _outcome("list", "GET", target, response, 200)
        if response.status == 200:
            keys = list_keys(response.body)
            expected = sorted(self.seeds)[: self.LIST_KEYS]
            if keys != expected:
                outcome.error = f"listed {keys[:3]}... ({len(keys)}), not the seeds"
        return outcome

    async def _missing(self, connection: Connection, key: str) -> Outcome:
        target = f"/{self.bucket}/{key}"
        response = await connection.request(
            "GET", target, self.signed("GET", target, sigv4.EMPTY_SHA256))
        outcome = _outcome("missing", "GET", target, response, 404)
        if response.status == 404 and b"<Code>NoSuchKey</Code>" not in response.body:
            outcome.error = f"404 without NoSuchKey: {response.body[:200]!r}"
        return outcome

    async def large_put(self, connection: Connection, key: str, data: bytes) -> Outcome:
        """A streamed PUT of ``data`` (written in ``CHUNK`` pieces with backpressure)."""
        target = f"/{self.bucket}/{key}"
        headers = self.signed("PUT", target, sigv4.UNSIGNED_PAYLOAD,
                              {"content-length": str(len(data))})
        view = memoryview(data)
        chunks = (bytes(view[i:i + CHUNK]) for i in range(0, len(data), CHUNK))
        try:
            response = await connection.request("PUT", target, headers, chunks)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ProtocolError) as e:
            return Outcome("large-put", "PUT", target, 0, 200, None, f"{type(e).__name__}: {e}")
        outcome = _outcome("large-put", "PUT", target, response, 200)
        md5 = hashlib.md5(data).hexdigest()
        if response.status == 200 and response.headers.get("etag", "").strip('"') != md5:
            outcome.error = f"ETag {response.headers.get('etag')} is not MD5 {md5}"
        return outcome

    async def large_get(self, connection: Connection, key: str, sha256: str,
                        size: int) -> Outcome:
        """A GET of a large object, hashed as it streams in."""
        target = f"/{self.bucket}/{key}"
        sink = hashlib.sha256()
        try:
            response = await connection.request(
                "GET", target, self.signed("GET", target, sigv4.EMPTY_SHA256), sink=sink)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ProtocolError) as e:
            return Outcome("large-get", "GET", target, 0, 200, None, f"{type(e).__name__}: {e}")
        outcome = _outcome("large-get", "GET", target, response, 200)
        if response.status == 200 and (response.length, sink.hexdigest()) != (size, sha256):
            outcome.error = f"{response.length} bytes, sha256 {sink.hexdigest()[:12]}..."
        return outcome


def _outcome(kind: str, method: str, path: str, response: Response, expected: int) -> Outcome:
    return Outcome(kind, method, path, response.status, expected,
                   response.headers.get("x-s3relay-request-id"),
                   "" if response.status == expected else
                   f"status {response.status}: {response.body[:300]!r}")


def list_keys(xml: bytes) -> list[str]:
    """The <Key>s of a ListObjectsV2 answer, in order."""
    root = ElementTree.fromstring(xml)
    return [element.text or "" for element in root.iter() if element.tag.endswith("}Key")
            or element.tag == "Key"]
