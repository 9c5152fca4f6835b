"""The tenant's API keys: list, create (the plaintext is shown once), revoke.

Any user of a tenant manages its keys, but only admins create or revoke ``admin``-scope keys:
a user cannot hand out, or take away, more than they could make again.
"""

from __future__ import annotations

import re

from flask import g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from chronos.accounts import generate_api_key
from chronos.blueprints.dashboard import bp, is_admin, login_required
from chronos.errors import Forbidden, NotFound
from chronos.extension import get_backend, get_state
from chronos.timeutil import now_ms

SCOPE_ORDER = ("ingest", "read", "admin")  # chronos.models.SCOPES, in display order
MAX_NAME = 100
_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _keys_page(error: str | None = None, name: str = "", status: int = 200) -> tuple[str, int]:
    keys = get_backend().list_api_keys(g.principal.tenant_id)
    return render_template("keys.html", keys=keys, scopes=SCOPE_ORDER, admin=is_admin(),
                           error=error, name=name), status  # fmt: skip


@bp.get("/keys")
@login_required
def keys() -> tuple[str, int]:
    return _keys_page()


@bp.post("/keys")
@login_required
def create_key() -> Response | tuple[str, int]:
    name = _CONTROL_RE.sub("", request.form.get("name", "")).strip()[:MAX_NAME]
    scopes = tuple(s for s in SCOPE_ORDER if s in request.form.getlist("scopes"))
    if not scopes:
        return _keys_page("choose at least one scope", name, 422)
    if "admin" in scopes and not is_admin():
        raise Forbidden("only administrators may create admin-scope keys")
    p = g.principal
    new = generate_api_key(p.tenant_id, p.username, name, scopes, now_ms())
    get_backend().create_api_key(new.record)
    body = render_template("key_created.html", key=new.record, plaintext=new.plaintext)
    response = Response(body, status=201, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # the secret must not stay in any cache
    return response


@bp.post("/keys/<key_id>/revoke")
@login_required
def revoke_key(key_id: str) -> Response:
    tenant = g.principal.tenant_id
    record = get_backend().get_api_key(key_id) if _KEY_ID_RE.match(key_id) else None
    if record is None or record.tenant_id != tenant:
        raise NotFound(f"no API key {key_id!r} in this tenant")
    if "admin" in record.scopes and not is_admin():
        raise Forbidden("only administrators may revoke admin-scope keys")
    get_backend().revoke_api_key(tenant, key_id, now_ms())  # False: revoked already, fine
    get_state().key_cache.pop(key_id, None)  # this worker refuses it at once
    return redirect(url_for("dashboard.keys"), 303)
