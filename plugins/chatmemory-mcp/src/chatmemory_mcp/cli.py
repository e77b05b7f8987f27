"""The ``chatmemory-mcp`` command: ``stdio``, ``http`` and ``token create|revoke|list``.

Nothing is written to stdout before the stdio server starts: it is the protocol stream.
Each command imports only what it runs: stdio never loads the HTTP, JWT or OAuth code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from chatmemory_server.auth_options import (
    add_jwt_options,
    add_token_commands,
    jwt_settings,
    token_file_option,
)
from chatmemory_server.tokens import default_token_file

from chatmemory import ChatMemoryError
from chatmemory_mcp.settings import ConfigError, HttpSettings, principal_from_env

__all__ = ["build_parser", "main"]


def _tools_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tools",
        choices=["core", "all"],
        default="all",
        help="core: only record_run and the reading tools, for clients short of context (default all)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``chatmemory-mcp``."""
    parser = argparse.ArgumentParser(prog="chatmemory-mcp", description="The chatmemory MCP server.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stdio = commands.add_parser(
        "stdio",
        help="serve one client over stdin/stdout as $CHATMEMORY_PRINCIPAL (database: $CHATMEMORY_URL)",
    )
    stdio.add_argument("--url", help="database URL (default: $CHATMEMORY_URL, else the user data directory)")
    _tools_option(stdio)
    stdio.set_defaults(run=_stdio)

    http = commands.add_parser("http", help="serve streamable HTTP with bearer-token authentication")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, default=8000)
    http.add_argument("--path", default="/mcp", help="the MCP endpoint path (default /mcp)")
    http.add_argument("--url", help="database URL (default: $CHATMEMORY_URL, else the user data directory)")
    http.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="a Host header to accept (repeatable), e.g. mem.example.com",
    )
    http.add_argument(
        "--allowed-origin", action="append", default=[], help="an Origin to accept (repeatable)"
    )
    _tools_option(http)
    http.add_argument("--public-url", help="the server's external base URL, e.g. https://mem.example.com")
    token_file_option(http)
    http.add_argument(
        "--resource-url",
        help="this MCP endpoint's public URL, the OAuth resource (default: --public-url + --path)",
    )
    http.add_argument(
        "--authorization-server",
        help="the OAuth authorization server (issuer URL) clients get tokens from (default: --jwt-issuer)",
    )
    http.add_argument(
        "--oauth-scope",
        action="append",
        default=[],
        help="a scope clients should request from the authorization server (repeatable)",
    )
    add_jwt_options(http, audience_default="the resource URL")
    http.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body accepted"
    )
    limits = http.add_argument_group("limits on slow and idle connections")
    limits.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds to send a request's headers (default 10)"
    )
    limits.add_argument(
        "--body-timeout", type=float, default=30.0, help="seconds to send a request's body (default 30)"
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="open connections beyond which requests get 503 (default 100)",
    )
    limits.add_argument(
        "--keep-alive-timeout", type=int, default=5, help="seconds an idle connection stays open (default 5)"
    )
    http.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id for handshake-era clients")
    http.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no authentication: every request acts as $CHATMEMORY_PRINCIPAL; loopback hosts only",
    )
    http.set_defaults(run=_http)

    add_token_commands(commands, prog="chatmemory-mcp")
    return parser


def _stdio(args: argparse.Namespace) -> int:
    principal = principal_from_env()
    if principal is None:
        print(
            "chatmemory-mcp: set CHATMEMORY_PRINCIPAL to the principal this server acts as", file=sys.stderr
        )
        return 2
    from chatmemory_mcp.server import build_server

    build_server(principal=principal, auth="stdio", url=args.url, tools=args.tools).run("stdio")
    return 0


def _http(args: argparse.Namespace) -> int:
    settings = HttpSettings(
        host=args.host,
        port=args.port,
        path=args.path,
        allowed_hosts=args.allowed_host,
        allowed_origins=args.allowed_origin,
        token_file=args.token_file or default_token_file(),
        public_url=args.public_url,
        max_body_bytes=args.max_body_bytes,
        stateless=args.stateless,
        tools=args.tools,
        database_url=args.url,
        resource_url=args.resource_url,
        authorization_server=args.authorization_server,
        oauth_scopes=args.oauth_scope,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    settings.jwt = jwt_settings(
        args, audience=settings.resource, audience_options="--resource-url/--public-url"
    )
    if args.insecure_no_auth:
        settings.insecure_principal = principal_from_env()
        if settings.insecure_principal is None:
            raise ConfigError("--insecure-no-auth needs CHATMEMORY_PRINCIPAL (the one principal it serves)")
    from chatmemory_mcp.http_app import build_http_app
    from chatmemory_mcp.limits import uvicorn_config

    app = build_http_app(settings)
    import uvicorn

    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # stdout is the protocol stream in stdio mode: every log line goes to stderr.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("chatmemory_mcp").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, ChatMemoryError) as exc:
        print(f"chatmemory-mcp: {exc}", file=sys.stderr)
        return 2
