"""Tests for s3relay.s3.uploads and s3relay.upstream.uploads: upload ids are
used only for the key the upstream lists them under."""

from __future__ import annotations

from xml.sax.saxutils import escape

import pytest

from s3relay.s3.errors import S3Error
from s3relay.s3.uploads import Binding, UploadBindings, read_listing
from tests.unit.memory import Client, Message, Relay, config_text

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
BINDING = Binding("b", b"projects/alpha/x", "ID-1")


def listing(*uploads: tuple[str, str], truncated: bool = False, next_key: str = "",
            next_id: str = "") -> bytes:
    items = "".join(
        f"<Upload><Key>{escape(k)}</Key><UploadId>{escape(u)}</UploadId>"
        "<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>"
        for k, u in uploads
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="{NS}">'
        f"<Bucket>b</Bucket><Prefix>projects/alpha/x</Prefix>"
        f"<NextKeyMarker>{next_key}</NextKeyMarker><NextUploadIdMarker>{next_id}"
        f"</NextUploadIdMarker><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        f"{items}</ListMultipartUploadsResult>"
    ).encode()


def test_the_id_must_be_listed_under_exactly_the_key() -> None:
    assert read_listing(listing(("projects/alpha/x", "ID-1")), BINDING).found
    # Another key that starts with this one, or another id of this key: not it.
    assert not read_listing(listing(("projects/alpha/xy", "ID-1")), BINDING).found
    assert not read_listing(listing(("projects/alpha/x", "ID-2")), BINDING).found
    assert not read_listing(listing(), BINDING).found


def test_a_truncated_listing_reads_on_only_while_it_is_at_the_key() -> None:
    page = read_listing(listing(("projects/alpha/x", "ID-0"), truncated=True,
                                next_key="projects/alpha/x", next_id="ID-0"), BINDING)
    assert page == type(page)(False, ("projects/alpha/x", "ID-0"))
    later = read_listing(listing(("projects/alpha/x", "ID-0"), truncated=True,
                                 next_key="projects/alpha/xz", next_id="ID-9"), BINDING)
    assert later.more is None  # later pages list later keys only


@pytest.mark.parametrize("body", [b"not xml", b'<!DOCTYPE x [<!ENTITY e "y">]><x>&e;</x>'])
def test_an_unreadable_listing_is_an_upstream_error(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        read_listing(body, BINDING)
    assert info.value.status == 502


def test_bindings_are_bounded_and_forgotten() -> None:
    bindings = UploadBindings(size=2)
    one, two, three = (Binding("b", b"k", str(i)) for i in range(3))
    bindings.learn(one)
    bindings.learn(two)
    assert bindings.known(one)  # now the most recent
    bindings.learn(three)
    assert bindings.known(one) and bindings.known(three) and not bindings.known(two)
    bindings.forget(one)
    assert not bindings.known(one)


# -- in memory, through the relay ----------------------------------------------------------

PART = "/b/projects/alpha/x?partNumber=1&uploadId=ID-1"


def upload_part(relay: Relay, client: Client, body: bytes = b"part-data") -> None:
    client.send(relay.sign("PUT", PART, body=body))


def respond_listing(relay: Relay, index: int, body: bytes) -> Message:
    call = relay.upstream.calls[index]
    sent = call.request
    call.respond(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return sent


def test_an_unknown_upload_id_is_checked_first_and_refused_when_not_the_keys() -> None:
    relay = Relay()
    client = relay.connect()
    upload_part(relay, client)
    assert len(relay.upstream.calls) == 1  # the check, and nothing else yet
    sent = respond_listing(relay, 0, listing(("projects/beta/secret.txt", "ID-1")))
    assert sent.start_line == "GET /b?prefix=projects%2Falpha%2Fx&uploads HTTP/1.1"
    (response,) = client.responses()
    assert response.status == 404 and b"<Code>NoSuchUpload</Code>" in response.body
    assert len(relay.upstream.calls) == 1  # the part never went upstream


def test_a_confirmed_upload_id_goes_upstream_and_is_not_checked_again() -> None:
    relay = Relay()
    client = relay.connect()
    upload_part(relay, client)
    respond_listing(relay, 0, listing(("projects/alpha/x", "ID-1")))
    part = relay.upstream.calls[1]
    assert part.request.start_line.startswith("PUT ") and part.request.body == b"part-data"
    part.respond(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
    assert client.responses()[0].status == 200
    upload_part(relay, client, b"again")
    assert [c.request.start_line.split(" ")[0] for c in relay.upstream.calls] == ["GET", "PUT", "PUT"]


def test_a_completed_upload_is_checked_again() -> None:
    relay = Relay()
    client = relay.connect()
    complete = "/b/projects/alpha/x?uploadId=ID-1"
    client.send(relay.sign("POST", complete, body=b"<CompleteMultipartUpload/>"))
    respond_listing(relay, 0, listing(("projects/alpha/x", "ID-1")))
    relay.upstream.calls[1].respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    upload_part(relay, client)
    assert relay.upstream.calls[2].request.start_line.startswith("GET ")  # asked again


def test_stores_that_bind_ids_to_keys_are_not_asked() -> None:
    relay = Relay(config_text().replace("region = us-east-1\n",
                                        "region = us-east-1\nbinds_upload_ids = yes\n"))
    client = relay.connect()
    upload_part(relay, client)
    assert [c.request.start_line.split(" ")[0] for c in relay.upstream.calls] == ["PUT"]


def test_a_repeated_upload_id_is_refused() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("PUT", PART + "&uploadId=ID-2", body=b"x"))
    (response,) = client.responses()
    assert response.status == 400 and relay.upstream.calls == []


def test_expect_continue_waits_for_the_check() -> None:
    relay = Relay()
    client = relay.connect()
    raw = relay.sign("PUT", PART, {"Expect": "100-continue"}, b"part-data")
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    client.send(head)
    assert b"100 Continue" not in client.received()
    respond_listing(relay, 0, listing(("projects/alpha/x", "ID-1")))
    assert client.received().startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
