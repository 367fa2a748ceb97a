"""s3relay: an authenticating, re-signing, streaming S3 reverse proxy on Twisted."""

__version__ = "0.2.0"
