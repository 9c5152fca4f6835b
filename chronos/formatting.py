"""How the dashboard shows times, durations, code and search hits. Plain Python."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup, escape
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(cssclass="highlight", linenos=False, wrapcode=True)


def zone(name: str | None) -> str:
    """``name`` if it is an IANA time zone, else ``"UTC"``."""
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


def local_time(ms: int | None, tz: str, seconds: bool = True) -> str:
    """``2026-11-28 18:00:05 CET`` in ``tz``; empty for ``None``."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def duration(ms: float | None) -> str:
    """``350 ms``, ``4.2 s``, ``3 min 05 s``, ``2 h 04 min``; ``–`` when unknown."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def code(snippet: str, language: str | None) -> Markup:
    """The snippet highlighted for its language (plain, escaped text for unknown ones)."""
    try:
        lexer = get_lexer_by_name(language or "text")
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    return Markup(pygments_highlight(snippet, lexer, _FORMATTER))  # noqa: S704 - Pygments escapes


def search_terms(query: str | None) -> list[str]:
    """The words a search looks for (runs of letters, digits and underscores)."""
    return re.findall(r"\w+", query or "")[:20]


def highlight(text: str | None, words: list[str], around: int = 120) -> Markup:
    """An excerpt of ``text`` around the first hit, every hit of ``words`` in ``<mark>``."""
    if not text:
        return Markup("")
    if not words:
        return escape(text[: around * 2])
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    first = pattern.search(text)
    start = max(0, first.start() - around) if first else 0
    excerpt = text[start : start + around * 2]
    out, last = [], 0
    for match in pattern.finditer(excerpt):
        out.append(escape(excerpt[last : match.start()]))
        out.append(Markup("<mark>") + escape(match.group(0)) + Markup("</mark>"))
        last = match.end()
    out.append(escape(excerpt[last:]))
    prefix = escape("…" if start else "")
    suffix = escape("…" if start + around * 2 < len(text) else "")
    return prefix + Markup("").join(out) + suffix
