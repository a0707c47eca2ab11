"""What a testcase's <failure>/<error>/<skipped> children say: outcome, phase, message and text. Pure.

Split from reader.py (the event loop) to keep modules small. Encodes pytest's conventions: error >
failure > skipped, `failed on setup with "…"` wrappers, the plugin's `attempt_failure` and quarantine
reasons.
"""

from __future__ import annotations

import re

from db_test_action.model import Outcome, Phase

_PHASE_PREFIXES = (("failed on setup with ", Phase.SETUP), ("failed on teardown with ", Phase.TEARDOWN))
SEVERITY = {"error": 3, "failure": 2, "skipped": 1}


def outcome_of(results: list[tuple[str, str, str | None, str]]) -> tuple[Outcome, Phase | None, str, str]:
    """(tag, message, type, text) of a testcase's results → outcome, phase and the worst ones' texts."""
    if not results:
        return Outcome.PASSED, None, "", ""
    if len(results) == 1:  # the commonest by far: nothing to rank or join
        chosen = results
        tag, message, _type, text = results[0]
        worst, message, text = SEVERITY[tag], message.strip(), text.strip()
    else:
        worst = max(SEVERITY[r[0]] for r in results)
        chosen = [r for r in results if SEVERITY[r[0]] == worst]
        message = "\n".join(r[1] for r in chosen).strip()
        text = "\n".join(r[3] for r in chosen).strip()
    if worst == SEVERITY["skipped"]:
        is_xfail = any(r[2] == "pytest.xfail" for r in chosen)
        return (Outcome.XFAILED if is_xfail else Outcome.SKIPPED), None, message, text
    phase = Phase.CALL
    for prefix, prefix_phase in _PHASE_PREFIXES:
        if message.startswith(prefix):
            phase, message = prefix_phase, message[len(prefix) :]
            if len(message) >= 2 and message[0] == message[-1] == '"':
                message = message[1:-1]
            break
    return (Outcome.ERROR if worst == SEVERITY["error"] else Outcome.FAILED), phase, message, text


_ATTEMPT_PHASES = {"setup": Phase.SETUP, "call": Phase.CALL, "teardown": Phase.TEARDOWN}


def attempt_failure_of(value: str) -> tuple[Outcome, Phase, str, str]:
    """`setup: <exception line>` (the plugin's attempt_failure) → a failed attempt in that phase.

    A fixture failure is an error and a body failure a failure, as pytest itself would have written them.
    """
    head, sep, rest = value.partition(": ")
    phase = _ATTEMPT_PHASES.get(head) if sep else None
    if phase is None:
        return Outcome.FAILED, Phase.CALL, value.strip(), ""
    return (Outcome.FAILED if phase is Phase.CALL else Outcome.ERROR), phase, rest.strip(), ""


_QUARANTINED_RE = re.compile(r"quarantined \((setup|call|teardown)\): ")


def quarantined_failure_of(message: str) -> tuple[Phase | None, str]:
    """`quarantined (setup): RuntimeError: …` (plugin_quarantine's xfail reason) → the phase and the error.

    A quarantined test's own `xfail` marker (any other reason) stays an xfail without a phase. A body
    failure plus a teardown error is two reasons on two lines: the first names the phase, both are kept.
    """
    match = _QUARANTINED_RE.match(message)
    if match is None:
        return None, message
    return _ATTEMPT_PHASES[match.group(1)], message[match.end() :]
