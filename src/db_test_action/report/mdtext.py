"""Markdown text primitives: untrusted text escaped for prose, table cells, code spans and blocks, and the
few formats every Markdown and console view shares (durations, trimmed messages). Pure.

Split from markdown.py, which builds the report's document from these; the stability render and the
console use them too.
"""

from __future__ import annotations

import math
import re

from db_test_action.report.textsafety import neutralize

GITHUB_COMMENT_MAX = 65536
ZWJ = "\u200d"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


# --- escaping -------------------------------------------------------------------------------------------


def escape_html(text: str, quote: bool = True) -> str:
    """`html.escape`, without importing `html` (its entity table costs ~2 ms of every report's start)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;").replace("'", "&#x27;") if quote else text


def inline(text: str, limit: int = 300) -> str:
    """Untrusted text for prose and table cells: one line, no Markdown/HTML effect, no @mention."""
    text = " ".join(neutralize(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = escape_html(text, quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("@", "@" + ZWJ)


def cell(text: str, limit: int = 120) -> str:
    return inline(text, limit)


def code(text: str, limit: int = 120, *, in_table: bool = True) -> str:
    """A short code span for ids; in tables `|` is escaped as `\\|` (GFM honours that even inside spans,
    and shows the backslash anywhere else). Mentions in code are not links: the text stays exact."""
    text = " ".join(neutralize(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    body = text.replace("|", chr(92) + "|") if in_table else text
    return f"{ticks}{pad}{body}{pad}{ticks}"


def fenced(text: str) -> str:
    """A code block no content can break out of: the fence outgrows any backtick run inside."""
    text = neutralize(text)
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def trim_lines(text: str, max_lines: int, max_chars: int) -> str:
    """Head and tail of a long message: the exception is usually at the end of a traceback."""
    lines = text.strip().splitlines()
    if len(lines) > max_lines:
        head = max(1, max_lines // 3)
        tail = max_lines - head
        lines = [*lines[:head], f"… {len(lines) - max_lines} lines cut …", *lines[-tail:]]
    out = "\n".join(lines)
    if len(out) > max_chars:
        half = max_chars // 2
        out = out[:half] + f"\n… {len(out) - max_chars} characters cut …\n" + out[-half:]
    return out


_WRAPPER_NOISE = re.compile(
    r"\(sqlalchemy\.[\w.]+\) |<class '[\w.]+'>: |\[SQL: .*|\(Background on this error at: [^)]*\)", re.S
)


def short_message(message: str) -> str:
    """The sentence that matters: SQLAlchemy's wrapper names, the SQL and the doc link dropped (table cells)."""
    return " ".join(_WRAPPER_NOISE.sub("", message).split()) or message


def duration(seconds: float) -> str:
    if not 0 <= seconds < math.inf:  # the reader refuses absurd times; a sum or a base report must not crash
        return "?" if seconds != seconds else ("∞" if seconds > 0 else f"{seconds:g}s")
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
