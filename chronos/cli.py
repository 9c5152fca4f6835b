"""The ``chronos`` command group: ``flask --app wsgi chronos ...`` or the ``chronos`` script."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click
from flask.cli import AppGroup, FlaskGroup

from chronos import embedded
from chronos.accounts import generate_api_key, hash_password
from chronos.backends import load_backend
from chronos.cli_retention import retention_sweep, tenant_retention
from chronos.errors import ChronosError
from chronos.extension import get_state
from chronos.models import SCOPES, User
from chronos.scheduler.service import ScannerService
from chronos.timeutil import now_ms, to_iso

chronos_cli = AppGroup("chronos", help="Administer Chronos: indices, migrations, the server.")
chronos_cli.add_command(tenant_retention)
chronos_cli.add_command(retention_sweep)


def _fail(exc: ChronosError) -> click.ClickException:
    return click.ClickException(exc.for_operators)


@chronos_cli.command("create-indices")
def create_indices() -> None:
    """Create or update the search indices (safe to run any number of times).

    Metric series need no step here: each is created with its retention and compaction rules
    in the same atomic write that first counts a run in it.
    """
    state = get_state()
    try:
        backend = load_backend(state.backend_url(), state.options())
        applied = backend.migrate()
        rows = backend.schema_status()
    except ChronosError as exc:
        raise _fail(exc) from exc
    click.echo("applied now: " + (", ".join(applied) if applied else "nothing (up to date)"))
    click.echo(f"schema: {sum(1 for r in rows if r['applied_at'])} of {len(rows)} migrations")
    backend.close()


@chronos_cli.command("migrate")
@click.option("--status", "show_status", is_flag=True, help="List migrations; change nothing.")
def migrate(show_status: bool) -> None:
    """Apply pending schema migrations, in order, under a lock."""
    state = get_state()
    try:
        backend = load_backend(state.backend_url(), state.options())
        applied = [] if show_status else backend.migrate()
        rows = backend.schema_status()
    except ChronosError as exc:
        raise _fail(exc) from exc
    if not show_status:
        click.echo("applied now: " + (", ".join(applied) if applied else "nothing (up to date)"))
    for row in rows:
        when = to_iso(row["applied_at"]) if row["applied_at"] else "pending"
        click.echo(f"{row['name']:<24} {when:<26} {row['description']}")
    backend.close()


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@chronos_cli.command("create-user")
@click.argument("username")
@click.option("--admin", is_flag=True, help="May enable and disable jobs in the dashboard.")
@click.option("--tenant", default=None, help="Tenant to join (default: one named USERNAME).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user(username: str, admin: bool, tenant: str | None, password_stdin: bool) -> None:
    """Create a dashboard user (the password is asked for, or read from stdin)."""
    if not USERNAME_RE.match(username):
        raise click.ClickException("a username is 1-64 letters, digits or _ . @ -")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    user = User(username=username, tenant_id=tenant or username, is_admin=admin,
                password_hash=hash_password(password), created_at=now_ms())  # fmt: skip
    try:
        get_state().backend().create_user(user)
    except ChronosError as exc:
        raise _fail(exc) from exc
    click.echo(f"created user {username!r} in tenant {user.tenant_id!r}"
               + (" (admin)" if admin else ""))  # fmt: skip


@chronos_cli.command("create-api-key")
@click.option("--user", "username", required=True, help="The user (and so tenant) it acts for.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(sorted(SCOPES)),
    help="ingest (write telemetry), read, admin; repeatable. Default: ingest.",
)  # fmt: skip
def create_api_key(username: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key and print it, alone, on the last line. It is shown only this once."""
    backend = get_state().backend()
    try:
        user = backend.get_user(username)
        if user is None:
            raise click.ClickException(f"no user {username!r}; create it with create-user")
        new = generate_api_key(user.tenant_id, username, name, tuple(sorted(set(scopes or
                               ("ingest",)))), now_ms())  # fmt: skip
        backend.create_api_key(new.record)
    except ChronosError as exc:
        raise _fail(exc) from exc
    click.echo(f"API key {new.record.key_id} for tenant {user.tenant_id!r}, scopes "
               f"{', '.join(new.record.scopes)}; store it now, it is not shown again:")  # fmt: skip
    click.echo(new.plaintext)


@chronos_cli.command("list-api-keys")
@click.option("--user", "username", required=True, help="Any user of the tenant.")
def list_api_keys(username: str) -> None:
    """List the tenant's API keys (never their secrets)."""
    backend = get_state().backend()
    try:
        user = backend.get_user(username)
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        keys = backend.list_api_keys(user.tenant_id)
    except ChronosError as exc:
        raise _fail(exc) from exc
    for key in keys:
        state = f"revoked {to_iso(key.revoked_at)}" if key.revoked_at else "active"
        used = to_iso(key.last_used_at) if key.last_used_at else "never used"
        click.echo(f"{key.key_id}  {','.join(key.scopes):<18} {state:<34} last used {used}"
                   f"  created {to_iso(key.created_at)} by {key.username}  {key.name}")  # fmt: skip


@chronos_cli.command("revoke-api-key")
@click.argument("key_id")
@click.option("--user", "username", required=True, help="Any user of the key's tenant.")
def revoke_api_key(key_id: str, username: str) -> None:
    """Revoke a key by its id (the part after ``chr_``). Every worker refuses it within
    CHRONOS_API_KEY_CACHE_SECONDS."""
    backend = get_state().backend()
    try:
        user = backend.get_user(username)
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        revoked = backend.revoke_api_key(user.tenant_id, key_id, now_ms())
    except ChronosError as exc:
        raise _fail(exc) from exc
    if not revoked:
        raise click.ClickException(f"no active key {key_id!r} in tenant {user.tenant_id!r}")
    click.echo(f"revoked {key_id}")


@chronos_cli.command("embedded")
@click.argument("action", type=click.Choice(["status", "start", "stop"]))
def embedded_cmd(action: str) -> None:
    """Status, start or stop the embedded Redis Stack of the data dir (data is kept)."""
    state = get_state()
    if not state.embedded:
        raise click.ClickException("CHRONOS_BACKEND_URL is set: there is no embedded server")
    try:
        if action == "start":
            url, started = embedded.ensure_running(
                state.data_dir, state.config["CHRONOS_EMBEDDED_FSYNC"]
            )
            click.echo(f"{'started' if started else 'already running'}: {url}")
        elif action == "stop":
            click.echo("stopped" if embedded.shutdown(state.data_dir) else "not running")
        else:
            url = embedded.running_url(state.data_dir)
            click.echo(f"running: {url}" if url else "not running")
            if url is None:
                sys.exit(1)
    except ChronosError as exc:
        raise _fail(exc) from exc


@chronos_cli.command("scheduler")
def scheduler_cmd() -> None:
    """Run the cron scanner in this process until interrupted.

    Safe to run several (on several hosts, too): each job instant fires once. `chronos serve`
    starts one next to the web workers unless given --no-scheduler.
    """
    state = get_state()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    interval_s = state.config["CHRONOS_SCAN_INTERVAL_MS"] / 1000
    sweep_s = state.config["CHRONOS_RETENTION_SWEEP_SECONDS"]
    service = ScannerService(state.backend, state.scan_settings(), interval_s=interval_s,
                             sweep_interval_s=sweep_s)  # fmt: skip
    click.echo(f"scanner {service.owner} ticking every {service.interval_s:.2f} s")
    service.run_forever()


@chronos_cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def doctor_cmd(as_json: bool) -> None:
    """Check the backend, its modules and versions, the schema, the scanner, persistence,
    eviction and clocks, and say in words what is wrong. Exits 1 when a check fails."""
    import json

    from chronos import doctor

    results = doctor.run(get_state())
    if as_json:
        click.echo(json.dumps({"ok": not doctor.failed(results),
                               "checks": [r.as_dict() for r in results]}, indent=2))  # fmt: skip
    else:
        click.echo(doctor.render(results))
    sys.exit(1 if doctor.failed(results) else 0)


@chronos_cli.command("serve")
@click.option("--host", default=None,
              help="Address.  [default: from GUNICORN_BIND, else 127.0.0.1]")  # fmt: skip
@click.option("--port", default=None, type=int,
              help="Port.  [default: from GUNICORN_BIND, else 5000]")  # fmt: skip
@click.option("--workers", default=None, type=click.IntRange(1, 256),
              help="Worker processes.  [default: GUNICORN_WORKERS, else CPUs, >= 2]")  # fmt: skip
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Threads per worker; each open websocket holds one.  "
                   "[default: GUNICORN_THREADS, else 16]")  # fmt: skip
@click.option("--no-scheduler", is_flag=True,
              help="Do not start the cron scanner (run it with `chronos scheduler`).")  # fmt: skip
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None,
          no_scheduler: bool) -> None:  # fmt: skip
    """Run the server under gunicorn with threaded workers.

    Gunicorn gets the settings of chronos/gunicorn_config.py (GUNICORN_* variables, the same
    as `gunicorn -c gunicorn.conf.py wsgi:app`), with these options on top. Without
    CHRONOS_BACKEND_URL, starts (or reuses) the embedded Redis Stack first and stops it again
    on exit if this command started it. Index migrations run before workers start.
    """
    from chronos.gunicorn_config import serve_command

    state = get_state()
    env = dict(os.environ, CHRONOS_DATA_DIR=str(state.data_dir))
    started_embedded = False
    try:
        command, binds = serve_command(env, host, port, workers, threads)
        if state.embedded:
            url, started_embedded = embedded.ensure_running(
                state.data_dir, state.config["CHRONOS_EMBEDDED_FSYNC"]
            )
            env["CHRONOS_BACKEND_URL"] = url
            click.echo(f"embedded Redis Stack {'started' if started_embedded else 'reused'}: {url}")
        backend = load_backend(env.get("CHRONOS_BACKEND_URL") or state.backend_url(),
                               state.options())  # fmt: skip
        applied = backend.migrate()
        backend.close()  # the workers connect for themselves after the fork
        if applied:
            click.echo(f"migrations applied: {', '.join(applied)}")
    except ChronosError as exc:
        raise _fail(exc) from exc
    for bind in binds:
        click.echo(f"serving on {bind if bind.startswith('unix:') else 'http://' + bind}")
    scanner = None
    if not no_scheduler:
        scanner = subprocess.Popen([sys.executable, "-m", "chronos.cli", "scheduler"], env=env)
    code = _run_forwarding_signals(command, env, scanner)
    if started_embedded:
        embedded.shutdown(Path(state.data_dir))
    sys.exit(code)


def _run_forwarding_signals(command: list[str], env: dict[str, str],
                            companion: subprocess.Popen[bytes] | None) -> int:  # fmt: skip
    """Run gunicorn, forwarding signals to it and to the companion (the scanner), and stop
    the companion when gunicorn exits."""
    process = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in (process, companion):
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = process.wait()
    if companion is not None:
        if companion.poll() is None:
            companion.terminate()
        try:
            companion.wait(15)
        except subprocess.TimeoutExpired:
            companion.kill()
            companion.wait()
    return code


def _create_app() -> object:
    from chronos import create_app

    return create_app()


#: The ``chronos`` console script: the same commands, with the app built from the environment.
main = FlaskGroup(
    name="chronos",
    help="Chronos: job telemetry and analytics on Redis Stack.",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
)
for _command in chronos_cli.commands.values():
    main.add_command(_command)


if __name__ == "__main__":
    main()
