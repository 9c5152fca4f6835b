"""The HTTP seam between the client and the network.

A transport does one thing: POST bytes and hand back the status, headers and body. It returns a
:class:`Response` for every HTTP status, and raises only when no HTTP answer arrived at all
(``OSError`` and its children such as ``ConnectionError`` and ``TimeoutError``, ``URLError``,
``http.client.HTTPException``). Retrying, batching and spooling live in the client, so a test can
swap the network out with :class:`MockTransport` and exercise all of them::

    def handler(request: Request) -> Response:
        return Response(200, body=b'{"success": true, "accepted": 1}')

    client = ChronosClient("key", transport=MockTransport(handler))
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Request:
    """What a transport is asked to send; handed to a :class:`MockTransport` handler."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Response:
    """An HTTP answer. ``headers`` keys are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class Transport(Protocol):
    """Sends one POST. Returns a :class:`Response` for any status; raises only on network errors."""

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Response: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would replay a redirected POST as a bodiless GET; a 3xx is reported instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class UrllibTransport:
    """The default transport: ``urllib.request``, no redirects, proxies from the environment."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Response:
        # The client only builds http(s) URLs (it validates the endpoint), so S310 does not apply.
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as resp:
                return Response(resp.status, _lower(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Response(exc.code, _lower(exc.headers), exc.read())


class MockTransport:
    """An in-memory transport: ``handler(request)`` returns the :class:`Response` (or raises)."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def post(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Response:
        return self.handler(Request(url, dict(headers), body, timeout))


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()} if headers is not None else {}
