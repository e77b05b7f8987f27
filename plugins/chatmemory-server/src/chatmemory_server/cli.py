"""The ``chatmemory-server`` command: serve the API, or manage the token file (``token ...``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatmemory import ChatMemoryError
from chatmemory_server.auth_options import (
    ConfigError,
    add_jwt_options,
    add_token_commands,
    jwt_settings,
    token_file_option,
)
from chatmemory_server.bearer import AnyOfVerifier, BearerVerifier
from chatmemory_server.tokens import default_token_file

if TYPE_CHECKING:
    import socket

    import uvicorn
    from starlette.applications import Starlette

__all__ = ["build_parser", "main", "stream_ending_server"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``chatmemory-server``."""
    parser = argparse.ArgumentParser(
        prog="chatmemory-server",
        description="Serve chatmemory as JSON over HTTP, with live changes over SSE and WebSocket.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--url", help="database URL (default: $CHATMEMORY_URL, else the user data directory)")
    parser.add_argument("--public-url", help="the API's external base URL, the default JWT audience")
    token_file_option(parser)
    add_jwt_options(parser, audience_default="--public-url")
    parser.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body accepted"
    )
    limits = parser.add_argument_group("limits on slow and idle connections")
    limits.add_argument("--header-timeout", type=float, default=10.0, help="seconds to send headers")
    limits.add_argument("--body-timeout", type=float, default=30.0, help="seconds to send a body")
    limits.add_argument("--max-connections", type=int, default=1000, help="beyond it requests get 503")
    limits.add_argument("--keepalive", type=float, default=15.0, help="seconds between SSE keep-alives")
    parser.set_defaults(run=_serve)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_token_commands(commands, prog="chatmemory-server")
    return parser


def verifier_from_args(args: argparse.Namespace) -> BearerVerifier:
    """The token file's verifier and the JWT verifier the options configure, either or both.

    Raises:
        ConfigError: neither is configured, or the JWT options are incomplete.
    """
    verifiers: list[BearerVerifier] = []
    token_file: Path = args.token_file or default_token_file()
    if token_file.exists():
        from chatmemory_server.tokens import TokenFileVerifier

        verifiers.append(TokenFileVerifier(token_file))
    settings = jwt_settings(args, audience=args.public_url)
    if settings is not None:
        from chatmemory_server.jwts import JWTVerifier

        verifiers.append(JWTVerifier(settings))
    if not verifiers:
        raise ConfigError(
            f"refusing to start without authentication: no token file at {token_file} (create a token "
            "with `chatmemory-server token create --principal NAME`) and no JWT issuer (--jwt-issuer)"
        )
    return verifiers[0] if len(verifiers) == 1 else AnyOfVerifier(verifiers)


def _serve(args: argparse.Namespace) -> int:
    for name in ("max_body_bytes", "header_timeout", "body_timeout", "max_connections", "keepalive"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    verifier = verifier_from_args(args)
    import uvicorn

    from chatmemory_server.app import create_app
    from chatmemory_server.limits import header_deadline_protocol

    app = create_app(
        args.url,
        verifier=verifier,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        keepalive=args.keepalive,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=header_deadline_protocol(args.header_timeout),
        limit_concurrency=args.max_connections,
        # Requests still running get this long; open event streams are ended as shutdown begins.
        timeout_graceful_shutdown=5,
        log_level="info",
    )
    # Exits with status 3 when the store cannot be opened at start.
    stream_ending_server(config, app).run()
    return 0


def stream_ending_server(config: uvicorn.Config, app: Starlette) -> uvicorn.Server:
    """A ``uvicorn.Server`` for ``app`` (made by ``create_app``) that ends the open event streams
    as it begins to shut down: they end cleanly at once, where the server would otherwise wait
    the graceful timeout for them, then cut them off (logging an error for each)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app.state.end_streams()
            await super().shutdown(sockets)

    return Server(config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("chatmemory_server").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, ChatMemoryError) as exc:
        print(f"chatmemory-server: {exc}", file=sys.stderr)
        return 2
