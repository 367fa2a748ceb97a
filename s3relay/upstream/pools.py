# -*- test-case-name: tests.unit.test_routes -*-
"""One Agent per upstream (``routes``): its own connection pool and TLS
settings, so that a store that stops answering holds only its own
connections, never the others'."""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from twisted.web.iweb import IAgent

from s3relay.upstream.routes import Routes
from s3relay.upstream.settings import UpstreamConfig


class UpstreamAgents(Mapping[str, IAgent]):
    """The Agents by upstream name, rebuilt for what a reload changed."""

    def __init__(self, make: Callable[[UpstreamConfig], IAgent], routes: Routes) -> None:
        self._make = make
        self._agents: dict[str, IAgent] = {}
        self._configs: dict[str, UpstreamConfig] = {}
        self.update(routes)

    def update(self, routes: Routes) -> None:
        """New Agents for upstreams added or changed; none for those removed."""
        wanted = {route.name: route.upstream for route in routes.all()}
        for name in set(self._agents) - set(wanted):
            del self._agents[name], self._configs[name]
        for name, upstream in wanted.items():
            if self._configs.get(name) != upstream:
                self._agents[name], self._configs[name] = self._make(upstream), upstream

    def __getitem__(self, name: str) -> IAgent:
        return self._agents[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)
