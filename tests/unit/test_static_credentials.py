"""Static credential sets are providers like the fetched ones: one credential path.

``CredentialProviders.for_client`` answers a static set, ``credentials =
self`` and a fetched set alike; readiness reports static sets; a static set
never schedules anything; a reload that rotates a static secret file takes
effect.  In memory, with ``MemoryReactorClock``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from s3relay.config import Config, load_config, parse_config
from s3relay.credentials.answers import Fetched
from s3relay.credentials.provider import Provider
from s3relay.credentials.service import CredentialProviders, SourceWorld, static_only
from s3relay.credentials.spec import CredentialSet
from s3relay.credentials.static import StaticProvider
from s3relay.ops.reload import Reloader
from s3relay.s3.errors import S3Error

T0 = 1_800_000_000.0

UPSTREAM = "[upstream]\nurl = http://127.0.0.1:9000\nregion = us-east-1\n"

STATIC = UPSTREAM + """
[credentials:main]
access_key_id = AKMAIN
secret_access_key = main-secret
[credentials:spare]
access_key_id = AKSPARE
secret_access_key = spare-secret
[client:a]
access_key_id = A
secret_access_key = a-secret
credentials = main
[client:me]
access_key_id = ME
secret_access_key = me-secret
credentials = self
"""

#: STATIC plus a fetched set that client f uses.
MIXED = STATIC + """
[credentials:remote]
source = chain
[client:f]
access_key_id = F
secret_access_key = f-secret
credentials = remote
"""


class World:
    """A SourceWorld that records whether anything asked for a thread pool or an Agent."""

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.asked: list[str] = []

    def threadpool(self) -> Any:
        self.asked.append("threadpool")
        raise AssertionError("a static set needs no thread")

    def agent(self, ca_pem: bytes | None) -> Any:
        self.asked.append("agent")
        raise AssertionError("a static set needs no Agent")

    def source_world(self) -> SourceWorld:
        return SourceWorld(self.reactor, self.threadpool, self.agent)


class Answered(CredentialProviders):
    """Providers whose fetched sets' answers the test gives."""

    def __init__(self, config: Config, world: World) -> None:
        super().__init__(config, world.source_world())
        self.calls: list[Deferred[Fetched]] = []

    def _fetch_for(self, spec: Any) -> Any:
        def fetch() -> Deferred[Fetched]:
            d: Deferred[Fetched] = Deferred()
            self.calls.append(d)
            return d

        return fetch


def started(text: str = STATIC) -> tuple[CredentialProviders, World, Config]:
    world = World()
    config = parse_config(text)
    providers = CredentialProviders(config, world.source_world())
    providers.startService()
    return providers, world, config


def test_a_static_set_is_answered_by_its_provider() -> None:
    providers, world, config = started()
    main = providers.provider("main")
    assert isinstance(main, StaticProvider)
    assert providers.for_client(config, config.clients["a"]) == CredentialSet(
        "main", "AKMAIN", "main-secret"
    )
    assert providers.current("main") == CredentialSet("main", "AKMAIN", "main-secret")
    # The keys come from the set's provider, not from the config the request
    # passes (a reload changes the registry and the resource's config together).
    other = parse_config(STATIC.replace("main-secret", "other-secret"))
    assert providers.for_client(other, other.clients["a"]).secret_access_key == "main-secret"
    assert world.asked == []


def test_static_sets_answer_before_start_and_after_stop_fetched_ones_fail_closed() -> None:
    world = World()
    config = parse_config(MIXED)
    providers = CredentialProviders(config, world.source_world())
    assert providers.for_client(config, config.clients["a"]).access_key_id == "AKMAIN"
    assert providers.for_client(config, config.clients["me"]).access_key_id == "ME"
    with pytest.raises(S3Error) as info:
        providers.for_client(config, config.clients["f"])
    assert (info.value.code, info.value.status) == ("ServiceUnavailable", 503)
    assert "remote" in info.value.reason
    assert world.asked == [] and world.reactor.getDelayedCalls() == []
    providers.startService()
    providers.stopService()
    assert providers.for_client(config, config.clients["a"]).access_key_id == "AKMAIN"


def test_readiness_reports_static_sets_ready() -> None:
    providers, _, _ = started()
    assert providers.check() == (True, "main: static")  # spare: no client uses it
    main = providers.provider("main")
    assert main is not None and main.check() == (True, "static")


def test_readiness_of_static_and_fetched_sets_together() -> None:
    world = World()
    config = parse_config(MIXED)
    providers = Answered(config, world)
    providers.startService()
    world.reactor.advance(0)
    ok, detail = providers.check()
    assert not ok
    assert detail == "main: static; remote: no valid credentials: not fetched yet"
    providers.calls[-1].callback(
        Fetched(CredentialSet("remote", "AKREMOTE", "r", "t"), T0 + 3600)
    )
    assert providers.check() == (True, "main: static; remote: valid for 3600 s")
    providers.stopService()


def test_self_re_signs_with_the_clients_own_key() -> None:
    providers, _, config = started()
    me = config.clients["me"]
    got = providers.for_client(config, me)
    assert got == CredentialSet("client:me", "ME", "me-secret")
    assert got == static_only(config).for_client(config, me)
    assert providers.provider("self") is None  # not a set: nothing to start or check


def test_a_static_set_schedules_nothing() -> None:
    providers, world, config = started()
    for _ in range(3):
        providers.for_client(config, config.clients["a"])
        providers.check()
    providers.reconfigure(parse_config(STATIC))  # unchanged: kept and kicked
    providers.reconfigure(parse_config(STATIC.replace("main-secret", "new-secret")))
    assert world.reactor.getDelayedCalls() == []
    world.reactor.advance(100_000)
    assert providers.for_client(config, config.clients["a"]).secret_access_key == "new-secret"
    assert world.asked == []
    providers.stopService()
    assert world.reactor.getDelayedCalls() == []


def test_a_fetched_set_does_schedule() -> None:
    """The control for the test above: getDelayedCalls sees a refresh loop."""
    world = World()
    providers = Answered(parse_config(MIXED), world)
    providers.startService()
    (call,) = world.reactor.getDelayedCalls()
    assert call.getTime() == T0
    assert isinstance(providers.provider("remote"), Provider)
    providers.stopService()
    assert world.reactor.getDelayedCalls() == []


def secret_file(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(0o600)


class Resource:
    def __init__(self) -> None:
        self.configs: list[Config] = []

    def reconfigure(self, config: Config, agent: Any) -> None:
        self.configs.append(config)


class Site:
    def __init__(self) -> None:
        self.resource = Resource()
        self.timeOut: Any = None
        self.limits: Any = None


def test_reload_replaces_a_static_secret(tmp_path: Path) -> None:
    secret_file(tmp_path / "main.key", "first-secret")
    path = tmp_path / "s3relay.ini"
    path.write_text(
        STATIC.replace("secret_access_key = main-secret", "secret_access_key_file = main.key")
    )
    world = World()
    config = load_config(str(path))
    providers = CredentialProviders(config, world.source_world())
    providers.startService()
    a = config.clients["a"]
    assert providers.for_client(config, a).secret_access_key == "first-secret"
    site = Site()
    notified: list[bytes] = []
    reloader = Reloader(
        str(path), config, site, None, lambda upstream: None,  # type: ignore[arg-type]
        world.reactor, notified.append, credentials=providers,
    )

    # SIGHUP with the file unchanged: the same provider stays.
    before = providers.provider("main")
    assert reloader.reload()
    assert providers.provider("main") is before

    # The secret file rotated, then SIGHUP: the new secret signs from now on.
    secret_file(tmp_path / "main.key", "second-secret")
    assert providers.for_client(config, a).secret_access_key == "first-secret"  # not yet
    assert reloader.reload()
    (reloaded,) = site.resource.configs[-1:]
    assert providers.provider("main") is not before
    assert providers.for_client(reloaded, reloaded.clients["a"]) == CredentialSet(
        "main", "AKMAIN", "second-secret"
    )
    assert providers.check() == (True, "main: static")
    assert world.reactor.getDelayedCalls() == []
    assert notified[-2:] == [b"RELOADING=1", b"READY=1"]


def test_reload_between_static_and_fetched() -> None:
    """static -> fetched: the static keys serve until the first fetch ends;
    fetched -> static: the static keys at once, the refresh loop stopped."""
    world = World()
    config = parse_config(MIXED)
    providers = Answered(config, world)
    providers.startService()
    world.reactor.advance(0)
    a = config.clients["a"]

    # main becomes a chain set.
    changed = parse_config(MIXED.replace(
        "[credentials:main]\naccess_key_id = AKMAIN\nsecret_access_key = main-secret\n",
        "[credentials:main]\nsource = chain\n",
    ))
    providers.reconfigure(changed)
    chain = providers.provider("main")
    assert isinstance(chain, Provider)
    world.reactor.advance(0)
    assert providers.for_client(changed, a).access_key_id == "AKMAIN"  # the hand-over
    assert chain.check()[0] and "previous config" in chain.check()[1]
    providers.calls[-1].callback(Fetched(CredentialSet("main", "AKCHAIN", "c", "t"), T0 + 3600))
    assert providers.for_client(changed, a).access_key_id == "AKCHAIN"
    assert chain.predecessor is None

    # And back: static again, the chain provider stopped.
    providers.reconfigure(config)
    assert isinstance(providers.provider("main"), StaticProvider)
    assert providers.for_client(config, a).access_key_id == "AKMAIN"
    assert chain.current() is None
    providers.stopService()
    assert world.reactor.getDelayedCalls() == []


def test_static_only_answers_static_sets_and_self_and_follows_reconfigure() -> None:
    config = parse_config(MIXED)
    providers = static_only(config)
    assert providers.for_client(config, config.clients["a"]).access_key_id == "AKMAIN"
    assert providers.for_client(config, config.clients["me"]).access_key_id == "ME"
    with pytest.raises(S3Error) as info:
        providers.for_client(config, config.clients["f"])
    assert info.value.status == 503
    rotated = parse_config(MIXED.replace("main-secret", "rotated-secret"))
    providers.reconfigure(rotated)
    assert providers.for_client(rotated, rotated.clients["a"]).secret_access_key == \
        "rotated-secret"
