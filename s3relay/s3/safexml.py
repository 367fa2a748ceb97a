# -*- test-case-name: tests.unit.test_listbuckets -*-
"""Reading S3 XML documents: the S3 namespace, and an expat parser that
refuses any document type declaration before reading it, so that no entity
can be declared, expanded or fetched (multi-delete bodies, ListBuckets and
ListMultipartUploads answers)."""

from __future__ import annotations

from typing import Any, Callable, NoReturn
from xml.parsers import expat

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def hardened_parser(
    refuse: Callable[..., NoReturn], encoding: str | None = None
) -> expat.XMLParserType:
    """An expat parser (namespaces split off at ``}``) that calls ``refuse``
    on a DTD or an entity declaration or reference."""
    parser = expat.ParserCreate(encoding, namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    return parser


class Unreadable(Exception):
    """A document refused (a DTD, an entity) or not well-formed; or one a
    handler of ``read_xml`` found invalid (handlers raise it themselves)."""


def _refuse(*_: object) -> NoReturn:
    raise Unreadable("document type declarations are not accepted")


def read_xml(
    document: bytes,
    start: Callable[[str, dict[str, str]], Any],
    end: Callable[[str], Any],
    chars: Callable[[str], Any],
) -> None:
    """Read ``document`` with a hardened parser, calling the handlers; any
    failure is ``Unreadable`` with a short reason."""
    parser = hardened_parser(_refuse)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(document, True)
    except (Unreadable, expat.ExpatError, ValueError, LookupError) as e:
        raise Unreadable(str(e)[:200]) from None
