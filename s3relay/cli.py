# -*- test-case-name: tests.unit.test_tap -*-
"""``s3relay --check-config PATH``: validate a config without starting.
``s3relay generate-key PATH``: write a new key-encryption key (``crypt.keys``)."""

from __future__ import annotations

import argparse
import sys

from s3relay.config import ConfigError, load_config
from s3relay.crypt.keys import generate_key_file, key_id
from s3relay.listen.endpoints import check_listener
from s3relay.tap import DEFAULT_CONFIG


def generate_key(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="s3relay generate-key",
        description="Write a new 32-byte key-encryption key for [encryption] key_files "
        "(base64, mode 0600). Its id is the file name without the extension.",
    )
    parser.add_argument("path", metavar="PATH")
    path = parser.parse_args(argv).path
    try:
        generate_key_file(path)
    except FileExistsError:
        print(f"s3relay: {path} exists; a key is never overwritten", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"s3relay: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"{path}: new key, id {key_id(path)!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate-key"]:
        return generate_key(argv[1:])
    parser = argparse.ArgumentParser(
        prog="s3relay",
        description="Check an s3relay configuration. Run the relay with "
        "'twistd -n --pidfile= s3relay --config PATH'. "
        "'s3relay generate-key PATH' writes a new encryption key.",
    )
    parser.add_argument(
        "--check-config",
        metavar="PATH",
        nargs="?",
        const=DEFAULT_CONFIG,
        required=True,
        help=f"validate the config file (default {DEFAULT_CONFIG}) and exit",
    )
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    try:
        config = load_config(args.check_config)
        # Parses it and loads the TLS files and cipher list; an expired
        # certificate is a warning (the relay serves it, loudly), not a failure.
        for warning in check_listener(reactor, config.server.listen, tls=config.server.tls):
            print(f"s3relay: {args.check_config}: warning: {warning}", file=sys.stderr)
        if config.metrics_listen:
            check_listener(reactor, config.metrics_listen, "metrics")
    except ConfigError as e:
        print(f"s3relay: {args.check_config}: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.check_config}: ok ({len(config.clients)} client keys, "
        f"{len(config.credential_specs)} credential sets, upstream {config.upstream.url})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
