"""Report → console summary, annotations and a fingerprint; Markdown lives in render_markdown. Pure.

Everything renders from one `Report`, so the comment, the job log, the annotations and the JSON agree.
"""

from __future__ import annotations

import json
import re

from db_test_action.junit.attempts import failing_line
from db_test_action.model import Annotation, Level, Phase, Report, Status
from db_test_action.report.codec import report_to_dict
from db_test_action.report.markdown import quarantine_line, render_markdown
from db_test_action.report.mdtext import GITHUB_COMMENT_MAX, duration, trim_lines
from db_test_action.report.sections import doctor_console

QUARANTINE_CONSOLE_ROWS = 10
COLLISION_CONSOLE_ROWS = 8


def collision_pairs(tests) -> list[tuple[tuple[str, str, str | None], int]]:  # type: ignore[no-untyped-def]
    """Collisions as `A (gw0)` / `B (gw1)` / object, most frequent first ("partner unknown" included)."""
    counts: dict[tuple[str, str, str | None], int] = {}
    for test in tests:
        for c in test.collisions:
            me = f"{c.test_id} ({c.worker})" if c.worker else c.test_id
            other = f"{c.partner_id} ({c.partner_worker})" if c.partner_id else "partner unknown"
            key = (me, other, c.object)
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0]))


_VOLATILE = re.compile(r"0x[0-9a-fA-F]{6,}|/tmp/[^\s\"']*|pytest-\d+")
__all__ = [
    "GITHUB_COMMENT_MAX",
    "annotations_for",
    "render_console",
    "render_markdown",
    "report_fingerprint",
]


CONSOLE_PROBLEMS = 20  # a summary after a cap: 10,000 missing shards must not flood the job log


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def render_console(report: Report) -> str:
    """A few plain lines for the job log: verdict, counts, time, causes, budgets, problems, gate."""
    t = report.totals
    counts = ", ".join(
        f"{n} {label[:-1] if n == 1 and label.endswith('errors') else label}"
        + (f" ({flaky} flaky)" if flaky else "")
        for n, label, flaky in (
            (t.passed, "passed", 0),
            (t.failed, "failed", 0),
            (t.setup_errors, "setup errors", t.setup_errors_flaky),
            (t.teardown_errors, "teardown errors", t.teardown_errors_flaky),
            (t.flaky, "flaky", 0),
            (t.skipped + t.xfailed, "skipped", 0),
        )
        if n
    )
    tm = report.timing
    lines = [
        f"{report.title}: {report.verdict.value.upper()} — {t.tests} tests: {counts or 'none'}",
        f"time: wall {duration(tm.wall_s)}"
        + (f" ({tm.wall_source})" if tm.wall_source else "")
        + f", total {duration(tm.total_s)}, average test {duration(tm.average_test_s)}"
        + (f", slowest {duration(tm.slowest_test_s)} {tm.slowest_test}" if tm.slowest_test else ""),
    ]
    if report.hangs:  # hangs.py (and the stream reader it needs) only for a report that has them
        from db_test_action.report.hangs import hang_sentence
    for h in report.hangs[:10]:
        where = f"shard {h.shard} run {h.run}: " if h.shard is not None and h.run is not None else ""
        lines.append(f"hang: {where}{hang_sentence(h, _plain, _plain)}")
    if quarantined := quarantine_line(report):
        lines.append(f"quarantine: {quarantined}")
        for test in [t for t in report.quarantined if t.problems][:QUARANTINE_CONSOLE_ROWS]:
            problem = test.problems[0]
            message = " ".join(problem.message.split())
            lines.append(f"  {test.test_id} ({problem.phase.value}): {message[:200]}")
        rest = sum(1 for t in report.quarantined if t.problems) - QUARANTINE_CONSOLE_ROWS
        if rest > 0:
            lines.append(f"  … and {rest} more (see the JSON report)")
    if report.causes:
        lines.append("root causes:")
        for group in report.causes[:10]:
            cats = ", ".join(group.categories[:3]) + (" …" if len(group.categories) > 3 else "")
            lines.append(f"  {group.tests:>4} × {group.cause.key:<22} {cats}  e.g. {group.example_test}")
            lines.append(f"         hint: {group.cause.hint}")
    pairs = collision_pairs(report.tests)
    if pairs:
        lines.append("collisions:")
        for (a, b, obj), n in pairs[:COLLISION_CONSOLE_ROWS]:
            lines.append(f"  {n:>4} × {a} × {b}" + (f' on "{obj}"' if obj else ""))
    lines += doctor_console(report.doctor)
    over = [b for b in report.budgets if b.status.value != "ok"]
    for check in over:
        lines.append(
            f"budget {check.status.value}: {check.name} {duration(check.actual_s)} > "
            f"{'80% of ' if check.status.value == 'warning' else ''}{duration(check.limit_s)}"
        )
    for reg in report.regressions:
        lines.append(f"slower than base: {reg.name} {duration(reg.base_s)} → {duration(reg.actual_s)}")
    for problem in report.problems[:CONSOLE_PROBLEMS]:
        lines.append(f"problem: {problem}")
    if len(report.problems) > CONSOLE_PROBLEMS:  # the rest are in the Markdown and the JSON
        lines.append(f"problem: and {len(report.problems) - CONSOLE_PROBLEMS} more (see the report JSON)")
    if "regressions" in report.fail_on:
        lines.append(
            f"regressions ({'vs base' if report.has_base else 'no base: all new'}): "
            f"{len(report.new_failures)} new failing tests, {len(report.new_breaches)} budgets newly over"
        )
    server = report.server
    if server is not None and not server.is_available:
        lines.append(server.note or "server evidence unavailable")
    elif server is not None:
        lines.append(
            f"server log: {server.errors} errors, {server.attributed} records shown with failing tests, "
            f"{server.unattributed} in no test's window ({', '.join(server.files)})"
        )
        if server.examples:
            lines.append(f"  e.g. {server.examples[0].lines[0]}")
        lines += [f"  damaged: {p}" for p in server.problems[:3]]
        if server.foreign_databases:
            lines.append(
                f"warning: the suite used {', '.join(map(_printable, server.foreign_databases))}, "
                "not the fresh database: "
                "repeats share state"
            )
    gate = "passed" if report.is_green else f"FAILED ({', '.join(report.gate_failures)})"
    lines.append(f"gate (fail on {', '.join(report.fail_on) or 'nothing'}): {gate}")
    return "\n".join(lines) + "\n"


def annotations_for(report: Report) -> tuple[Annotation, ...]:
    """One annotation per failing test and unreadable file, most important first (lowest `rank`).

    Rank: unreadable files, then fixture errors (setup, teardown), then failures, then flaky;
    within each, tests of the most frequent root cause first. Points at the deepest traceback
    line inside the repo when known, else the test's own file and line.
    """
    cause_index = {g.cause.key: i for i, g in enumerate(report.causes)}
    out = [
        Annotation(Level.ERROR, "unreadable or missing result file", str(problem), None, None, 0)
        for problem in report.problems
    ]
    phase_rank = {Phase.SETUP: 1, Phase.TEARDOWN: 2, Phase.CALL: 3}
    hung: dict[str, str] = {}
    if report.hangs:
        from db_test_action.report.hangs import hang_sentence
    for h in report.hangs:
        if h.test_id:
            hung.setdefault(h.test_id, hang_sentence(h, _plain, _plain))
    for test in report.tests:
        if not test.problems:
            out.append(
                Annotation(
                    Level.WARNING, f"flaky: {test.test_id}",
                    f"failed {test.failed_executions} of {test.executions} runs, then passed",
                    test.file, test.line, 500,
                )
            )  # fmt: skip
            continue
        own_phase = {Status.SETUP_ERROR: Phase.SETUP, Status.TEARDOWN_ERROR: Phase.TEARDOWN}.get(
            test.status, Phase.CALL
        )
        problem = min(
            test.problems,
            key=lambda p: (p.phase is not own_phase, phase_rank[p.phase], cause_index.get(p.cause.key, 99)),
        )
        is_flaky = test.status is Status.FLAKY
        level = Level.WARNING if is_flaky else Level.ERROR
        what = (
            "flaky"
            if is_flaky
            else {"setup": "setup error", "teardown": "teardown error"}.get(problem.phase.value, "failed")
        )
        rank = (4 if is_flaky else phase_rank[problem.phase]) * 100 + min(
            cause_index.get(problem.cause.key, 99), 99
        )
        message = trim_lines(problem.message or problem.text, 20, 2000)
        if test.server_log:  # the server's side, e.g. the dependent table a DROP tripped over
            message += "\n\nserver log:\n" + trim_lines("\n".join(test.server_log[0].lines), 8, 800)
        hang = hung.get(test.test_id)
        if hang and hang not in message:  # a per-test timeout: pytest-timeout's message says only "Timeout"
            message += f"\n\nat the time limit: {hang}"
        if problem.cause.key != "other":
            message += f"\n\n{problem.cause.title}: {problem.cause.hint}"
        out.append(
            Annotation(level, f"{what} ({problem.cause.key}): {test.test_id}", message,
                       *failing_line(problem.text, test.file, test.line), rank)
        )  # fmt: skip
    out.sort(key=lambda a: (a.rank, a.title))
    return tuple(out)


def report_fingerprint(report: Report) -> str:
    """A stable hash of what the comment says, minus timings that wiggle between identical runs.

    `publish` compares it with the hash stored in the previous comment and skips unchanged ones.
    Durations enter only as budget statuses, so a test 0.01 s slower does not re-post the comment.
    """
    data = report_to_dict(report)
    for key in ("timing", "slowest", "files"):
        data.pop(key, None)
    data["totals"].pop("duration_s", None)
    for cat in data["categories"]:
        cat.pop("duration_s", None)
    for test in [*data["tests"], *data.get("quarantined", ())]:
        test.pop("duration_s", None)
        for problem in test["problems"]:
            problem.pop("text", None)  # tracebacks carry addresses and tmp paths that change every run
        for record in test.get("server_log", ()):
            record.pop("timestamp", None)  # when and which backend pid differ on every run
            record.pop("pid", None)
    if data.get("server"):
        for record in data["server"]["examples"]:
            record.pop("timestamp", None)
            record.pop("pid", None)
    for check in data["budgets"]:
        check.pop("actual_s", None)
    for reg in data["regressions"]:
        reg.pop("actual_s", None)
        reg.pop("base_s", None)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    blob = _VOLATILE.sub("<…>", blob)
    import hashlib  # only `publish` asks (~4 ms of import every report would pay)

    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _plain(text: str) -> str:
    return " ".join(text.split())
