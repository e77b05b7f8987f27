"""The command-line side of authentication, shared by ``chatmemory-server`` and ``chatmemory-mcp http``:
the ``token create|revoke|list`` commands of the token file and the ``--jwt-*`` options.

Imports only the standard library and the token file; the JWT code loads when JWTs are configured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chatmemory import Principal
from chatmemory_server.tokens import TOKEN_FILE_ENV, TokenFile, default_token_file

if TYPE_CHECKING:
    from chatmemory_server.jwts import JWTSettings

__all__ = ["ConfigError", "add_jwt_options", "add_token_commands", "jwt_settings", "token_file_option"]


class ConfigError(Exception):
    """A server is configured in a way it refuses to run with."""


def token_file_option(parser: argparse.ArgumentParser, *, default: object = None) -> None:
    """Add ``--token-file`` (default: ``$CHATMEMORY_MCP_TOKEN_FILE``, else the user config directory)."""
    parser.add_argument(
        "--token-file",
        type=Path,
        default=default,
        help=f"the token file (default: ${TOKEN_FILE_ENV}, else user config)",
    )


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser], *, prog: str) -> None:
    """Add ``token create|revoke|list`` to a command line whose name is ``prog``."""
    token = commands.add_parser("token", help="manage the bearer tokens of the token file")
    # A subcommand's default would replace ``--token-file`` given before ``token``
    # (``chatmemory-server --token-file F token create``): theirs have none.
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--principal", required=True)
    create.add_argument("--tenant")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--label", help="a note to recognise the token by")
    create.add_argument("--expires-in-days", type=float, help="make the token expire")
    token_file_option(create, default=argparse.SUPPRESS)
    create.set_defaults(run=_token_create)
    revoke = actions.add_parser("revoke", help="revoke a token by its id (tok_...)")
    revoke.add_argument("token_id")
    token_file_option(revoke, default=argparse.SUPPRESS)
    revoke.set_defaults(run=lambda args: _token_revoke(args, prog))
    listing = actions.add_parser("list", help="list token ids and their principals")
    token_file_option(listing, default=argparse.SUPPRESS)
    listing.set_defaults(run=_token_list)


def add_jwt_options(parser: argparse.ArgumentParser, *, audience_default: str) -> None:
    """Add the ``--jwt-*`` options that configure ``JWTVerifier``."""
    parser.add_argument("--jwt-issuer", help="accept JWTs from this issuer (`iss`)")
    parser.add_argument(
        "--jwt-audience", help=f"the audience (`aud`) JWTs must name (default: {audience_default})"
    )
    parser.add_argument("--jwt-public-key", type=Path, help="PEM file with the issuer's public key")
    parser.add_argument("--jwt-jwks-url", help="the issuer's JWKS URL (instead of --jwt-public-key)")
    parser.add_argument(
        "--jwt-admin-scope",
        help="the scope that makes a principal admin, e.g. chatmemory:admin (default: none, no JWT "
        "makes an admin)",
    )
    parser.add_argument("--jwt-tenant-claim", help="the claim holding the principal's tenant")
    parser.add_argument(
        "--jwt-clock-skew",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="accept tokens issued up to this far in the future (the issuer's clock ahead); "
        "never extends expiry (default: 60)",
    )


def jwt_settings(
    args: argparse.Namespace, *, audience: str | None, audience_options: str = "--public-url"
) -> JWTSettings | None:
    """The JWT settings the ``--jwt-*`` options give (``audience`` when ``--jwt-audience`` is absent,
    which ``audience_options`` set).

    Raises:
        ConfigError: the options are incomplete or the key cannot be read.
    """
    if not (args.jwt_issuer or args.jwt_audience or args.jwt_public_key or args.jwt_jwks_url):
        return None
    audience = args.jwt_audience or audience
    if not (args.jwt_issuer and audience):
        raise ConfigError(f"JWT needs --jwt-issuer, and --jwt-audience or {audience_options}")
    from chatmemory_server.jwts import JWTSettings

    try:
        return JWTSettings(
            issuer=args.jwt_issuer,
            audience=audience,
            public_key=args.jwt_public_key.read_text() if args.jwt_public_key else None,
            jwks_url=args.jwt_jwks_url,
            admin_scope=args.jwt_admin_scope,
            tenant_claim=args.jwt_tenant_claim,
            clock_skew=args.jwt_clock_skew,
        )
    except (ValueError, OSError) as exc:
        raise ConfigError(f"JWT settings: {exc}") from None


def _token_file(args: argparse.Namespace) -> Path:
    return getattr(args, "token_file", None) or default_token_file()


def _token_create(args: argparse.Namespace) -> int:
    principal = Principal(args.principal, tenant=args.tenant, admin=args.admin)
    expires = None if args.expires_in_days is None else int(args.expires_in_days * 86_400)
    path = _token_file(args)
    token, entry = TokenFile(path).create(principal, label=args.label, expires_in=expires)
    print(
        f"created {entry.id} for {entry.principal}{' (admin)' if entry.admin else ''} in {path}",
        file=sys.stderr,
    )
    print("the token is shown only now; store it securely:", file=sys.stderr)
    print(token)
    return 0


def _token_revoke(args: argparse.Namespace, prog: str) -> int:
    path = _token_file(args)
    entry = TokenFile(path).revoke(args.token_id)
    if entry is None:
        print(f"{prog}: no token {args.token_id} in {path}", file=sys.stderr)
        return 1
    print(f"revoked {entry.id} ({entry.principal})", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    entries = TokenFile(_token_file(args)).load()
    for entry in sorted(entries.values(), key=lambda e: e.created_at):
        flags = " admin" if entry.admin else ""
        tenant = f" tenant={entry.tenant}" if entry.tenant else ""
        label = f" ({entry.label})" if entry.label else ""
        print(f"{entry.id}\t{entry.principal}{tenant}{flags}{label}")
    return 0
