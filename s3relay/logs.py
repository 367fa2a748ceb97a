# -*- test-case-name: tests.integration.test_logs -*-
"""Structured JSON log lines on stdout, one object per line, for journald.

``twistd --logger=s3relay.logs.observer`` installs it.  Each line has
``time``, ``level``, ``namespace`` and ``message``; an access record (see
``exchange``) adds its fields under ``access``.  Twisted's own JSON format is
not used: it serialises its internals (format strings, observer state) and
separates records with RS characters, which log shippers do not expect.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import IO, Any, Callable

from twisted.logger import LogEvent, formatEvent

#: Event keys that carry structured fields worth keeping as they are.
STRUCTURED = ("access",)


def event_as_json(event: LogEvent, worker: int | None = None) -> str:
    """One log event as a single JSON line (no trailing newline); ``worker``
    is the process's number under ``[server] workers`` (``workers``)."""
    when = datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.timezone.utc)
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    if worker is not None:
        record["worker"] = worker
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getTraceback()
    for key in STRUCTURED:
        if key in event:
            record[key] = event[key]
    return json.dumps(record, default=str, ensure_ascii=False)


def observer(out: IO[str] | None = None) -> Callable[[LogEvent], None]:
    """A log observer writing JSON lines to ``out`` (stdout by default)."""
    stream = out if out is not None else sys.stdout
    number = os.environ.get("S3RELAY_WORKER", "")  # set by the supervisor (``workers``)
    worker = int(number) if number.isdigit() else None

    def observe(event: LogEvent) -> None:
        stream.write(event_as_json(event, worker) + "\n")
        stream.flush()

    return observe
