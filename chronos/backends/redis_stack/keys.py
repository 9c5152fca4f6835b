"""Every Redis key, index and channel name Chronos uses, built from the key prefix.

Nothing else in the code base spells a key. User-given ids (tenant, job, execution, key ids,
usernames) go through :func:`enc`, a percent-encoding whose output holds only
``[A-Za-z0-9_.~%-]``: two different ids never give the same key, a ``:`` inside an id cannot
forge another key's shape, and glob characters (``*?[]``) cannot widen a pattern. The same
encoding is what the search indices store in their TAG fields, so an id reaching a query is
inert text, and is also passed as a ``DIALECT 2`` parameter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote, unquote

from chronos.models import DURATION_BUCKETS_MS

#: Metric series kept per scope (tenant, and tenant+job): runs, successes, failures,
#: duration sum and count of runs that had a duration.
METRICS: tuple[str, ...] = ("runs", "success", "failure", "dur_sum", "dur_n")
#: Series resolutions: raw per-minute samples and their hourly and daily compactions.
RESOLUTIONS: tuple[str, ...] = ("raw", "1h", "1d")
RESOLUTION_MS: dict[str, int] = {"raw": 60_000, "1h": 3_600_000, "1d": 86_400_000}
#: Duration sketches: hourly for recent data, daily for the long range.
SKETCH_GRAINS: dict[str, int] = {"h": 3_600_000, "d": 86_400_000}
#: Weekly sketches (grain "w", Monday 00:00 UTC to Monday) are not written by the write path:
#: a read merges the daily ones of a week into one once that week can no longer change.
WEEK_MS = 7 * 86_400_000
#: The epoch fell on a Thursday; the first Monday 00:00 UTC after it.
FIRST_MONDAY_MS = 4 * 86_400_000


def totals_bucket_field(index: int) -> str:
    """The field of a job's totals hash that counts duration bucket ``index`` (named by its
    bound, so a changed bucket list never mixes counts of different bounds)."""
    bounds = DURATION_BUCKETS_MS
    return f"le:{bounds[index]}" if index < len(bounds) else "le:inf"


#: The scope part of a key that means "the whole tenant". ``enc`` never yields a bare ``*``.
ALL_JOBS = "*"


@functools.lru_cache(maxsize=65536)
def enc(value: str) -> str:
    """Encode a user-given id for use inside a key or a TAG field (cached: ids repeat)."""
    return quote(value, safe="")


def dec(value: str) -> str:
    return unquote(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix, e.g. ``Keys("chronos:")``."""

    prefix: str = "chronos:"

    # accounts ------------------------------------------------------------------------------
    def user(self, username: str) -> str:
        return f"{self.prefix}user:{enc(username)}"

    def tenants(self) -> str:
        return f"{self.prefix}tenants"

    def tenant_users(self, tenant_id: str) -> str:
        return f"{self.prefix}tenant:{enc(tenant_id)}:users"

    def api_key(self, key_id: str) -> str:
        return f"{self.prefix}apikey:{enc(key_id)}"

    def tenant_api_keys(self, tenant_id: str) -> str:
        return f"{self.prefix}tenant:{enc(tenant_id)}:apikeys"

    # jobs and executions -------------------------------------------------------------------
    def job_prefix(self) -> str:
        return f"{self.prefix}job:"

    def job(self, tenant_id: str, job_id: str) -> str:
        return f"{self.job_prefix()}{enc(tenant_id)}:{enc(job_id)}"

    @staticmethod
    def job_id_of(key: str) -> str:
        """The job id of a ``job`` key (its last part: ``enc`` never yields a ``:``)."""
        return dec(key.rsplit(":", 1)[1])

    def job_state(self, tenant_id: str, job_id: str) -> str:
        """The job's last-run state: a document of its own, outside the search index, so that
        recording a run never re-indexes the job."""
        return f"{self.prefix}jobstate:{enc(tenant_id)}:{enc(job_id)}"

    def job_seq(self, tenant_id: str) -> str:
        return f"{self.prefix}tenant:{enc(tenant_id)}:jobseq"

    def execution_prefix(self) -> str:
        return f"{self.prefix}exec:"

    def execution(self, tenant_id: str, exec_id: str) -> str:
        return f"{self.tenant_execution_prefix(tenant_id)}{enc(exec_id)}"

    def tenant_execution_prefix(self, tenant_id: str) -> str:
        """What precedes ``enc(exec_id)`` in the tenant's execution keys: the retention
        scripts rebuild a document's key from it and a member of ``job_executions``."""
        return f"{self.execution_prefix()}{enc(tenant_id)}:"

    def job_executions(self, tenant_id: str, job_id: str) -> str:
        """Sorted set of the job's executions (members ``enc(exec_id)``, scores ``started_at``):
        the per-job cap trims its lowest scores and the retention sweep deletes by score
        range, neither scanning the keyspace. Members may outlive their expired documents."""
        return f"{self.prefix}jobexecs:{enc(tenant_id)}:{enc(job_id)}"

    def tenant_execution_jobs(self, tenant_id: str) -> str:
        """Set of ``enc(job_id)`` of every job of the tenant that has had executions (whose
        series and ``job_executions`` the retention settings apply to)."""
        return f"{self.prefix}tenant:{enc(tenant_id)}:execjobs"

    def tenant_retention(self, tenant_id: str) -> str:
        """Hash of the tenant's own retention settings (fields absent: the defaults)."""
        return f"{self.prefix}tenant:{enc(tenant_id)}:retention"

    # search indices ------------------------------------------------------------------------
    def index_alias(self, name: str) -> str:
        """The name queries use; it points at the live version of the index."""
        return f"{self.prefix}idx:{name}"

    def index_version(self, name: str, version: int) -> str:
        return f"{self.prefix}idx:{name}:v{version}"

    # metrics -------------------------------------------------------------------------------
    def _scope(self, tenant_id: str, job_id: str | None) -> str:
        return f"{enc(tenant_id)}:{ALL_JOBS if job_id is None else enc(job_id)}"

    def series(self, tenant_id: str, job_id: str | None, metric: str, resolution: str) -> str:
        return f"{self.prefix}ts:{self._scope(tenant_id, job_id)}:{metric}:{resolution}"

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - Keys is a small frozen value
    def all_series(self, tenant_id: str, job_id: str) -> tuple[str, ...]:
        """Every series one run of ``job_id`` touches: for the tenant, then for the job, each
        metric of ``METRICS`` at each resolution of ``RESOLUTIONS``."""
        return tuple(
            self.series(tenant_id, scope, metric, resolution)
            for scope in (None, job_id)
            for metric in METRICS
            for resolution in RESOLUTIONS
        )

    def sketch(self, tenant_id: str, job_id: str | None, grain: str, bucket_start: int) -> str:
        return f"{self.prefix}td:{self._scope(tenant_id, job_id)}:{grain}:{bucket_start}"

    def totals(self, tenant_id: str, job_id: str) -> str:
        """Hash of a job's all-time counts and duration histogram (``MetricsStore.job_totals``)."""
        return f"{self.prefix}totals:{enc(tenant_id)}:{enc(job_id)}"

    def scratch(self, token: str) -> str:
        """A short-lived working key (merged sketches); always set with an expiry."""
        return f"{self.prefix}tmp:{token}"

    # scheduling ----------------------------------------------------------------------------
    def schedule(self) -> str:
        """Sorted set of every tenant's next fire times (score = epoch ms)."""
        return f"{self.prefix}schedule"

    @classmethod
    def schedule_member(cls, tenant_id: str, job_id: str) -> str:
        return cls.pair(tenant_id, job_id)

    @classmethod
    def parse_schedule_member(cls, member: str) -> tuple[str, str]:
        return cls.parse_pair(member)

    def trigger_stream(self, tenant_id: str, job_id: str) -> str:
        """Stream of a job's fired triggers; its consumer group ``runners`` hands each one to
        one runner."""
        return f"{self.prefix}triggers:{enc(tenant_id)}:{enc(job_id)}"

    def trigger(self, tenant_id: str, trigger_id: str) -> str:
        """The lifecycle record of one trigger (JSON)."""
        return f"{self.prefix}trigger:{enc(tenant_id)}:{enc(trigger_id)}"

    def job_triggers(self, tenant_id: str, job_id: str) -> str:
        """Sorted set of a job's recent trigger ids by scheduled instant."""
        return f"{self.prefix}jobtriggers:{enc(tenant_id)}:{enc(job_id)}"

    def deadlines(self) -> str:
        """Sorted set of fired triggers awaiting a start, by grace deadline (all tenants)."""
        return f"{self.prefix}deadlines"

    def timeouts(self) -> str:
        """Sorted set of running executions by max-runtime deadline (all tenants)."""
        return f"{self.prefix}timeouts"

    @staticmethod
    def pair(tenant_id: str, item_id: str) -> str:
        """A ``tenant:id`` member of the cross-tenant sorted sets above."""
        return f"{enc(tenant_id)}:{enc(item_id)}"

    @staticmethod
    def parse_pair(member: str) -> tuple[str, str]:
        tenant, _, item = member.partition(":")
        return dec(tenant), dec(item)

    def heartbeat(self, name: str) -> str:
        return f"{self.prefix}heartbeat:{enc(name)}"

    def claim(self, tenant_id: str, job_id: str, instant: int) -> str:
        return f"{self.prefix}claim:{enc(tenant_id)}:{enc(job_id)}:{instant}"

    def rate_window(self, name: str, window_start: int) -> str:
        return f"{self.prefix}rl:{enc(name)}:{window_start}"

    # live events ---------------------------------------------------------------------------
    def events_channel(self, tenant_id: str) -> str:
        return f"{self.prefix}events:{enc(tenant_id)}"

    def events_pattern(self) -> str:
        """Pattern matching every tenant's channel (the prefix's glob characters escaped)."""
        return f"{_glob_escape(self.prefix)}events:*"

    def tenant_from_channel(self, channel: str) -> str:
        return dec(channel[len(f"{self.prefix}events:") :])

    # schema --------------------------------------------------------------------------------
    def schema_version(self) -> str:
        return f"{self.prefix}schema:version"

    def schema_applied(self) -> str:
        """Hash: migration name -> epoch ms when it was applied."""
        return f"{self.prefix}schema:applied"

    def schema_lock(self) -> str:
        return f"{self.prefix}schema:lock"
