"""What a Redis backend URL may say, checked before any connection is made.

redis-py's ``from_url`` hands every query option it does not know to the connection class as
a string, so a misspelt option (``ssl_ca_cert=``) would only fail at the first command, as a
``TypeError``. Chronos checks the URL up front and names the problem instead:

- ``redis://[user:password@]host[:port][/0]``, ``rediss://`` for TLS, ``unix:///path.sock``;
  user and password percent-encoded (``p%40ss`` for ``p@ss``).
- Database 0 only: RediSearch builds indices in database 0 alone. Installations share one
  server through ``CHRONOS_KEY_PREFIX`` instead.
- Query options: timeouts and pool size (``CONNECTION_OPTIONS``) and, on ``rediss://`` only,
  TLS (``TLS_OPTIONS``): the CA to trust, a client certificate and key for mutual TLS,
  ``ssl_cert_reqs``, ``ssl_check_hostname``. Files must exist and be readable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from chronos.errors import ConfigError


def _number(name: str, value: str) -> None:
    try:
        if float(value) <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL must be a positive number") from None


def _whole(name: str, value: str) -> None:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL must be a whole number above 0")


def _flag(name: str, value: str) -> None:
    if value.lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL must be true or false")


def _file(name: str, value: str) -> None:
    if not (os.path.isfile(value) and os.access(value, os.R_OK)):
        raise ConfigError(
            f"{name} in CHRONOS_BACKEND_URL names {value!r}, not a file this user can read"
        )


def _directory(name: str, value: str) -> None:
    if not os.path.isdir(value):
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL names {value!r}, not a directory")


def _cert_reqs(name: str, value: str) -> None:
    if value not in ("required", "optional", "none"):
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL must be required, optional or none")


def _text(name: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{name} in CHRONOS_BACKEND_URL is empty")


Check = Callable[[str, str], None]

#: Options for any URL, as redis-py reads them from the query string.
CONNECTION_OPTIONS: dict[str, Check] = {
    "socket_timeout": _number,
    "socket_connect_timeout": _number,
    "socket_keepalive": _flag,
    "health_check_interval": _whole,
    "max_connections": _whole,
    "client_name": _text,
}
#: TLS options, for ``rediss://`` URLs only.
TLS_OPTIONS: dict[str, Check] = {
    "ssl_ca_certs": _file,  # the CA bundle (PEM) that signed the server's certificate
    "ssl_ca_path": _directory,  # or a directory of CA certificates
    "ssl_certfile": _file,  # a client certificate (PEM), for servers that require one
    "ssl_keyfile": _file,  # its private key
    "ssl_password": _text,  # the key's passphrase
    "ssl_cert_reqs": _cert_reqs,  # verify the server's certificate: required (default)
    "ssl_check_hostname": _flag,  # and that it names the host of the URL (default true)
    "ssl_ciphers": _text,
}


def check_url(url: str) -> None:
    """Raise ``ConfigError`` naming what is wrong with a ``redis://``, ``rediss://`` or
    ``unix://`` backend URL; return quietly when redis-py will accept it as Chronos needs."""
    check_database(url)
    check_options(url)


def check_database(url: str) -> None:
    """Refuse a URL that selects another database than 0."""
    db = database(url)
    if db != 0:
        raise ConfigError(
            f"CHRONOS_BACKEND_URL selects database {db if db is not None else '?'}; RediSearch "
            "indexes database 0 only. Use /0 (or nothing), and CHRONOS_KEY_PREFIX to share a "
            "server between installations"
        )


def check_options(url: str) -> None:
    """Refuse an unknown scheme, an unknown query option, a TLS option on a plain URL, or an
    option value redis-py would not take."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"a Redis URL starts with redis://, rediss:// or unix://, not {url!r}")
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name == "db":
            continue  # check_database's
        check = CONNECTION_OPTIONS.get(name) or TLS_OPTIONS.get(name)
        if check is None:
            known = ", ".join(sorted({*CONNECTION_OPTIONS, *TLS_OPTIONS}))
            raise ConfigError(
                f"CHRONOS_BACKEND_URL has an option {name!r} that Chronos does not know; "
                f"known options: {known}"
            )
        if name in TLS_OPTIONS and parts.scheme != "rediss":
            raise ConfigError(f"{name} in CHRONOS_BACKEND_URL needs a rediss:// (TLS) URL")
        check(name, values[-1])


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (and the TLS key passphrase too), for
    messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = quote(unquote(parts.username or ""), safe="")
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:***@{host}" if user else f":***@{host}"
    query = "&".join(
        f"{name}=***" if name == "ssl_password" else f"{name}={quote(value, safe='/')}"
        for name, values in parse_qs(parts.query, keep_blank_values=True).items()
        for value in values
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def database(url: str) -> int | None:
    """The database number a URL selects (0 when it names none); ``None`` if unreadable."""
    parts = urlsplit(url)
    query: dict[str, Any] = parse_qs(parts.query)
    raw = query["db"][-1] if "db" in query else (
        parts.path.strip("/") if parts.scheme != "unix" else "")  # fmt: skip
    try:
        return int(raw or 0)
    except ValueError:
        return None
