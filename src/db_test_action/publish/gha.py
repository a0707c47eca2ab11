"""The only place that writes GitHub Actions' env files and workflow commands.

Keeping this in one module means escaping (`%`, CR, LF in command data; heredoc
delimiters in env files) is done once, correctly, and nowhere else writes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from db_test_action.report.textsafety import fit_with_closers, neutralize


def _append_pairs(path: str, values: Mapping[str, str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for key, value in values.items():
            if "\n" in value or "\r" in value:
                # Multi-line values need the heredoc form with a delimiter that cannot occur in the value.
                delim = f"ghadelim_{_token()}"
                fh.write(f"{key}<<{delim}\n{value}\n{delim}\n")
            else:
                fh.write(f"{key}={value}\n")


def export_env(values: Mapping[str, str], env: Mapping[str, str] | None = None) -> bool:
    """Append to GITHUB_ENV so later steps see the variables; False when not on Actions."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_ENV")
    if not path:
        return False
    _append_pairs(path, values)
    return True


def set_outputs(values: Mapping[str, str], env: Mapping[str, str] | None = None) -> bool:
    """Append step outputs to GITHUB_OUTPUT; False when not on Actions."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return False
    _append_pairs(path, values)
    return True


def mask(value: str) -> str:
    """The `::add-mask::` command, so a generated password never shows in logs."""
    return f"::add-mask::{escape_data(value)}"


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str, **props: str | int | None) -> str:
    """Format `::name k=v,…::message` with GitHub's escaping rules; the text comes from artifacts, so
    terminal escapes and bidi controls are neutralized first, as everywhere else we print."""
    parts = [
        f"{k}={escape_property(neutralize(str(v)))}" for k, v in props.items() if v is not None and v != ""
    ]
    head = f"::{name} {','.join(parts)}" if parts else f"::{name}"
    return f"{head}::{escape_data(neutralize(message))}"


def summary_path(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    path = env.get("GITHUB_STEP_SUMMARY")
    return Path(path) if path else None


SUMMARY_LIMIT_BYTES = 1024 * 1024  # GitHub rejects a step summary above 1 MiB (and shows none of it)


def fit_summary(markdown: str, budget_bytes: int) -> str:
    """`markdown` cut to `budget_bytes` of UTF-8 at a line boundary, with a note saying what was left out.

    An open code fence and open `<details>` are closed so the rest of the page still renders, and the
    closers and the note count against the budget too (an earlier step may have used most of the 1 MiB):
    the result is never larger than `budget_bytes`, possibly empty.
    """
    data_size = len(markdown.encode("utf-8"))
    note = (
        "\n\n> **Note:** the job summary was trimmed to GitHub's 1 MiB limit; "
        f"some of its {data_size} bytes were left out. The full report is in the report JSON.\n"
    )
    return fit_with_closers(markdown, budget_bytes, note, size=lambda t: len(t.encode("utf-8")), reserve=0)


def append_summary(markdown: str, env: Mapping[str, str] | None = None) -> Path | None:
    """Append to GITHUB_STEP_SUMMARY within what is left of this step's 1 MiB; None when not on Actions."""
    path = summary_path(env)
    if path is None:
        return None
    used = path.stat().st_size if path.exists() else 0
    budget = max(SUMMARY_LIMIT_BYTES - used - 1, 0)  # 1: the newline we may add
    text = fit_summary(neutralize(markdown), budget)
    if not text:
        return path  # an earlier step filled the summary: nothing of ours fits
    if not text.endswith("\n"):
        text += "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
    return path


def stop_commands(text: str) -> str:
    """Wrap untrusted text so the runner does not execute `::…::` lines inside it (e.g. in a test name)."""
    token = f"dbta-{_token()}"
    return f"::stop-commands::{token}\n{text.rstrip(chr(10))}\n::{token}::"


def console(text: str, env: Mapping[str, str] | None = None) -> str:
    """Console text as a step may print it: on Actions, fenced so that a `::error::` hidden in a test
    name or message (from a fork's artifact, say) cannot run as a workflow command."""
    env = os.environ if env is None else env
    text = neutralize(text)  # no terminal escapes or bidi tricks from artifacts in the job log
    return stop_commands(text) + "\n" if env.get("GITHUB_ACTIONS") == "true" and text.strip() else text


ANNOTATION_MESSAGE_MAX_CHARS = 4000  # the UI shows a few lines; the rest belongs in the summary


def annotation(
    level: str, message: str, *, title: str = "", file: str | None = None, line: int | None = None
) -> str:
    """`::error file=…,line=…,title=…::message`, the message cut head…tail when it is huge (after it is
    neutralized, which can lengthen it: `[U+202E]` for one character)."""
    message = neutralize(message)
    if len(message) > ANNOTATION_MESSAGE_MAX_CHARS:
        half = ANNOTATION_MESSAGE_MAX_CHARS // 2
        message = f"{message[:half]}\n…\n{message[-half:]}"
    return workflow_command(level, message, file=file, line=line, title=title)


def _token() -> str:
    """A delimiter no artifact can predict. `secrets` is imported here: it pulls in hashlib and hmac,
    ~5 ms that a report without GitHub output should not pay at startup."""
    import secrets

    return secrets.token_hex(8)
