# -*- test-case-name: tests.unit.test_tap -*-
"""``s3relay --check-config PATH``: validate a config without starting."""

from __future__ import annotations

import argparse
import sys

from s3relay.config import ConfigError, load_config
from s3relay.listen.endpoints import check_listener
from s3relay.tap import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="s3relay",
        description="Check an s3relay configuration. Run the relay with "
        "'twistd -n --pidfile= s3relay --config PATH'.",
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
