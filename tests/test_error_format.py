"""Every DbTestActionError message is `<where>: <what>; <fix>` on one line (lowercase, no final period).

Two halves. This module reads every `DbTestActionError(...)` call in src/ and checks the message literal
(f-string placeholders count as text), so a new raise without a fix fails here before any test reaches it.
conftest's autouse recorder (tests/error_format.py) checks the messages actually built while the bad-input
tests run, in process and in CLI subprocesses — including the ones assembled from parts at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from error_format import shape_problem

from db_test_action.errors import DbTestActionError

SRC = Path(__file__).resolve().parent.parent / "src" / "db_test_action"

# Calls whose message is not a literal: each passes on a message that already has the shape.
PASSED_ON = {
    (
        "commands/durations.py",
        "str(problems[0])",
    ): "expand_paths' ParseProblem: `<path>: no JUnit XML …; check …`",
    (
        "plugin/db.py",
        "str(exc).replace('--db-setup', where, 1)",
    ): "parse_setup's own message, renamed to the key",
}


def _literal(node: ast.expr) -> str | None:
    """The message text with each `{…}` as `X`; None when the message is not a literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        return None if left is None or right is None else left + right
    return None


def _raises() -> list[tuple[str, int, ast.expr | None]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == DbTestActionError.__name__:
                rel = path.relative_to(SRC).as_posix()
                message = node.args[0] if node.args else node.keywords[0].value if node.keywords else None
                found.append((rel, node.lineno, message))
    return found


def test_the_scan_sees_every_raise():
    raises = _raises()
    assert len(raises) > 100  # 125 when this was written: the scan is not silently empty
    assert {rel.split("/")[0] for rel, _, _ in raises} >= {"commands", "plugin", "server", "run", "config"}


def test_every_message_literal_in_src_has_where_what_and_fix():
    bad, unknown = [], []
    for rel, line, message in _raises():
        text = _literal(message) if message is not None else None
        if text is None:
            expr = ast.unparse(message) if message is not None else "<no message>"
            if (rel, expr) not in PASSED_ON:
                unknown.append(f"{rel}:{line}: {expr}")
            continue
        if why := shape_problem(text):
            bad.append(f"{rel}:{line}: {why}: {text!r}")
    assert not bad, "messages without `<where>: <what>; <fix>`:\n" + "\n".join(bad)
    assert not unknown, "messages built at run time; pass a literal or list it in PASSED_ON:\n" + "\n".join(
        unknown
    )


def test_every_passed_on_message_still_exists():
    present = {(rel, ast.unparse(m)) for rel, _, m in _raises() if m is not None and _literal(m) is None}
    assert set(PASSED_ON) <= present


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("--shards: must be at least 1, got 0; give 1 or more", None),
        (
            'pyproject.toml [tool.db-test-action.budgets] suite: "2min" is not a duration; use 120 or "2m"',
            None,
        ),
        ("--shards: must be at least 1", "no `; <fix>` part"),
        ("must be at least 1; give 1", "no `<where>: ` in front"),
        ("--x: bad\nvalue; fix it", "spans several lines"),
        ("--x: bad value; fix it.", "ends with a period"),
        ("--x: bad value; ", "an empty fix"),
    ],
)
def test_the_shape_check_itself(message, problem):
    assert shape_problem(message) == problem
