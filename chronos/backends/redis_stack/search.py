"""Building RediSearch queries without ever splicing user text into query syntax.

TAG values (ids, tags, versions, hosts) are encoded with ``keys.enc`` and passed as
``DIALECT 2`` parameters. Free text is reduced to its words (letters, digits, underscore),
which carry no query syntax, so ``a|b``, ``*``, ``@f:{x}`` or ``"`` are searched as the words
they contain, never as operators.
"""

from __future__ import annotations

import json
import re
from typing import Any

import redis

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str | None) -> list[str]:
    """The searchable words of ``text`` (at most 20, each at most 100 characters)."""
    if not text:
        return []
    return [w[:100] for w in _WORD.findall(text)][:20]


class Query:
    """An AND of clauses with their parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: dict[str, str] = {}

    def tag(self, field: str, encoded_value: str) -> Query:
        name = f"p{len(self.params)}"
        self.params[name] = encoded_value
        self.clauses.append(f"@{field}:{{${name}}}")
        return self

    def numeric(self, field: str, low: int | None, high: int | None) -> Query:
        """``low <= field <= high``; ``None`` leaves that side open."""
        lo = "-inf" if low is None else self._param(low)
        hi = "+inf" if high is None else self._param(high)
        self.clauses.append(f"@{field}:[{lo} {hi}]")
        return self

    def text(self, fields: list[str], text: str | None) -> Query:
        found = words(text)
        if found:
            self.clauses.append(f"@{'|'.join(fields)}:({' '.join(found)})")
        return self

    def _param(self, value: int) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = str(int(value))
        return f"${name}"

    def __str__(self) -> str:
        return " ".join(self.clauses) or "*"


def search_documents(
    r: redis.Redis,
    index: str,
    query: Query,
    *,
    sort_by: str,
    ascending: bool,
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The matching JSON documents, sorted, ``limit`` of them from ``offset``."""
    args: list[Any] = ["FT.SEARCH", index, str(query)]
    if query.params:
        args += ["PARAMS", len(query.params) * 2]
        for name, value in query.params.items():
            args += [name, value]
    args += ["SORTBY", sort_by, "ASC" if ascending else "DESC"]
    args += ["LIMIT", offset, limit, "DIALECT", 2]
    reply = r.execute_command(*args)
    return [json.loads(row["extra_attributes"]["$"]) for row in reply["results"]]
