"""``python -m chatmemory_mcp``: the ``chatmemory-mcp`` command."""

from __future__ import annotations

from chatmemory_mcp.cli import main

raise SystemExit(main())
