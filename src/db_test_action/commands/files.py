"""Reading and writing the commands' own files, with the one-line errors every command promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from db_test_action.errors import DbTestActionError


def write_output(path: Path, text: str, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write {flag} ({exc.strerror}); check the directory"
        ) from None


def read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DbTestActionError(f"{path}: cannot read {flag} file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise DbTestActionError(f"{path}:{exc.lineno}: {flag} file is not JSON ({exc.msg})") from None


def display_path(path: Path, cwd: Path) -> str:
    """Relative to the working directory when inside it: shorter names in reports and messages."""
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)
