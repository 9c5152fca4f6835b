"""Websockets: ``/ws/runner`` hands triggers to SDK runners (see docs/runner-protocol.md) and
``/ws/live`` pushes a tenant's live events to its dashboard clients."""

from __future__ import annotations

import json
import logging
import queue
import time
import uuid
from typing import Any

from flask import Blueprint
from flask_sock import Sock

from chronos.auth import Principal, authenticate, session_principal
from chronos.errors import BackendUnavailable, ChronosError, Forbidden, RateLimited, Unauthorized
from chronos.extension import get_backend, get_state
from chronos.models import Delivery, Event
from chronos.prometheus import socket_closed, socket_opened
from chronos.timeutil import now_ms, to_iso

log = logging.getLogger(__name__)

bp = Blueprint("sockets", __name__)
sock = Sock()

#: A trigger not acknowledged within this time goes to another runner.
ACK_TIMEOUT_MS = 30_000
CLAIM_EVERY_S = 5.0
PING_EVERY_S = 20.0
READ_BLOCK_MS = 1000
#: How long the server waits for the acks of the triggers it just sent. Runners ack on
#: receipt, so the ack is recorded now rather than after the next blocking read (up to
#: READ_BLOCK_MS later), when a restart in between would lose it and leave the trigger to a
#: redelivery after ACK_TIMEOUT_MS.
ACK_WAIT_S = 0.5
MAX_JOBS = 1000
#: Largest message a client may send (a hello naming MAX_JOBS long ids fits); a bigger one
#: closes the socket with 1009 instead of being buffered whole.
MAX_MESSAGE_BYTES = 1024 * 1024


@bp.record_once
def _limit_messages(state: Any) -> None:
    state.app.config.setdefault("SOCK_SERVER_OPTIONS", {"max_message_size": MAX_MESSAGE_BYTES})


def close_code(exc: ChronosError) -> int:
    """The websocket close code for an error: 44xx mirror HTTP statuses the client must act
    on; a storage outage is 1013 (try again later), which clients retry as any disconnect."""
    if isinstance(exc, Forbidden | Unauthorized | RateLimited):
        return 4000 + exc.status_code
    return 1013 if isinstance(exc, BackendUnavailable) else 1011


def _close_with(ws: Any, exc: ChronosError) -> None:
    ws.send(json.dumps({"type": "error", "error": exc.message, "code": exc.code}))
    ws.close(reason=close_code(exc), message=exc.message[:120])


def _hello(ws: Any) -> tuple[list[str], str]:
    raw = ws.receive(timeout=10)
    try:
        hello = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
        hello = None
    jobs = hello.get("jobs") if isinstance(hello, dict) else None
    if (not isinstance(hello, dict) or hello.get("type") != "hello" or not isinstance(jobs, list)
            or not all(isinstance(j, str) and 0 < len(j) <= 256 for j in jobs)
            or len(jobs) > MAX_JOBS):  # fmt: skip
        raise ChronosError('expected {"type": "hello", "jobs": ["<job id>", ...]} first')
    name = hello.get("runner") if isinstance(hello.get("runner"), str) else "runner"
    return list(dict.fromkeys(jobs)), f"{name[:64]}-{uuid.uuid4().hex[:8]}"


def _trigger_message(delivery: Delivery) -> str:
    return json.dumps({"type": "job:trigger", "jobId": delivery.job_id,
                       "triggerId": delivery.trigger_id,
                       "scheduledFor": to_iso(delivery.scheduled_for),
                       "delivery": delivery.deliveries})  # fmt: skip


@sock.route("/ws/runner", bp=bp)
def runner_socket(ws: Any) -> None:
    try:
        principal = authenticate("ingest")
    except ChronosError as exc:
        _close_with(ws, exc)
        return
    try:
        jobs, runner = _hello(ws)
    except ChronosError as exc:
        ws.send(json.dumps({"type": "error", "error": exc.message}))
        ws.close(reason=4400, message="bad hello")
        return
    ws.send(json.dumps({"type": "ready", "runner": runner}))
    socket_opened("runner")
    try:
        _serve_runner(ws, principal, jobs, runner)
    except ChronosError as exc:  # Redis went away: the runner reconnects with backoff
        if not isinstance(exc, BackendUnavailable):
            log.error("runner socket of tenant %r: %s", principal.tenant_id, exc.for_operators)
        _close_with(ws, exc)
    finally:
        socket_closed("runner")


def _serve_runner(ws: Any, principal: Principal, jobs: list[str], runner: str) -> None:
    backend = get_backend()
    stopping = get_state().stopping
    tenant = principal.tenant_id
    pending: dict[str, Delivery] = {}
    next_claim = next_ping = time.monotonic()
    while not stopping.is_set():
        while (raw := ws.receive(timeout=0)) is not None:
            _on_runner_message(raw, pending, runner, tenant)
        deliveries = backend.read_triggers(tenant, jobs, runner, 10, READ_BLOCK_MS)
        if time.monotonic() >= next_claim:
            deliveries += backend.claim_stale_triggers(tenant, jobs, runner, ACK_TIMEOUT_MS, 10)
            next_claim = time.monotonic() + CLAIM_EVERY_S
        for delivery in deliveries:
            pending[delivery.trigger_id] = delivery
            ws.send(_trigger_message(delivery))
        if deliveries:
            _await_acks(ws, pending, [d.trigger_id for d in deliveries], runner, tenant)
        if time.monotonic() >= next_ping:
            ws.send('{"type": "ping"}')
            next_ping = time.monotonic() + PING_EVERY_S
    while (raw := ws.receive(timeout=0)) is not None:  # acks that came in the last read
        _on_runner_message(raw, pending, runner, tenant)
    _going_away(ws)


def _await_acks(ws: Any, pending: dict[str, Delivery], sent: list[str], runner: str,
                tenant: str) -> None:  # fmt: skip
    """Handle the runner's messages until the triggers in ``sent`` are acknowledged, for at
    most ``ACK_WAIT_S``."""
    deadline = time.monotonic() + ACK_WAIT_S
    while any(t in pending for t in sent) and (left := deadline - time.monotonic()) > 0:
        raw = ws.receive(timeout=left)
        if raw is None:
            return
        _on_runner_message(raw, pending, runner, tenant)


def _going_away(ws: Any) -> None:
    """End a websocket because this server process is stopping; the client reconnects, to
    another worker, and unacknowledged triggers are redelivered as after any disconnect."""
    ws.close(reason=1001, message="server restarting")


def _on_runner_message(raw: str, pending: dict[str, Delivery], runner: str, tenant: str) -> None:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return
    if not isinstance(message, dict) or message.get("type") != "ack":
        return  # pong and anything unknown
    delivery = pending.pop(str(message.get("triggerId")), None)
    if delivery is None:
        return
    backend = get_backend()
    if backend.ack_trigger(delivery, runner, now_ms()):
        backend.publish(Event(tenant, "trigger", {
            "jobId": delivery.job_id, "triggerId": delivery.trigger_id,
            "scheduledFor": delivery.scheduled_for, "status": "delivered", "runner": runner,
        }))  # fmt: skip


def _live_principal() -> str:
    """The tenant of the dashboard session's user, or of a ``read`` API key."""
    from_session = session_principal()
    if from_session is not None:
        return from_session.tenant_id
    try:
        return authenticate("read").tenant_id
    except Unauthorized:
        raise Unauthorized("log in, or send a read-scoped API key") from None


@sock.route("/ws/live", bp=bp)
def live_socket(ws: Any) -> None:
    try:
        tenant = _live_principal()
    except ChronosError as exc:
        _close_with(ws, exc)
        return
    state = get_state()
    hub = state.live_hub()
    client = hub.register(tenant)
    socket_opened("live")
    try:
        ws.send(json.dumps({"type": "hello"}))
        next_ping = time.monotonic() + PING_EVERY_S
        reported_drops = 0
        while not state.stopping.is_set():
            if ws.receive(timeout=0) is None and not ws.connected:
                return
            try:
                event: Event | None = client.queue.get(timeout=0.5)
            except queue.Empty:
                event = None
            if client.dropped != reported_drops:
                ws.send(json.dumps({"type": "lagging", "dropped": client.dropped}))
                reported_drops = client.dropped
            if event is not None:
                ws.send(json.dumps({"type": event.type, "data": event.data}))
            if time.monotonic() >= next_ping:
                ws.send('{"type": "ping"}')
                next_ping = time.monotonic() + PING_EVERY_S
        _going_away(ws)
    finally:
        hub.unregister(client)
        socket_closed("live")
