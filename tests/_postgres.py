"""A throwaway PostgreSQL server for the test suite.

``CHATMEMORY_TEST_POSTGRES_URL`` points the suite at an existing server; otherwise the
``pgserver`` wheel's PostgreSQL is started in a temporary directory (it runs the server
as an unprivileged user when the suite runs as root, which PostgreSQL requires).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "CHATMEMORY_TEST_POSTGRES_URL"


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a ``postgresql://`` URL of a server that accepts CREATE DATABASE."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    with warnings.catch_warnings():
        # pgserver warns about its environment (no XDG_RUNTIME_DIR, deprecated APIs); none matters here.
        warnings.simplefilter("ignore")
        import pgserver

        workdir = tempfile.mkdtemp(prefix="chatmemory-pg-")
        os.chmod(workdir, 0o755)
        server = pgserver.get_server(workdir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
