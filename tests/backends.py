"""Test support: backend addresses (from the environment, with local defaults)."""

from __future__ import annotations

import os
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

PG_ADMIN_DSN = os.environ.get("DICOMKEEP_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("DICOMKEEP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("DICOMKEEP_REDIS_URL", "redis://127.0.0.1:6379/0")


def pg_dsn(database: str) -> str:
    """Return the DSN of a database on the test server."""
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


#: Set to 1 to skip, instead of fail, the tests whose backend server is unreachable.
SKIP_BACKENDS_VARIABLE = "DICOMKEEP_TEST_SKIP_BACKENDS"


def backend_unreachable(message: str) -> NoReturn:
    """Fail the test because a backend (PostgreSQL, RabbitMQ, Redis) is missing.

    A missing server is a broken test machine, not a reason to pass: the test fails
    unless DICOMKEEP_TEST_SKIP_BACKENDS=1 explicitly asks to skip such tests.
    """
    if os.environ.get(SKIP_BACKENDS_VARIABLE) == "1":
        pytest.skip(f"{message} ({SKIP_BACKENDS_VARIABLE}=1)")
    pytest.fail(f"{message}; set {SKIP_BACKENDS_VARIABLE}=1 to skip the tests that need it")


def unreachable_backends(timeout: float = 1.0) -> list[str]:
    """Return a line for each of PostgreSQL, RabbitMQ and Redis that refuses a TCP connection."""
    missing = []
    for name, url in (("PostgreSQL", PG_ADMIN_DSN), ("RabbitMQ", AMQP_URL), ("Redis", REDIS_URL)):
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[name])
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as error:
            missing.append(f"{name} unreachable at {address[0]}:{address[1]}: {error}")
    return missing


DEFAULT_PORTS = {"PostgreSQL": 5432, "RabbitMQ": 5672, "Redis": 6379}
