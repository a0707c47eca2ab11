"""Report sections beyond the core tables: the fixture doctor. Pure; markdown.py and render.py call in.

Kept apart because markdown.py is at its size limit, and because `db-test-action doctor` prints only
this section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from db_test_action.model import Collision, DoctorFinding


def collision_text(c: Collision) -> str:
    """`A (gw0) × B (gw1) on "workspaces_pkey"`, or `A (gw0) × partner unknown on "…"`."""
    me = f"{c.test_id} ({c.worker})" if c.worker else c.test_id
    other = f"{c.partner_id} ({c.partner_worker})" if c.partner_worker else str(c.partner_id)
    where = f' on "{c.object}"' if c.object else ""
    return f"{me} × {other if c.partner_id else 'partner unknown'}{where}"


def doctor_markdown(
    findings: Sequence[DoctorFinding] | None, inline: Callable[[str, int], str], code: Callable[..., str]
) -> list[str]:
    """`#### Fixture doctor`: one entry per anti-pattern (finding, evidence counts, tests, fixture, fix)."""
    if findings is None:
        return []
    parts = ["", "#### Fixture doctor", ""]
    if not findings:
        return [*parts, "No fixture anti-patterns in this run: nothing here predicts collisions under xdist."]
    parts.append(
        "Predicted from a serial run's statement log: these fixtures will collide when xdist workers share "
        "a database."
    )
    for f in findings:
        where = f" — fixture {code(f.fixture, 120, in_table=False)}" if f.fixture else ""
        parts += ["", f"**{inline(f.title, 80)}** ({f.test_count} tests){where}", ""]
        parts += [f"- {inline(line, 300)}" for line in f.evidence[:10]]
        shown = ", ".join(code(t, 100, in_table=False) for t in f.tests)
        more = f" … and {f.test_count - len(f.tests)} more" if f.test_count > len(f.tests) else ""
        parts += [f"- tests: {shown}{more}", f"- fix: {inline(f.fix, 400)}"]
    return parts


def doctor_console(findings: Sequence[DoctorFinding] | None) -> list[str]:
    if findings is None:
        return []
    if not findings:
        return ["fixture doctor: no anti-patterns found"]
    lines = [
        f"fixture doctor: {len(findings)} anti-pattern{'s' if len(findings) != 1 else ''} that break under xdist"
    ]
    for f in findings:
        fixture = f" in fixture {f.fixture}" if f.fixture else ""
        lines.append(f"  {f.title} ({f.key}): {f.test_count} tests{fixture}")
        lines += [f"      {line}" for line in f.evidence[:6]]
        more = f" … and {f.test_count - len(f.tests)} more" if f.test_count > len(f.tests) else ""
        lines.append(f"      e.g. {', '.join(f.tests[:3])}{more}")
        lines.append(f"      fix: {f.fix}")
    return lines
