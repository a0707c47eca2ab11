"""Text from artifacts, made safe to show and cut to a size limit. Pure.

Why: test names, messages and server logs come from a fork's run. Besides Markdown and HTML (escaped in
markdown.py), they can carry terminal escape sequences (recolour or rewrite the job log: ANSI CSI/OSC)
and Unicode bidirectional controls (make `evil.py` display as `ypl.live`, the "Trojan Source" trick).
`neutralize` removes the former and shows the latter as visible `[U+202E]` tags, everywhere we print or
post (console, job summary, PR comment). `fit_with_closers` cuts Markdown to a hard size limit while
still closing the code fence and `<details>` left open, and never lets those closers push it over.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# ESC-introduced sequences (CSI `ESC[…final`, OSC `ESC]…BEL|ESC\`, two-byte ESC x), C1 CSI/OSC, and
# the remaining C0/C1 controls except tab and newline (a bare CR can overwrite a log line).
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x9c]*[\x07\x9c]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutralize(text: str) -> str:
    """Terminal escapes and control characters removed; bidi controls shown as `[U+XXXX]`."""
    if text.isascii() and text.isprintable():
        return text  # the common case, at no cost
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    return _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def markdown_closers(text: str) -> str:
    """What closes the code fence and `<details>` left open where `text` was cut ("" when nothing is),
    so the note that follows a cut renders as text instead of disappearing into a block."""
    fence: str | None = None
    open_details = 0
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None:
            opener = re.match(r"(`{3,}|~{3,})", stripped)
            if opener:
                fence = opener.group(1)
                continue
            open_details += stripped.count("<details") - stripped.count("</details>")
        elif len(stripped) >= len(fence) and set(stripped) == {fence[0]}:
            fence = None
    closers = ([fence] if fence else []) + ["</details>"] * max(open_details, 0)
    return "\n" + "\n".join(closers) if closers else ""


def fit_with_closers(
    text: str, budget: int, note: str, size: Callable[[str], int] = len, reserve: int = 200
) -> str:
    """`text` when it fits in `budget`; else a head of it cut at a line end, its closers and `note`,
    together never larger than `budget` (measured by `size`). Each round cuts the excess, so many
    unclosed `<details>` (each needing a closer) shrink the head instead of overflowing the limit."""
    total = size(text)
    if total <= budget:
        return text
    if size(note) > budget:
        return ""
    per_char = max(total / max(len(text), 1), 1.0)  # bytes per character when `size` counts bytes
    head = text[: max(int((budget - size(note) - reserve) / per_char), 0)]
    for _round in range(64):
        head = head[: head.rindex("\n")] if "\n" in head else ""
        out = head + markdown_closers(head) + note
        excess = size(out) - budget
        if excess <= 0:
            return out
        head = head[: max(len(head) - int(excess / per_char) - 1, 0)]
    return note
