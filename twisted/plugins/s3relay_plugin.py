"""twistd plugin entry: kept import-light; the work is in s3relay.tap."""

from twisted.application.service import ServiceMaker

s3relay = ServiceMaker(
    "s3relay",
    "s3relay.tap",
    "An S3 relay that authenticates, re-signs and streams requests.",
    "s3relay",
)
