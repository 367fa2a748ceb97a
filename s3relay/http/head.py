# -*- test-case-name: tests.unit.test_channel -*-
"""A request head measured line by line against ``[server]``'s head limits.

The channel feeds every line of a head here before Twisted parses it, so
that an over-long target, too many or too large header lines, and malformed
fields are refused with S3's errors (Twisted's own limits stay behind as a
backstop, with bare 400s).  Pure: no Twisted.
"""

from __future__ import annotations

from s3relay.http.headers import valid_field
from s3relay.http.limits import Limits
from s3relay.s3.errors import (
    S3Error,
    bad_request,
    header_section_too_large,
    url_too_long,
)


class HeadCheck:
    """The lines of one request head so far."""

    def __init__(self, limits: Limits) -> None:
        self.start(limits)

    def start(self, limits: Limits) -> None:
        """A new head begins, under ``limits``."""
        self.limits = limits
        #: Lines seen, the request line included (0: waiting for it).
        self.lines = 0
        #: Bytes of header lines, with their line ends.
        self.size = 0

    def line(self, line: bytes) -> S3Error | None:
        """The refusal ``line`` earns, if any."""
        limits = self.limits
        if self.lines == 0:
            if line:  # empty lines before a request line are skipped (RFC 9112 §2.2)
                self.lines = 1
                parts = line.split(b" ")
                target = parts[1] if len(parts) == 3 else line
                if len(target) > limits.max_url_length:
                    return url_too_long(len(target), limits.max_url_length)
            return None
        self.lines += 1
        self.size += len(line) + 2
        if self.size > limits.max_header_size:
            return header_section_too_large(
                f"header lines exceed max_header_size = {limits.max_header_size}"
            )
        if line and not valid_field(line):
            return bad_request("malformed request (head)")
        # The empty line ending the head is no header.
        if line and self.lines - 1 > limits.max_headers:
            return header_section_too_large(
                f"more than max_headers = {limits.max_headers} header lines"
            )
        return None

    def too_long(self, line: bytes) -> S3Error:
        """The refusal for a line longer than any limit allows."""
        if self.lines == 0:
            return url_too_long(len(line), self.limits.max_url_length)
        return header_section_too_large("a header line longer than MAX_LENGTH")
