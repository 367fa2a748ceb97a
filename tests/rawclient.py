"""Hand-built S3 requests for the cases SDKs will not send: tampered, skewed,
mis-hashed, signed aws-chunked, HTTP-chunked, ``Expect: 100-continue``."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from s3relay.s3 import sigv4

REGION = "us-east-1"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_hash: str,
    key: tuple[str, str],
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """``headers`` plus host, x-amz-content-sha256, x-amz-date and authorization."""
    parts = urlsplit(url)
    signed = {name.lower(): value for name, value in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-content-sha256"] = payload_hash
    signed.update(
        sigv4.sign_headers(
            method,
            parts.path,
            sigv4.query_pairs(parts.query.encode()),
            signed,
            key[0],
            key[1],
            None,
            REGION,
            now or utcnow(),
            sigv4.SigningKeyCache(),
        )
    )
    return signed


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def code(self) -> str:
        """The S3 error code in the body, or ''."""
        start = self.body.find(b"<Code>")
        end = self.body.find(b"</Code>")
        return self.body[start + 6 : end].decode() if start >= 0 else ""


def send(
    url: str,
    method: str,
    headers: Mapping[str, str],
    body: bytes | Iterable[bytes] = b"",
    timeout: float = 30,
) -> Reply:
    """Send exactly these headers (no defaults added) and ``body``."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        chunks = [body] if isinstance(body, bytes) else body
        for chunk in chunks:
            connection.send(chunk)
        response = connection.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def signed_chunks(
    data: bytes,
    chunk_size: int,
    headers: Mapping[str, str],
    secret: str,
    trailer: tuple[str, str] | None = None,
) -> bytes:
    """An aws-chunked body whose chunk signatures chain from the signed ``headers``."""
    amz_date = headers["x-amz-date"]
    seed = headers["authorization"].rsplit("Signature=", 1)[1]
    scope = sigv4.Scope(amz_date[:8], REGION, "s3")
    key = sigv4.SigningKeyCache().key(secret, scope.date, REGION)
    out, previous = [], seed
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for piece in pieces:
        text = sigv4.chunk_string_to_sign(
            amz_date, scope, previous, hashlib.sha256(piece).hexdigest()
        )
        previous = sigv4.signature(key, text)
        out.append(b"%x;chunk-signature=%s\r\n" % (len(piece), previous.encode()))
        if piece:
            out.append(piece + b"\r\n")
    if trailer is None:
        out.append(b"\r\n")
    else:
        line = f"{trailer[0]}:{trailer[1]}\n".encode()
        text = sigv4.trailer_string_to_sign(
            amz_date, scope, previous, hashlib.sha256(line).hexdigest()
        )
        out.append(line.replace(b"\n", b"\r\n"))
        out.append(b"x-amz-trailer-signature:%s\r\n\r\n" % sigv4.signature(key, text).encode())
    return b"".join(out)


def unsigned_chunks(data: bytes, chunk_size: int, trailer: tuple[str, str]) -> bytes:
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    out = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces]
    out.append(b"0\r\n%s:%s\r\n\r\n" % (trailer[0].encode(), trailer[1].encode()))
    return b"".join(out)


def http_chunked(body: bytes, size: int = 1000) -> list[bytes]:
    """``body`` in HTTP/1.1 chunked transfer coding."""
    out = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
           for i in range(0, len(body), size)]
    return out + [b"0\r\n\r\n"]
