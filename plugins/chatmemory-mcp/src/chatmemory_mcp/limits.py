"""The uvicorn configuration of ``chatmemory-mcp http``.

The deadlines it enforces live in ``chatmemory_server.limits``, shared with the HTTP API.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from chatmemory_server.limits import BodyDeadline, header_deadline_protocol
from starlette.types import ASGIApp

from chatmemory_mcp.settings import HttpSettings

__all__ = ["BodyDeadline", "header_deadline_protocol", "uvicorn_config"]


def uvicorn_config(app: ASGIApp, settings: HttpSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``chatmemory-mcp http`` serves ``app`` with."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": header_deadline_protocol(settings.header_timeout),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "log_level": "info",
    }
    return uvicorn.Config(app, **(options | overrides))
