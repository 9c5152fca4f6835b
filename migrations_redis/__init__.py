"""Explicit, ordered schema migrations for the Redis Stack backend.

``MIGRATIONS`` is the whole history, oldest first; append, never reorder or edit a released
one. ``LIVE_INDEXES`` names the version of each index that the current code queries through
its alias; ``create-indices`` rebuilds exactly those if one went missing.
"""

from __future__ import annotations

from migrations_redis import m0001_initial, m0002_job_executions, m0003_executions_v2, schemas
from migrations_redis.runner import (
    Migration,
    MigrationContext,
    ensure_live_indexes,
    migrate,
    status,
)

MIGRATIONS: list[Migration] = [
    m0001_initial.MIGRATION,
    m0002_job_executions.MIGRATION,
    m0003_executions_v2.MIGRATION,
]

LIVE_INDEXES = {
    "jobs": (1, schemas.jobs_v1),
    "executions": (2, schemas.executions_v2),
}

__all__ = [
    "LIVE_INDEXES",
    "MIGRATIONS",
    "Migration",
    "MigrationContext",
    "ensure_live_indexes",
    "migrate",
    "status",
]
