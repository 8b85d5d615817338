"""Test support: backend addresses (from the environment, with local defaults)."""

from __future__ import annotations

import os

PG_ADMIN_DSN = os.environ.get("DICOMKEEP_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("DICOMKEEP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("DICOMKEEP_REDIS_URL", "redis://127.0.0.1:6379/0")


def pg_dsn(database: str) -> str:
    """Return the DSN of a database on the test server."""
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"
