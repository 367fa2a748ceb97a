# -*- test-case-name: tests.unit.test_tap -*-
"""``twistd s3relay``: command-line options and the service they make."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from s3relay.config import ConfigError, load_config
from s3relay.ops.metrics import RelayMetrics
from s3relay.ops.systemd import sd_notify
from s3relay.service import Listening, RelayService
from s3relay.workers.supervisor import make_supervisor

DEFAULT_CONFIG = "/etc/s3relay/s3relay.ini"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "Path of the s3relay ini file."],
        ["worker", None, None, "Internal: run as worker N of a [server] workers supervisor."],
    ]


def makeService(options: Options, reactor: Any = None) -> IService:
    """The relay service: one listener in front of the configured upstream.

    With ``[server] workers`` above 1, the supervisor of that many relay
    processes instead (``workers``); ``--worker`` makes one of those."""
    if reactor is None:
        from twisted.internet import reactor
    path = options["config"]
    try:
        config = load_config(path)
        if options["worker"] is None and config.server.workers > 1:
            return make_supervisor(path, config, reactor, sd_notify)
        metrics = RelayMetrics()
        listen = Listening.worker if options["worker"] is not None else Listening.own
        listening = listen(reactor, config, metrics)
    except ConfigError as e:
        raise SystemExit(f"s3relay: {path}: {e}") from None
    return RelayService(path, config, reactor, metrics, listening)
