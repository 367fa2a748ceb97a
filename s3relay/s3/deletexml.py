# -*- test-case-name: tests.unit.test_deletexml -*-
"""DeleteObjects request bodies: read strictly to S3's schema, written anew.

A multi-delete names its keys in the XML body, so a prefix-restricted
client's keys are checked there (``body.multidelete``).  What was checked
must be exactly what the upstream deletes: a lenient reading that differs
from the upstream's (text split around a stray element, say) would let a
client check one key and delete another.  So the body is read strictly --
only the elements S3's schema allows, where it allows them, text only inside
value elements -- and anything else is S3's 400 MalformedXML; and the
upstream gets not the client's bytes but ``to_xml()`` of what was read.

Any document type declaration is refused before it is read, so no entity
can be declared, expanded or fetched.  Pure, stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from s3relay.s3.errors import S3Error
from s3relay.s3.safexml import S3_NS, Unreadable, read_xml

#: S3 takes at most this many objects in one DeleteObjects.
MAX_OBJECTS = 1000
#: The children of ``<Object>`` (``ObjectIdentifier``), in schema order.
OBJECT_FIELDS = ("Key", "VersionId", "ETag", "LastModifiedTime", "Size")
#: Characters escaped on the way out beyond &, < and >: a literal CR would be
#: read back as LF (XML end-of-line handling), so it goes as a reference.
_ESCAPES = {"\r": "&#13;"}


@dataclass(frozen=True)
class DeleteObject:
    """One ``<Object>``: its key and whichever other fields it had, as sent."""

    key: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("utf-8")


@dataclass(frozen=True)
class DeleteRequest:
    """A DeleteObjects body as S3 reads it."""

    objects: tuple[DeleteObject, ...]
    #: ``<Quiet>``: None when absent.
    quiet: bool | None = None

    def to_xml(self) -> bytes:
        """The body to send upstream: this request and nothing else."""
        parts = ['<?xml version="1.0" encoding="UTF-8"?>', f'<Delete xmlns="{S3_NS}">']
        for obj in self.objects:
            parts.append(f"<Object><Key>{escape(obj.key, _ESCAPES)}</Key>")
            parts.extend(f"<{name}>{escape(value, _ESCAPES)}</{name}>" for name, value in obj.fields)
            parts.append("</Object>")
        if self.quiet is not None:
            parts.append(f"<Quiet>{'true' if self.quiet else 'false'}</Quiet>")
        parts.append("</Delete>")
        return "".join(parts).encode("utf-8")


def malformed_xml(reason: str) -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our "
        "published schema.",
        400,
        f"DeleteObjects body: {reason}",
    )


def parse_delete(xml_body: bytes, max_objects: int = MAX_OBJECTS) -> DeleteRequest:
    """Read a DeleteObjects body: ``<Delete>`` (with or without the S3
    namespace) holding one to ``max_objects`` ``<Object>`` elements, each with
    one ``<Key>`` and at most one of each other ``OBJECT_FIELDS`` element, and
    an optional ``<Quiet>``.  Value elements hold text only."""
    objects: list[DeleteObject] = []
    stack: list[str] = []  # open elements, outermost first
    text: list[str] = []  # character data of the open value element
    fields: dict[str, str] = {}  # children of the open <Object>
    quiet: list[bool] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        namespace, _, name = tag.rpartition("}")
        if namespace not in ("", S3_NS):
            raise Unreadable(f"element in namespace {namespace[:64]!r}")
        if attrs:
            raise Unreadable(f"attributes on <{name[:64]}>")
        path = "/".join([*stack, name])
        if path == "Delete/Object":
            if len(objects) >= max_objects:
                raise Unreadable(f"more than {max_objects} objects")
            fields.clear()
        elif path == "Delete/Quiet" and not quiet:
            pass
        elif stack == ["Delete", "Object"] and name in OBJECT_FIELDS and name not in fields:
            pass
        elif path != "Delete":
            raise Unreadable(f"unexpected element {path[:128]}")
        stack.append(name)
        text.clear()

    def end(tag: str) -> None:
        name = stack.pop()
        value = "".join(text)
        text.clear()
        if len(stack) == 2:  # a field of <Object>
            if name == "Key" and not value:
                raise Unreadable("empty <Key>")
            fields[name] = value
        elif name == "Object":
            if "Key" not in fields:
                raise Unreadable("<Object> without <Key>")
            others = tuple((f, fields[f]) for f in OBJECT_FIELDS[1:] if f in fields)
            objects.append(DeleteObject(fields["Key"], others))
        elif name == "Quiet":
            flag = value.strip().lower()
            if flag not in ("true", "false"):
                raise Unreadable("<Quiet> is not a boolean")
            quiet.append(flag == "true")

    def chars(data: str) -> None:
        if len(stack) == 3 or stack[-1:] == ["Quiet"]:
            text.append(data)
        elif data.strip():
            raise Unreadable("text outside a value element")

    try:
        read_xml(xml_body, start, end, chars)
    except Unreadable as e:
        raise malformed_xml(str(e)) from None
    if not objects:
        raise malformed_xml("no <Object>")
    return DeleteRequest(tuple(objects), quiet[0] if quiet else None)
