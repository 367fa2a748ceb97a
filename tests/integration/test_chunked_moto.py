"""The aws-chunked framer's output, read by the S3 server the integration tests use.

moto is the oracle here, which keeps it out of the unit tier.
"""

from __future__ import annotations

from s3relay.body.chunked import UnsignedTrailerFramer
from tests.unit.test_chunked import crc32_b64, frame


def test_framer_accepted_by_moto() -> None:
    from moto.s3.responses import S3Response

    data = bytes(range(256)) * 700
    framed = frame(data, "x-amz-checksum-crc32", crc32_b64(data), 65536, [3, 99999])
    assert UnsignedTrailerFramer.framed_length(len(data), "x-amz-checksum-crc32") == len(framed)
    assert S3Response._handle_encoded_body(None, framed) == data  # type: ignore[arg-type]
