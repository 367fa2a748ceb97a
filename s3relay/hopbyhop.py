"""Hop-by-hop header names (RFC 9110 §7.6.1): they describe one connection,
so the relay never forwards them either way, and no configuration adds them."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
