"""Key names: user ids can neither collide, forge another key's shape, nor widen a pattern."""

from __future__ import annotations

import re

import pytest

from chronos.backends.redis_stack.keys import Keys, dec, enc

HOSTILE = ["a|b", "*", "{x}", "\\", "a:b", "a%3Ab", "job-1", "job1", "é", "a b"]
SAFE = re.compile(r"^[A-Za-z0-9_.~%-]*$")


def test_enc_is_injective_on_hostile_ids() -> None:
    encoded = [enc(value) for value in HOSTILE]
    assert len(set(encoded)) == len(HOSTILE)
    assert [dec(value) for value in encoded] == HOSTILE


@pytest.mark.parametrize("value", HOSTILE)
def test_enc_output_holds_only_safe_characters(value: str) -> None:
    assert SAFE.fullmatch(enc(value))
    assert ":" not in enc(value)


def test_enc_keeps_plain_ids_readable() -> None:
    assert enc("job-1") == "job-1"
    assert enc("a:b") == "a%3Ab"
    assert enc("a%3Ab") == "a%253Ab"  # an already-encoded-looking id stays distinct


def test_a_colon_in_an_id_cannot_forge_another_key() -> None:
    keys = Keys("p:")
    assert keys.job("a:b", "c") != keys.job("a", "b:c")
    assert keys.execution("a:b", "c") != keys.execution("a", "b:c")
    assert keys.series("a:b", "c", "runs", "raw") != keys.series("a", "b:c", "runs", "raw")


def test_the_whole_tenant_scope_never_collides_with_a_job_named_star() -> None:
    keys = Keys("p:")
    assert keys.series("t", None, "runs", "raw") != keys.series("t", "*", "runs", "raw")


@pytest.mark.parametrize("tenant", HOSTILE)
@pytest.mark.parametrize("job", ["a:b", "*", "x", ""])
def test_schedule_member_round_trips(tenant: str, job: str) -> None:
    member = Keys.schedule_member(tenant, job)
    assert Keys.parse_schedule_member(member) == (tenant, job)


def test_events_pattern_escapes_glob_characters_in_the_prefix() -> None:
    assert Keys("chronos:").events_pattern() == "chronos:events:*"
    assert Keys("we*ird?[1]\\:").events_pattern() == "we\\*ird\\?\\[1\\]\\\\:events:*"


@pytest.mark.parametrize("tenant", HOSTILE)
def test_tenant_from_channel_round_trips(tenant: str) -> None:
    keys = Keys("p*[x]:")
    channel = keys.events_channel(tenant)
    assert channel.startswith("p*[x]:events:")
    assert keys.tenant_from_channel(channel) == tenant


def test_every_key_starts_with_the_prefix() -> None:
    keys = Keys("pfx:")
    names = [
        keys.user("u"), keys.tenants(), keys.tenant_users("t"), keys.api_key("k"),
        keys.tenant_api_keys("t"), keys.job("t", "j"), keys.job_seq("t"),
        keys.execution("t", "e"), keys.index_alias("jobs"), keys.index_version("jobs", 1),
        keys.series("t", "j", "runs", "1h"), keys.sketch("t", None, "h", 0), keys.scratch("x"),
        keys.schedule(), keys.claim("t", "j", 0), keys.events_channel("t"),
        keys.schema_version(), keys.schema_applied(), keys.schema_lock(),
    ]  # fmt: skip
    assert all(name.startswith("pfx:") for name in names)
    assert len(set(names)) == len(names)
