# -*- test-case-name: tests.integration.test_systemd -*-
"""systemd's readiness protocol (``Type=notify``), without a libsystemd binding.

twistd tells systemd nothing by itself, so a notify unit would wait for a
READY=1 that never comes.  The relay sends READY=1 once every listener is
bound (not merely when the process started), and STOPPING=1 when shutdown
begins.  Outside systemd (no ``NOTIFY_SOCKET``) this does nothing.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


def sd_notify(message: bytes, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` to systemd's notification socket; False if there is none."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message)
    return True


class Listeners:
    """Counts listeners as they bind; calls ``on_ready`` when all of them have."""

    def __init__(self, on_ready: Callable[[], object]) -> None:
        self._on_ready = on_ready
        self._expected = 0
        self._bound = 0

    def watch(self, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
        """``endpoint``, reporting here when it has bound."""
        self._expected += 1
        return _ReportingEndpoint(endpoint, self._listened)

    @property
    def ready(self) -> bool:
        return self._expected > 0 and self._bound == self._expected

    def _listened(self) -> None:
        self._bound += 1
        if self.ready:
            self._on_ready()


@implementer(IStreamServerEndpoint)
class _ReportingEndpoint:
    def __init__(self, endpoint: IStreamServerEndpoint, listened: Callable[[], None]) -> None:
        self._endpoint = endpoint
        self._listened = listened

    def listen(self, factory: IProtocolFactory) -> Deferred[Any]:
        def bound(port: Any) -> Any:
            self._listened()
            return port

        return self._endpoint.listen(factory).addCallback(bound)


class StoppingNotifier(Service):
    """Tells systemd that shutdown began, before the listeners close."""

    def __init__(self, notify: Callable[[bytes], object]) -> None:
        self._notify = notify

    def stopService(self) -> None:
        self._notify(b"STOPPING=1")
        super().stopService()
