# -*- test-case-name: tests.unit.test_listbuckets -*-
"""Reading S3 XML documents: the S3 namespace, and an expat parser that
refuses any document type declaration before reading it, so that no entity
can be declared, expanded or fetched (multi-delete bodies, ListBuckets
answers)."""

from __future__ import annotations

from typing import Callable, NoReturn
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
