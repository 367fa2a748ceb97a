# -*- test-case-name: tests.unit.test_resource -*-
"""The relay resource: authenticate, translate, re-sign, hand over to an Exchange.

``_decide`` turns a request's head into a frozen ``Decision`` or an S3Error;
the request's ``Outcome`` answers a refusal and logs either way.

``render`` runs when a request's headers have arrived (see ``channel``), so
every decision here is made before the first body byte is read, and a
refused request never reaches the upstream.
"""

from __future__ import annotations

import datetime
import secrets
from collections import Counter
from functools import partial
from typing import Callable, Collection, Mapping, Sequence

from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from s3relay.access import admission, anonymous, cors
from s3relay.access.admission import OPEN_CLIENT
from s3relay.access.client_cert import check_binding
from s3relay.access.policy import authorize
from s3relay.body import multidelete
from s3relay.body.digests import PayloadChecker
from s3relay.body.plan import BodyPlan, PlainBody, plan_body, relay_body
from s3relay.config import ClientKey, Config
from s3relay.credentials.service import CredentialProviders
from s3relay.credentials.spec import CredentialSet
from s3relay.crypt import rules
from s3relay.crypt.etags import stored_list
from s3relay.crypt.partcheck import PartsCheck
from s3relay.crypt.reader import READ_CONDITIONS, ObjectRead
from s3relay.crypt.requests import translate
from s3relay.crypt.rules import Treatment
from s3relay.crypt.settings import EncryptionConfig
from s3relay.decision import Decision, Lookup
from s3relay.exchange import Exchange
from s3relay.http.headers import header_text
from s3relay.http.limits import check_declared_size
from s3relay.http.request import RelayRequest
from s3relay.outcome import AccessRecord, Monitor, Outcome
from s3relay.s3 import sigv4
from s3relay.s3.addressing import Target, parse_target
from s3relay.s3.errors import S3Error
from s3relay.s3.listbuckets import MAX_LIST_BUCKETS_BYTES, filter_buckets, merge_buckets
from s3relay.s3.operations import Operation, classify
from s3relay.s3.signing import EMPTY_SHA256
from s3relay.s3.uploads import UPLOAD_ID_OPERATIONS, Binding, UploadBindings
from s3relay.upstream.bucketlists import BucketLists
from s3relay.upstream.forward import UpstreamRequest, build_upstream_request
from s3relay.upstream.response import Rewrite
from s3relay.upstream.routes import DEFAULT, location_constraint
from s3relay.upstream.settings import UpstreamConfig
from s3relay.upstream.uploads import UploadCheck

#: Largest listing the relay rewrites for plaintext sizes (1000 long keys fit).
MAX_LISTING_BYTES = 8 * 1024 * 1024

#: The plan of a request the relay makes with no body (an upload id's check).
NO_BODY = BodyPlan(0, EMPTY_SHA256, {})


def request_headers(request: RelayRequest) -> dict[str, Sequence[str]]:
    """The request's headers by lowercase name, values as the client signed
    them (``http.headers.header_text``)."""
    return {
        name.decode("latin-1").lower(): [
            v.decode("ascii") if v.isascii() else header_text(v) for v in values
        ]
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


class RelayResource(Resource):
    """Every S3 request, whatever its path."""

    isLeaf = True

    def __init__(
        self,
        config: Config,
        agent: IAgent | Mapping[str, IAgent],
        monitor: Monitor,
        credentials: CredentialProviders,
    ) -> None:
        super().__init__()
        #: Every credential set's provider, static and fetched: the one path
        #: to upstream credentials (a 503 while a set has none valid).
        self._credentials = credentials
        self._config = config
        #: The Agent of each upstream by name, or one for all (``upstream.pools``).
        self._agents = agent
        self._monitor = monitor
        self._clock = monitor.clock
        self._keys = sigv4.SigningKeyCache()
        #: Network, Host and rate checks, with the rate limiter's state.
        self._gate = admission.Gate(self._clock.seconds, monitor.metrics)
        #: Salt for ``log_keys = hash`` without ``log_key_salt``: one per process.
        self._key_salt = secrets.token_bytes(32)
        #: Upload ids the upstream confirmed for their keys (``s3.uploads``).
        self._uploads = UploadBindings()

    def reconfigure(self, config: Config, agent: IAgent | Mapping[str, IAgent]) -> None:
        """Serve new requests with ``config`` and ``agent`` (SIGHUP reload)."""
        self._config, self._agents = config, agent

    def _agent(self, route: str) -> IAgent:
        agents = self._agents
        if isinstance(agents, Mapping):
            return agents.get(route) or agents[DEFAULT]
        return agents

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)

    def _secret_for(self, access_key: str) -> str | None:
        client = self._config.client(access_key)
        return client.secret_access_key if client is not None else None

    def render(self, request: RelayRequest) -> int:
        request.defaultContentType = None
        config = self._config
        record = AccessRecord(
            request.requestId, request.method.decode("latin-1"), request.path.decode("latin-1")
        )
        outcome = Outcome(
            request, record, self._monitor, config.server.log_keys.key_text(self._key_salt)
        )
        try:
            decision = self._decide(config, request, record, request_headers(request))
        except S3Error as e:
            outcome.refuse(e)
            return NOT_DONE_YET
        Exchange(request, self._agent(decision.route), decision, outcome, self._monitor).start()
        return NOT_DONE_YET

    def _decide(
        self,
        config: Config,
        request: RelayRequest,
        record: AccessRecord,
        headers: Mapping[str, Sequence[str]],
    ) -> Decision:
        """Authenticate, authorize and re-sign ``request``, noting on
        ``record`` what is learnt; an S3Error refuses it."""
        method = record.method
        raw_path, _, raw_query = request.uri.partition(b"?")
        peer = admission.peer_address(request.getClientAddress())
        origin, record.origin = admission.origin_of(config.server.admission, peer, headers)
        self._gate.check_connection(
            config.server.admission, config.server.hostnames, origin, headers
        )
        if request.targetRefusal is not None:  # `*`, CONNECT, ... (s3relay.http.target)
            raise request.targetRefusal
        check_declared_size(headers, request.bodyLength, config.server.limits)
        host = (headers.get("host") or [""])[0]
        target = parse_target(
            host,
            raw_path,
            config.server.hostnames,
            allow_dot_segments=config.server.allow_dot_segments,
            copy_sources=headers.get("x-amz-copy-source", ()),
        )
        record.path = target.resource
        record.bucket, record.key = target.bucket, target.key
        now = self._now()
        pairs = sigv4.query_pairs(raw_query)
        if method == "OPTIONS":  # S3's OPTIONS is the CORS preflight, unsigned
            return self._preflight(config, request, record, headers, target, pairs)
        if config.anonymous is not None and anonymous.is_unsigned(headers, raw_query):
            verified = anonymous.verified(headers)
            client: ClientKey | None = config.anonymous
        else:
            verified = sigv4.verify(
                method,
                raw_path,
                raw_query,
                headers,
                now,
                self._secret_for,
                config.server.regions,
                self._keys,
                pairs,
            )
            client = config.client(verified.access_key)
        assert client is not None  # verify() only accepts known keys
        record.client = client.name
        self._gate.check_client(client.name, client.admission, origin)
        check_binding(client.name, client.certificate_subject, request.channel.transport)
        query_names = {name for name, _ in pairs}
        operation = classify(method, target, query_names, headers)
        record.operation = operation.name
        route = config.route(target.bucket)
        if operation.copy_source is not None:
            source_route = config.route(operation.copy_source[0])
            if source_route.name != route.name:
                raise S3Error(
                    "InvalidRequest",
                    "The copy source is on another storage service than the destination; "
                    "copy it with a download and an upload.",
                    400,
                    f"copy from upstream {source_route.name!r} to upstream {route.name!r}",
                )
        # A repeated parameter is left out: the policy must not check one value
        # while the upstream uses another (a prefix-restricted listing without
        # its one prefix is refused).
        counts = Counter(name for name, _ in pairs)
        query = {name: value for name, value in pairs if counts[name] == 1}
        deleting = operation.name == "DeleteObjects"  # keys checked below (multidelete)
        authorize(client.policy, client.name, operation, target, query, body_keys_checked=deleting)
        if "x-amz-security-token" in headers or b"X-Amz-Security-Token" in query_names:
            # Client keys are long-term: a session token means the client holds
            # other credentials than it signed with.  S3 would refuse it too.
            raise S3Error(
                "InvalidToken",
                "The provided token is malformed or otherwise invalid.",
                400,
                "a session token with a long-term relay key",
            )
        encryption = config.encryption
        treatment = (
            rules.treatment(encryption, operation, target, query_names)
            if encryption is not None else None
        )
        plan_for = partial(plan_body, headers, verified, request.bodyLength)
        translation = None
        if treatment is not None:
            assert encryption is not None
            translation = translate(treatment, encryption, target, headers, pairs, query,
                                    lambda plaintext: plan_for(plaintext=plaintext))
            plan, body_filter = translation.plan, translation.body_filter
        else:
            plan, body_filter = plan_for()
        checked_delete = (
            deleting and client.policy.prefixes is not None and target.bucket is not None
        )
        if checked_delete:
            assert target.bucket is not None
            plan, body_filter = multidelete.hold_for_check(
                plan, body_filter, client.policy, client.name, target.bucket
            )
        rewrite = None
        if operation.name == "ListBuckets" and client.policy.buckets is not None:
            rewrite = Rewrite(
                partial(filter_buckets, allowed=client.policy.bucket_allowed),
                MAX_LIST_BUCKETS_BYTES,
            )
        bucket_lists = None
        if operation.name == "ListBuckets" and config.routes is not None and config.routes.named:
            bucket_lists, rewrite = self._bucket_lists(config, client, pairs, query_names)
        if (
            operation.name == "CreateBucket" and request.bodyLength == 0
            and route.upstream.region != "us-east-1"
        ):
            # Where the name routes, in that upstream's region (S3 refuses a
            # CreateBucket without LocationConstraint outside us-east-1).
            plan, body_filter = relay_body(location_constraint(route.upstream.region))
        credentials = self._credentials.for_client(config, client, route)
        added = (route.transforms or config.transforms).headers_for(
            operation.name, client.name, target.bucket
        )
        presigned = b"X-Amz-Signature" in query_names
        removed: Sequence[str] = ()
        upstream_pairs: Sequence[tuple[bytes, bytes]] = pairs
        if translation is not None:
            added = {**added, **translation.added}
            removed, upstream_pairs = translation.removed, translation.pairs
            if translation.rewrite is not None:
                rewrite = Rewrite(translation.rewrite, MAX_LISTING_BYTES)
            if translation.upload_id is not None:  # the upstream's id, for the upload check
                query = {**query, b"uploadId": translation.upload_id.encode()}

        def sign(
            plan: BodyPlan,
            now: datetime.datetime,
            method: str = method,
            removed: Sequence[str] = removed,
            extra: Mapping[str, str] | None = None,
            pairs: Sequence[tuple[bytes, bytes]] = upstream_pairs,
        ) -> UpstreamRequest:
            return build_upstream_request(
                method, target, raw_query, presigned, headers, plan, credentials,
                route.upstream, now, self._keys, {**added, **(extra or {})},
                decoded_query=pairs, removed=removed,
            )

        def resign(body: bytes) -> UpstreamRequest:
            # The upstream gets the body as it was read and checked (a
            # multi-delete, or an encrypted upload's part list).
            return sign(multidelete.rewritten_plan(body, {} if translation else headers),
                        self._now())

        reader: ObjectRead | None = None
        lookup: Lookup | None = None
        if treatment is Treatment.READ:
            assert encryption is not None
            reader = self._object_read(
                encryption, target, method, headers, plan, sign, upstream_pairs
            )
            upstream_request = reader.original
            lookup = reader if method == "GET" else None
        else:
            upstream_request = sign(plan, now)
        if treatment is Treatment.COMPLETE:
            lookup = self._parts_check(query, plan, sign)
        if bucket_lists is not None:
            lookup = bucket_lists
        upload_check = None
        if operation.name in UPLOAD_ID_OPERATIONS and not route.upstream.binds_upload_ids:
            assert target.bucket is not None  # an object operation
            upload_check = self._upload_check(target, counts, query, credentials, route.upstream)
        release = self._gate.admit(config.server.admission, client.name, client.admission).release
        return Decision(
            client.name,
            target,
            operation,
            plan,
            body_filter,
            upstream_request,
            rewrite,
            release,
            config.server.limits.first_byte_timeout,
            resign if checked_delete or treatment is Treatment.COMPLETE else None,
            upload_check,
            reader,
            lookup,
            translation is not None and translation.shows_etag,
            route.name,
        )

    def _object_read(
        self,
        encryption: EncryptionConfig,
        target: Target,
        method: str,
        headers: Mapping[str, Sequence[str]],
        plan: BodyPlan,
        sign: Callable[..., UpstreamRequest],
        pairs: Sequence[tuple[bytes, bytes]],
    ) -> ObjectRead:
        """A GET or HEAD of an encrypted object (``crypt.reader``)."""
        assert target.bucket is not None
        now = self._now()
        head = part_head = None
        # The ETags a client names are the shown ones (crypt.etags).
        conditions = {
            name: stored_list(",".join(headers[name]))
            for name in ("if-match", "if-none-match") if name in headers
        }
        if method == "GET":
            original = sign(plan, now, extra=conditions)
            versions = [(n, v) for n, v in pairs if n == b"versionId"]
            head = sign(plan, now, "HEAD", ("range",), pairs=versions, extra=conditions)
            # Part 1's own ETag is not the object's: no conditions.
            part_head = sign(plan, now, "HEAD", READ_CONDITIONS,
                             pairs=[*versions, (b"partNumber", b"1")])
        else:
            original = sign(plan, now, removed=("range",), extra=conditions)

        def sign_read(stored_range: str | None, etag: str | None) -> UpstreamRequest:
            pinned = {"range": stored_range} if stored_range else {}
            if etag:
                pinned["if-match"] = etag
            return sign(plan, self._now(), removed=READ_CONDITIONS, extra=pinned)

        return ObjectRead(
            encryption, target.bucket, target.key, ",".join(headers.get("range", ())) or None,
            head, part_head, original, sign_read, self._monitor.metrics.decryption_failed,
        )

    def _bucket_lists(
        self,
        config: Config,
        client: ClientKey,
        pairs: Sequence[tuple[bytes, bytes]],
        query_names: Collection[bytes],
    ) -> tuple[BucketLists, Rewrite]:
        """ListBuckets of every upstream, merged into the default's answer."""
        assert config.routes is not None
        if b"continuation-token" in query_names:
            raise S3Error("NotImplemented", "ListBuckets pages are not supported across "
                          "several upstreams.", 501, "ListBuckets continuation-token")
        allowed = client.policy.bucket_allowed if client.policy.buckets is not None else None

        def visible(bucket: str, upstream: str) -> bool:
            return config.route(bucket).name == upstream and (allowed is None or allowed(bucket))

        named = config.routes.named
        requests = {
            name: build_upstream_request(
                "GET", Target(None, b"", False), b"", False, {}, NO_BODY,
                self._credentials.for_client(config, client, route), route.upstream,
                self._now(), self._keys, decoded_query=pairs,
            )
            for name, route in named.items()
        }
        lists = BucketLists(requests, self._agent, visible)

        def merged(document: bytes) -> bytes:
            own = filter_buckets(document, partial(visible, upstream=DEFAULT))
            return merge_buckets(own, lists.documents)

        return lists, Rewrite(merged, MAX_LIST_BUCKETS_BYTES)

    def _parts_check(
        self, query: Mapping[bytes, bytes], plan: BodyPlan, sign: Callable[..., UpstreamRequest]
    ) -> PartsCheck:
        """Before an encrypted upload completes: its parts make one object."""
        upload_id = query[b"uploadId"]

        def sign_page(marker: str | None) -> UpstreamRequest:
            pairs = [(b"max-parts", b"1000"), (b"uploadId", upload_id)]
            if marker is not None:
                pairs.append((b"part-number-marker", marker.encode("ascii", "replace")))
            return sign(NO_BODY, self._now(), "GET", pairs=pairs)

        return PartsCheck(sign_page)

    def _preflight(
        self,
        config: Config,
        request: RelayRequest,
        record: AccessRecord,
        headers: Mapping[str, Sequence[str]],
        target: Target,
        pairs: Sequence[tuple[bytes, bytes]],
    ) -> Decision:
        """A CORS preflight, asked of the upstream (``access.cors``)."""
        record.operation = cors.PREFLIGHT
        cors.check_preflight(headers, request.bodyLength)
        client = config.preflight
        if client is None or target.bucket is None:
            raise cors.preflight_refused(
                "preflight for the service" if client is not None else
                "no [server] preflight_credentials and no [anonymous] to sign preflights with"
            )
        record.client = client.name
        route = config.route(target.bucket)
        upstream = build_upstream_request(
            "OPTIONS", target, b"", True, headers, NO_BODY,
            self._credentials.for_client(config, client, route), route.upstream, self._now(),
            self._keys, decoded_query=pairs,
        )
        release = self._gate.admit(config.server.admission, client.name, OPEN_CLIENT).release
        return Decision(
            client.name, target, Operation(cors.PREFLIGHT, None), NO_BODY,
            PlainBody(PayloadChecker(EMPTY_SHA256, None, {})),
            upstream, None, release, config.server.limits.first_byte_timeout,
            route=route.name,
        )

    def _upload_check(
        self,
        target: Target,
        counts: Mapping[bytes, int],
        query: Mapping[bytes, bytes],
        credentials: CredentialSet,
        upstream: UpstreamConfig,
    ) -> UploadCheck:
        """The check that the request's upload id is the upstream's for its key."""
        upload_id = query.get(b"uploadId")
        if counts[b"uploadId"] != 1 or not upload_id:
            raise S3Error("InvalidArgument", "Give uploadId once.", 400,
                          f"uploadId given {counts[b'uploadId']} times")
        assert target.bucket is not None
        binding = Binding(target.bucket, target.key, upload_id.decode("utf-8", "replace"))
        bucket = Target(target.bucket, b"", False)

        def sign_listing(markers: tuple[str, str] | None) -> UpstreamRequest:
            pairs = [(b"prefix", target.key), (b"uploads", b"")]
            if markers is not None:
                pairs += [(b"key-marker", markers[0].encode("utf-8", "surrogateescape")),
                          (b"upload-id-marker", markers[1].encode("utf-8", "surrogateescape"))]
            return build_upstream_request(
                "GET", bucket, b"", False, {}, NO_BODY, credentials, upstream,
                self._now(), self._keys, decoded_query=pairs,
            )

        return UploadCheck(self._uploads, binding, sign_listing)
