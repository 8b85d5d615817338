"""Versioned schema migrations of the index, for SQLite and PostgreSQL.

Migrations are numbered SQL files in `migrations/`: `NNNN_name.sql` serves both
databases, `NNNN_name.sqlite.sql` and `NNNN_name.postgres.sql` one each.
Statements end with a semicolon at the end of a line. `migrate` applies every
migration the database has not seen, in order, in one transaction, and records
each in the `schema_migrations` table; replicas starting together take turns
(an advisory lock on PostgreSQL, the single writer on SQLite), so each
migration runs once. Migration 1 is the schema of DicomKeep before versions
existed, written idempotently, so a database created then is adopted unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from dicomkeep.common.ports.database import Database, Tx
from dicomkeep.common.timestamps import now_stamp

#: Serialises migrations between replicas ("DCK").
SCHEMA_LOCK = 0x44434B
_FILE = re.compile(r"^(\d{4})_(\w+?)(?:\.(sqlite|postgres))?\.sql$")
_END_OF_STATEMENT = re.compile(r";[ \t]*(?:\n|$)")


class SchemaError(RuntimeError):
    """The database's schema is newer than this program knows."""


@dataclass(frozen=True)
class Migration:
    """One numbered migration for one dialect."""

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """Split a SQL script at semicolons that end a line; drop comment-only parts."""
    statements = []
    for part in _END_OF_STATEMENT.split(script):
        code = "\n".join(
            line for line in part.splitlines() if not line.strip().startswith("--")
        ).strip()
        if code:
            statements.append(code)
    return statements


def migrations_for(dialect: str) -> list[Migration]:
    """Return the migrations of a dialect ("sqlite" or "postgres"), in order.

    Raises SchemaError if two files of the dialect share a number, or if the
    numbers do not run 1, 2, 3... without a gap.
    """
    found: dict[int, Migration] = {}
    for entry in resources.files("dicomkeep.common.index").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is None or match.group(3) not in (None, dialect):
            continue
        version = int(match.group(1))
        if version in found:
            raise SchemaError(f"two migrations numbered {version} for {dialect}")
        script = entry.read_text(encoding="utf-8")
        found[version] = Migration(version, match.group(2), tuple(split_statements(script)))
    ordered = [found[v] for v in sorted(found)]
    if [m.version for m in ordered] != list(range(1, len(ordered) + 1)):
        raise SchemaError(f"migrations of {dialect} are not numbered 1..n: {sorted(found)}")
    return ordered


async def schema_version(tx: Tx) -> int:
    """Return the version recorded in the database (0 before any migration)."""
    value = await tx.fetchval("SELECT MAX(version) FROM schema_migrations")
    return int(value or 0)


async def migrate(db: Database, target: int | None = None) -> int:
    """Bring the schema of an open database to `target` (default: the latest).

    Applies the missing migrations in one transaction: a failure leaves the
    database as it was. Returns the version now recorded. Raises SchemaError
    when the database is at a version newer than every migration known here
    (written by a newer DicomKeep), and never goes down.
    """
    migrations = migrations_for(db.dialect)
    latest = migrations[-1].version if migrations else 0
    wanted = latest if target is None else min(target, latest)
    async with db.transaction() as tx:
        if db.dialect == "postgres":
            await tx.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = await schema_version(tx)
        if current > latest:
            raise SchemaError(
                f"The index schema is at version {current}, newer than this DicomKeep "
                f"knows ({latest}): run a newer DicomKeep on this database"
            )
        for migration in migrations:
            if current < migration.version <= wanted:
                for statement in migration.statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) "
                    "VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    now_stamp(),
                )
                current = migration.version
        return current
