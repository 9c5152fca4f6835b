"""Create the first versions of the jobs and executions indices."""

from __future__ import annotations

from migrations_redis import schemas
from migrations_redis.runner import Migration, MigrationContext


def apply(ctx: MigrationContext) -> None:
    ctx.build_index("jobs", 1, schemas.jobs_v1(ctx.keys))
    ctx.build_index("executions", 1, schemas.executions_v1(ctx.keys))


MIGRATION = Migration(
    name="0001_initial",
    description="jobs v1 and executions v1 search indices behind their aliases",
    apply=apply,
)
