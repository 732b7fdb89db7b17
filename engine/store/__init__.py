"""The store of review cases, outcomes and the decisions index: one small repository
interface (`engine.store.base.Store`) over SQLite (the default: one file, WAL mode, no
server) or PostgreSQL (for several replicas), chosen by the DSN.

A DSN is `postgresql://...` (or `postgres://...`) for PostgreSQL, else a SQLite file: a
path, or `sqlite:///path`. Opening applies the schema's versioned migrations
(`engine/store/migrations`, by yoyo-migrations, under its lock, so replicas starting at once
migrate once).
"""

from __future__ import annotations

from pathlib import Path

from engine.store.base import Store

__all__ = ["Store", "apply_migrations", "is_postgres", "open_store"]
MIGRATIONS = Path(__file__).parent / "migrations"


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def _sqlite_path(dsn: str) -> Path:
    return Path(dsn.removeprefix("sqlite:///") if dsn.startswith("sqlite:///") else dsn)


def apply_migrations(dsn: str) -> None:
    """Apply the migrations `dsn` lacks (none when it is up to date)."""
    from yoyo import get_backend, read_migrations

    if is_postgres(dsn):
        uri = "postgresql+psycopg://" + dsn.split("://", 1)[1]
    else:
        path = _sqlite_path(dsn).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    backend = get_backend(uri)
    try:
        migrations = read_migrations(str(MIGRATIONS))
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
    finally:
        backend.connection.close()


def open_store(dsn: str, migrate: bool = True) -> Store:
    """The store at `dsn`, its schema migrated first unless told not to (a reader)."""
    from engine.store.base import PostgresStore, SqliteStore

    if not dsn:
        raise ValueError("store: an empty DSN")
    if migrate:
        apply_migrations(dsn)
    if is_postgres(dsn):
        return PostgresStore(dsn)
    path = _sqlite_path(dsn)
    if not path.is_file():
        raise ValueError(f"store: {path} does not exist (no SQLite store there)")
    return SqliteStore(path)
