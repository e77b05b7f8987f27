"""``python -m chatmemory_server``: the ``chatmemory-server`` command."""

from __future__ import annotations

from chatmemory_server.cli import main

raise SystemExit(main())
