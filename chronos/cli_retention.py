"""The retention commands of the ``chronos`` group: ``tenant-retention`` shows (and changes) a
tenant's settings, ``retention-sweep`` enforces them at once instead of at the scanner's pace."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import with_appcontext

from chronos.backends.base import Backend
from chronos.errors import ChronosError
from chronos.extension import get_state
from chronos.retention import BOUNDS, defaults_from_config
from chronos.scheduler.retention import sweep_tenant
from chronos.timeutil import now_ms

#: What ``--<option> default`` stands for: back to the installation's default.
DEFAULT = "default"


class SettingValue(click.ParamType):
    """A whole number within the setting's bounds, or ``default``."""

    name = "N|default"

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == DEFAULT or isinstance(value, int):
            return value
        low, high = BOUNDS[self.setting]
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.fail(f"{value!r} is neither a whole number from {low} to {high} nor "
                      f"{DEFAULT!r}", param, ctx)  # fmt: skip
        return number


def _describe(name: str, value: int) -> str:
    if name == "execution_days":
        return f"{value} days after they started" if value else "until the cap removes them"
    if name == "max_executions_per_job":
        return f"{value} a job (the newest)" if value else "no cap"
    return f"{value} days"


LABELS = {
    "execution_days": "executions kept",
    "max_executions_per_job": "executions per job",
    "metrics_days": "metrics kept",
}


def _tenant_backend(tenant: str) -> Backend:
    backend = get_state().backend()
    if tenant not in backend.list_tenants():
        raise click.ClickException(f"no tenant {tenant!r} (a tenant exists once it has a user)")
    return backend


@click.command("tenant-retention")
@click.argument("tenant")
@click.option("--executions-days", type=SettingValue("execution_days"),
              help="Keep execution records N days after their run started (0: until the "
                   "per-job cap removes them).")  # fmt: skip
@click.option("--max-per-job", type=SettingValue("max_executions_per_job"),
              help="Keep at most N records per job, the newest (0: no cap).")  # fmt: skip
@click.option("--metrics-days", type=SettingValue("metrics_days"),
              help="Keep hourly/daily metrics and daily duration sketches N days.")  # fmt: skip
@with_appcontext
def tenant_retention(tenant: str, executions_days: int | str | None, max_per_job: int | str | None,
                     metrics_days: int | str | None) -> None:  # fmt: skip
    """Show TENANT's retention; with options, change it first ('default' for N: follow the
    installation's CHRONOS_* default). Records over a lowered setting go with the scanner's
    next sweeps, or at once with `chronos retention-sweep TENANT`."""
    given = {"execution_days": executions_days, "max_executions_per_job": max_per_job,
             "metrics_days": metrics_days}  # fmt: skip
    changes = {name: None if v == DEFAULT else v for name, v in given.items() if v is not None}
    try:
        backend = _tenant_backend(tenant)
        own = backend.get_retention(tenant)
        if changes:
            backend.set_retention(tenant, own.changed(**changes))
            own = backend.get_retention(tenant)
    except ChronosError as exc:
        raise click.ClickException(exc.for_operators) from exc
    defaults = defaults_from_config(get_state().config)
    effective = own.over(defaults)
    click.echo(f"retention of tenant {tenant!r}" + (" (changed)" if changes else "") + ":")
    for name, label in LABELS.items():
        source = "tenant setting" if getattr(own, name) is not None else "default"
        click.echo(f"  {label:<20} {_describe(name, getattr(effective, name)):<32} ({source})")


@click.command("retention-sweep")
@click.argument("tenants", nargs=-1)
@with_appcontext
def retention_sweep(tenants: tuple[str, ...]) -> None:
    """Remove now, to the end, every execution record over its tenant's retention (of every
    tenant, or of the TENANTS named). The scanner does the same gradually on its own."""
    try:
        backend = get_state().backend()
        for tenant in tenants or backend.list_tenants():
            if tenants:
                _tenant_backend(tenant)
            removed, _ = sweep_tenant(backend, tenant, now_ms(), None)
            click.echo(f"{tenant}: removed {removed}")
    except ChronosError as exc:
        raise click.ClickException(exc.for_operators) from exc
