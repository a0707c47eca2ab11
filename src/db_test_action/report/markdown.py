"""Report → GitHub-flavoured Markdown for a PR comment or the job summary. Pure.

Untrusted text (test names, messages, file names) goes through `cell`/`inline` (tables, prose:
Markdown and HTML neutralised, `@` defused with a zero-width joiner so nobody is pinged) or into a
fenced code block whose fence is longer than any backtick run inside. The 65,536-character comment
limit is enforced here: the same report is rendered with fewer details until it fits, and the
output says what was cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from db_test_action.junit.attempts import failing_line
from db_test_action.model import (
    BudgetStatus,
    CauseGroup,
    Report,
    ServerLogSummary,
    Status,
    TestResult,
    Verdict,
)
from db_test_action.report.mdtext import (
    GITHUB_COMMENT_MAX,
    ZWJ,
    cell,
    code,
    duration,
    escape_html,
    fenced,
    inline,
    short_message,
    trim_lines,
)
from db_test_action.report.sections import collision_text, doctor_markdown
from db_test_action.report.textsafety import fit_with_closers, neutralize

_VERDICT_ICON = {
    Verdict.PASSED: "✅",
    Verdict.FLAKY: "🟡",
    Verdict.OVER_BUDGET: "⏱️",
    Verdict.FAILED: "❌",
    Verdict.INCOMPLETE: "⚠️",
    Verdict.NO_TESTS: "⚠️",
}
_BUDGET_ICON = {BudgetStatus.OK: "✅ ok", BudgetStatus.WARNING: "🟡 warning", BudgetStatus.OVER: "❌ over"}
_PHASE_LABEL = {"setup": "setup error", "teardown": "teardown error", "call": "failed"}


# --- escaping -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detail:
    """How much to show; `render_markdown` walks down these levels until the text fits."""

    per_cause: int
    max_lines: int
    max_chars: int
    max_rows: int
    note: str = ""
    server_lines: int = 0  # per test: the server log excerpt, the first thing to shrink
    server_chars: int = 0
    quarantine_rows: int = 0  # quarantined tests listed (not blocking): shrinks with the server excerpts


def levels(per_cause: int) -> tuple[Detail, ...]:
    server = "shorter server log excerpts"
    return (
        Detail(per_cause, 40, 4000, 200, server_lines=30, server_chars=2500, quarantine_rows=50),
        Detail(per_cause, 40, 4000, 200, server, server_lines=8, server_chars=700, quarantine_rows=10),
        Detail(
            min(per_cause, 3), 15, 1500, 200, "fewer tests and shorter messages per cause", quarantine_rows=10
        ),
        Detail(1, 8, 600, 60, "one example test per cause, long tables cut", quarantine_rows=5),
        Detail(0, 0, 0, 25, "no per-test details, long tables cut"),
    )


def render_markdown(report: Report, max_chars: int = GITHUB_COMMENT_MAX) -> str:
    """The whole comment, at most `max_chars` characters (GitHub rejects longer comments)."""
    previous: Detail | None = None
    for detail in levels(report.details_per_cause):
        if previous is not None and not _can_be_shorter(report, previous, detail):
            continue  # same page plus a note: it cannot fit where the previous one did not
        previous = detail
        # neutralize the whole page too: no untrusted text may reach it un-escaped by any path
        text = neutralize(_document(report, detail))
        if len(text) <= max_chars:
            return text
    note = (
        "\n\n_… cut here to fit GitHub's comment limit; see the JSON report or the job log for the rest._\n"
    )
    return fit_with_closers(text, max_chars, note)


def _can_be_shorter(report: Report, before: Detail, after: Detail) -> bool:
    """Whether `after` cuts anything of this report that `before` showed. A level that only shortens
    server log excerpts and the quarantine list changes nothing in a report without them."""
    if (before.per_cause, before.max_lines, before.max_chars, before.max_rows) != (
        after.per_cause, after.max_lines, after.max_chars, after.max_rows,
    ):  # fmt: skip
        return True
    has_server_text = bool(report.server and report.server.examples) or any(
        t.server_log for t in report.tests
    )
    return has_server_text or _quarantine_listed(report) > after.quarantine_rows


def _document(report: Report, detail: Detail) -> str:
    parts = [f"### {_VERDICT_ICON[report.verdict]} {inline(report.title, 120)}", "", verdict_line(report)]
    note = detail.note
    if note and _quarantine_listed(report) > detail.quarantine_rows:
        note += ", fewer quarantined tests listed"
    if note:
        parts += ["", f"_Shortened to fit GitHub's comment limit: {note}._"]
    if report.problems:
        parts += ["", "**Result files with problems** (results below are incomplete):", ""]
        parts += [f"- {inline(str(p), 400)}" for p in report.problems[: detail.max_rows]]
        parts += _more(len(report.problems) - detail.max_rows, "problems")
    parts += _hangs(report, detail)
    parts += _categories(report, detail)
    parts += _quarantine(report, detail)
    parts += _causes(report, detail)
    parts += doctor_markdown(report.doctor, inline, code)
    parts += _details(report, detail)
    parts += _unreported_server_errors(report, detail)
    if "regressions" in report.fail_on:
        parts += ["", regressions_line(report)]
    if report.server is not None and report.server.foreign_databases:
        parts += ["", "⚠️ " + foreign_note(report.server.foreign_databases)]
    parts += _budgets(report, detail)
    gate = "passed" if report.is_green else f"failed ({', '.join(report.gate_failures)})"
    fail_on = ", ".join(report.fail_on) or "nothing"
    server = f" · {server_note(report.server)}" if report.server else ""
    footer = f"<sub>{len(report.files)} result files{server} · fail on: {fail_on} · gate {gate}</sub>"
    parts += ["", footer, ""]
    return "\n".join(parts)


def _hangs(report: Report, detail: Detail) -> list[str]:
    """Tests caught at a time limit: who waited, on what, held by whom — first, it is why the run stopped."""
    if not report.hangs:
        return []
    from db_test_action.report.hangs import hang_sentence  # its stream reader: only when there are hangs

    parts = ["", "**Stopped at a time limit** (server sessions at that moment):", ""]
    for h in report.hangs[: detail.max_rows]:
        where = f"shard {h.shard} run {h.run}: " if h.shard is not None and h.run is not None else ""
        parts.append(f"- {where}{hang_sentence(h, lambda s: code(s, 160, in_table=False), inline)}")
    return parts + _more(len(report.hangs) - detail.max_rows, "hangs")


def server_note(server: ServerLogSummary) -> str:
    """One short phrase for the footer: what the server log held, or why there is none."""
    if not server.is_available:
        return inline(server.note or "server evidence unavailable", 160)
    files = f"{len(server.files)} server log{'s' if len(server.files) != 1 else ''}"
    damaged = f", {len(server.problems)} damaged records" if server.problems else ""
    return f"{files}: {server.errors} errors, {server.attributed} shown with failing tests{damaged}"


def regressions_line(report: Report) -> str:
    """`--fail-on regressions`: what is new against the base branch, the only thing that gates."""
    base = "against the base report" if report.has_base else "no base report: everything counts as new"
    if not report.new_failures and not report.new_breaches:
        return f"**Regressions** ({base}): none."
    bits = []
    if report.new_failures:
        shown = ", ".join(code(t, 100, in_table=False) for t in report.new_failures[:5])
        more = f" +{len(report.new_failures) - 5} more" if len(report.new_failures) > 5 else ""
        bits.append(f"{len(report.new_failures)} new failing test(s): {shown}{more}")
    if report.new_breaches:
        bits.append(
            "budgets newly over: " + ", ".join(code(b, 60, in_table=False) for b in report.new_breaches)
        )
    return f"**Regressions** ({base}): " + "; ".join(bits) + "."


def foreign_note(names: tuple[str, ...]) -> str:
    """The suite connected to databases the run did not create: `--repeat` is no longer a fresh start."""
    shown = ", ".join(code(name, 63, in_table=False) for name in names[:3])
    more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
    return (
        f"the suite used {shown}{more}, not the fresh database: repeats share state "
        "(read DATABASE_URL in the suite, or give its name as `database`)"
    )


def _unreported_server_errors(report: Report, detail: Detail) -> list[str]:
    """Errors in no test's window (session fixtures, a neighbour's setup): one line and an example."""
    server = report.server
    if server is None or not server.unattributed:
        return []
    n = server.unattributed
    line = (
        f"**{n} server error{'s' if n != 1 else ''} no test reported** "
        "(logged outside every test's time window: session fixtures, teardown after the last test)"
    )
    if not server.examples:
        return ["", line + "."]
    example = server.examples[0]
    if detail.server_lines <= 0:
        return ["", f"{line}, e.g. {code(' '.join(example.lines[:1]), 160, in_table=False)}."]
    text = "\n\n".join("\n".join(r.lines) for r in server.examples)
    return ["", line + ", e.g.:", "", fenced(trim_lines(text, detail.server_lines, detail.server_chars))]


def verdict_line(report: Report) -> str:
    t = report.totals
    words = {
        Verdict.PASSED: "Passed",
        Verdict.FLAKY: "Passed with flaky tests",
        Verdict.OVER_BUDGET: "Passed, but over the time budget",
        Verdict.FAILED: "Failed",
        Verdict.INCOMPLETE: "Incomplete results",
        Verdict.NO_TESTS: "No tests found",
    }
    bits = []
    for count, label, flaky in (
        (t.setup_errors, "setup errors", t.setup_errors_flaky),
        (t.teardown_errors, "teardown errors", t.teardown_errors_flaky),
        (t.failed, "failed", 0),
        (t.flaky, "flaky", 0),
        (len(report.problems), "result file problems", 0),
    ):
        if count:
            of_flaky = f" ({flaky} flaky)" if flaky else ""
            bits.append(f"{count} {label[:-1] if count == 1 and label.endswith('s') else label}{of_flaky}")
    summary = ", ".join(bits) if bits else f"{t.passed} passed"
    timing = report.timing
    where = f" (slowest: {inline(timing.wall_source, 80)})" if timing.wall_source else ""
    return (
        f"**{words[report.verdict]}**: {summary} of {t.tests} tests "
        f"in {duration(timing.wall_s)}{where}, {t.skipped + t.xfailed} skipped."
    )


def _more(count: int, what: str) -> list[str]:
    return [f"- … and {count} more {what}"] if count > 0 else []


def _categories(report: Report, detail: Detail) -> list[str]:
    if not report.categories:
        return []
    rows = [
        "",
        "| Category | Tests | Passed | Failed | Setup errors | Teardown errors | Flaky | Skipped | Time | Budget |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    ranked = sorted(report.categories, key=lambda c: (-(c.failed + c.hard_fixture_errors), c.name))
    for c in ranked[: detail.max_rows]:
        budget = (
            f"{duration(c.budget_s)} {_BUDGET_ICON[c.budget_status]}"
            if c.budget_s and c.budget_status
            else ""
        )
        rows.append(
            f"| {cell(c.name, 60)} | {c.tests} | {c.passed} | {_bold(c.failed)} "
            f"| {fixture_errors(c.setup_errors, c.setup_errors_flaky)} "
            f"| {fixture_errors(c.teardown_errors, c.teardown_errors_flaky)} | {c.flaky or ''} | {(c.skipped + c.xfailed) or ''} "
            f"| {duration(c.duration_s)} | {budget} |"
        )
    if len(ranked) > detail.max_rows:
        rows.append(f"| … {len(ranked) - detail.max_rows} more categories | | | | | | | | | |")
    t = report.totals
    rows.append(
        f"| **all** | **{t.tests}** | {t.passed} | {_bold(t.failed)} "
        f"| {fixture_errors(t.setup_errors, t.setup_errors_flaky)} "
        f"| {fixture_errors(t.teardown_errors, t.teardown_errors_flaky)} | {t.flaky or ''} | {(t.skipped + t.xfailed) or ''} "
        f"| {duration(t.duration_s)} | |"
    )
    return rows


def quarantine_line(report: Report) -> str:
    """`3 quarantined tests (2 failed this run, not blocking; 1 passed — …)`; empty without a quarantine."""
    t = report.totals
    if not t.quarantined:
        return ""
    failed = (
        f"{t.quarantined_failed} failed this run, not blocking" if t.quarantined_failed else "none failed"
    )
    passed = (
        f"; {t.quarantined_passed} passed — may be ready to leave quarantine" if t.quarantined_passed else ""
    )
    return f"{t.quarantined} quarantined test{'s' if t.quarantined != 1 else ''} ({failed}{passed})"


def _quarantine(report: Report, detail: Detail) -> list[str]:
    """One line, and a collapsed list of what each quarantined failure was (phase, message)."""
    line = quarantine_line(report)
    if not line:
        return []
    parts = ["", f"🔒 **{line.replace(' (', '** (', 1)}"]
    failed, passed = _quarantine_lists(report)
    rows = detail.quarantine_rows
    if rows <= 0 or not (failed or passed):
        return parts
    items = []
    for test in failed[:rows]:
        what = "; ".join(
            f"{_PHASE_LABEL[p.phase.value]}: {inline(short_message(p.message) or '(no message)', 200)}"
            for p in test.problems[:2]
        )
        items.append(f"- {code(test.test_id, 120, in_table=False)} — {what}")
    items += _more(len(failed) - rows, "quarantined failures")
    if passed:
        names = ", ".join(code(t.test_id, 100, in_table=False) for t in passed[:rows])
        more = f" … and {len(passed) - rows} more" if len(passed) > rows else ""
        items += [
            *([""] if items else []),
            f"Passed this run, may be ready to leave quarantine: {names}{more}",
        ]
    summary = "Quarantined failures (reported, not failing)" if failed else "Quarantined tests"
    return [*parts, "", "<details>", f"<summary>{summary}</summary>", "", *items, "", "</details>"]


def _quarantine_lists(report: Report) -> tuple[list[TestResult], list[TestResult]]:
    """The quarantined tests that failed (their problems say how) and those that passed."""
    failed = [t for t in report.quarantined if t.problems]
    passed = [t for t in report.quarantined if not t.problems and t.status is Status.PASSED]
    return failed, passed


def _quarantine_listed(report: Report) -> int:
    """How many rows the longer of the two quarantine lists wants (0 without a quarantine)."""
    return max(map(len, _quarantine_lists(report))) if report.quarantined else 0


def fixture_errors(n: int, flaky: int) -> str:
    """`**2**`, `**2** (1 flaky)`, or `1 flaky` when every fixture error was in a test that then passed."""
    if not n:
        return ""
    if flaky == n:
        return f"{n} flaky"
    return f"**{n}**" + (f" ({flaky} flaky)" if flaky else "")


def _bold(n: int) -> str:
    return f"**{n}**" if n else ""


def _causes(report: Report, detail: Detail) -> list[str]:
    if not report.causes:
        return []
    rows = [
        "",
        "#### Root causes",
        "",
        # No test ids here: they are long, unbreakable code spans that push the fix column off-screen on
        # GitHub; the tests are listed per cause just below.
        "| Cause | Tests (categories) | Error | Fix |",
        "|---|---|---|---|",
    ]
    for group in report.causes[: detail.max_rows]:
        more = f" +{len(group.categories) - 4}" if len(group.categories) > 4 else ""
        cats = ", ".join(group.categories[:4]) + more
        name = f"**{cell(group.cause.title, 60)}**<br>{code(group.cause.key)}"
        if group.details:
            name += "<br>" + ", ".join(code(d, 60) for d in group.details[:3])
        tests = f"**{group.tests}**<br><sub>{cell(cats, 100)}</sub>"
        example = cell(short_message(group.example_message), 110)
        rows.append(f"| {name} | {tests} | {example} | {cell(group.cause.hint, 220)} |")
    if len(report.causes) > detail.max_rows:
        rows.append(f"| … {len(report.causes) - detail.max_rows} more causes | | | |")
    return rows


def _details(report: Report, detail: Detail) -> list[str]:
    if detail.per_cause <= 0 or not report.causes:
        return []
    by_id = {t.test_id: t for t in report.tests}
    parts = ["", "#### Failing tests by cause"]
    for group in report.causes[: detail.max_rows]:
        parts += [
            "",
            f"**{cell(group.cause.title, 80)}** — {group.tests} test{'s' if group.tests != 1 else ''}",
            "",
        ]
        shown = [by_id[i] for i in group.test_ids[: detail.per_cause] if i in by_id]
        for test in shown:
            parts += _test_details(test, group, detail)
        rest = group.tests - len(shown)
        if rest > 0:
            others = ", ".join(
                code(i, 80, in_table=False) for i in group.test_ids[len(shown) : len(shown) + 3]
            )
            parts += ["", f"… and {rest} more with the same cause ({others}{', …' if rest > 3 else ''})"]
    return parts


def _test_details(test: TestResult, group: CauseGroup, detail: Detail) -> list[str]:
    problems = [p for p in test.problems if p.cause.key == group.cause.key] or list(test.problems)
    label = (
        "flaky"
        if test.status is Status.FLAKY
        else _PHASE_LABEL[problems[0].phase.value]
        if problems
        else "failed"
    )
    attempts = (
        f", failed {test.failed_executions} of {test.executions} attempts" if test.executions > 1 else ""
    )
    summary = f"{escape_html(_plain(test.test_id, 160))} — {label}{attempts}"
    body = []
    for problem in problems[:2]:
        file, line = failing_line(problem.text, test.file, test.line)
        where = f"{file}:{line}" if file and line else problem.source
        text = problem.text if problem.text and detail.max_lines > 8 else problem.message
        body.append(
            f"{problem.phase.value} · {where}\n{trim_lines(text or problem.message, detail.max_lines, detail.max_chars)}"
        )
    if not body:
        body.append("the failing attempt was a rerun; pytest's JUnit does not record rerun failures")
    content = []
    collisions = [
        c for c in test.collisions if c.cause == group.cause.key or group.cause.key == "concurrent-drop"
    ]
    for collision in (collisions or list(test.collisions))[:3]:
        how = (
            f" <sub>({inline(collision.evidence, 80)})</sub>"
            if collision.evidence and collision.partner_id
            else ""
        )
        content += [f"Collision: {inline(collision_text(collision), 400)}{how}", ""]
    if test.server_log and detail.server_lines > 0:  # first: a few lines that explain the long traceback
        sources = sorted({r.source.rsplit("/", 1)[-1] for r in test.server_log if r.source})
        where = f" ({inline(', '.join(sources), 120)})" if sources else ""
        excerpt = "\n\n".join("\n".join(r.lines) for r in test.server_log)
        content += [
            f"Server log{where}:",
            "",
            fenced(trim_lines(excerpt, detail.server_lines, detail.server_chars)),
            "",
            "Test output:",
            "",
        ]
    content += [fenced("\n\n".join(body)), ""]
    return [
        "<details>",
        f"<summary>{summary.replace('@', '@' + ZWJ)}</summary>",
        "",
        *content,
        "</details>",
    ]


def _plain(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _budgets(report: Report, detail: Detail) -> list[str]:
    if not report.budgets and not report.regressions:
        return []
    rows = ["", "#### Time budgets", "", "| Budget | Actual | Limit | Status | |", "|---|--:|--:|---|---|"]
    for check in report.budgets:
        rows.append(
            f"| {cell(check.name, 80)} | {duration(check.actual_s)} | {duration(check.limit_s)} "
            f"| {_BUDGET_ICON[check.status]} | {cell(check.detail, 100)} |"
        )
    for reg in report.regressions:
        change = f"+{(reg.actual_s / reg.base_s - 1) * 100:.0f}%" if reg.base_s else "new"
        rows.append(
            f"| {cell(reg.name, 80)} vs base | {duration(reg.actual_s)} | {duration(reg.base_s)} "
            f"| 📈 slower | {change} |"
        )
    return rows
