"""moto's S3 server behind a WSGI server with HTTP/1.1 keep-alive, as real S3 has.

``moto_server`` runs on werkzeug's development server, which closes every
connection; that would hide how the relay's upstream connection pool
behaves.  (waitress title-cases response header names, so user-metadata
keys read straight from this server come back as ``Colour``, not ``colour``.)
Usage: ``python -m tests.moto_keepalive HOST PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

import waitress
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    moto = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        # moto verifies signatures over the raw URI, which werkzeug calls RAW_URI.
        environ["RAW_URI"] = environ["REQUEST_URI"]
        return moto(environ, start_response)

    waitress.serve(app, host=host, port=port, threads=8, ident="moto", _quiet=True,
                   channel_timeout=120, max_request_body_size=1 << 40)


if __name__ == "__main__":
    main()
