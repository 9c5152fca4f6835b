"""Executions index v2: the same searches for less memory (see ``schemas.executions_v2``).

Documents of both layouts (every field named, or the small ones packed into ``_x``) carry the
indexed fields at the same paths, so nothing is rewritten: the runner builds v2 from the
existing documents while v1 keeps answering, moves the alias and drops v1.
"""

from __future__ import annotations

from migrations_redis import schemas
from migrations_redis.runner import Migration, MigrationContext


def apply(ctx: MigrationContext) -> None:
    ctx.build_index("executions", 2, schemas.executions_v2(ctx.keys))


MIGRATION = Migration(
    name="0003_executions_v2",
    description="executions index v2: no term offsets or frequencies, unqueried fields dropped",
    apply=apply,
)
