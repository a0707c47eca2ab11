"""StabilityReport → Markdown (tracking issue, job summary), console lines and the quarantine file. Pure.

Untrusted text (node ids, categories, messages) goes through the reporter's escaping helpers
(`render_markdown.inline` / `code`), so a test named `@team <img>` neither pings nor renders. The trend is
a Unicode sparkline plus a small table: it reads the same in the issue, the job summary, e-mail
notifications and the terminal, where a Mermaid chart would only render on github.com.
The body is kept under GitHub's 65,536-character limit by showing fewer test rows, and says what it cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from db_test_action.report.mdtext import GITHUB_COMMENT_MAX, code, inline
from db_test_action.stability.rates import GroupStability, NightVerdict, Rate, Stability, StabilityReport

_ICON = {
    NightVerdict.GREEN: "✅",
    NightVerdict.FLAKY: "🟡",
    NightVerdict.BROKEN: "❌",
    NightVerdict.INCOMPLETE: "⚠️",
    NightVerdict.NO_TESTS: "⚠️",
}
_STATUS = {
    Stability.BROKEN: "❌ broken",
    Stability.NEWLY_FLAKY: "🆕 newly flaky",
    Stability.FLAKY: "🟡 flaky",
    Stability.RECOVERED: "✅ recovered",
    Stability.STABLE: "stable",
}
_BARS = "▂▃▄▅▆▇█"
TREND_TABLE_NIGHTS = 14
SPARK_NIGHTS = 60

MAX_PROBLEMS = 20  # listed; the rest are counted (a flood of broken files must not flood the page)


def sparkline(values: Sequence[int | float]) -> str:
    """`▁` is zero; any non-zero value gets at least `▂`, so one flaky test never looks like none."""
    top = max(values, default=0)
    if top <= 0:
        return "▁" * len(values)
    return "".join(
        "▁" if v <= 0 else _BARS[min(len(_BARS) - 1, round(v / top * (len(_BARS) - 1)))] for v in values
    )


def percent(value: float) -> str:
    if value == 0:
        return "0 %"
    if value < 0.001:
        return "<0.1 %"
    return f"{value * 100:.1f} %"


def rate_text(rate: Rate) -> str:
    """`2.5 % (0.9–6.9 %)` of bad runs: the interval is what a reader should act on."""
    if not rate.runs:
        return "–"
    return f"{percent(rate.value)} ({percent(rate.low).removesuffix(' %')}–{percent(rate.high)})"


def verdict_line(report: StabilityReport) -> str:
    """One line: streak vs requirement, tonight's runs, counts per status, clean nights."""
    green = sum(1 for r in report.runs if r.is_green)
    parts = [f"{green} of {len(report.runs)} runs green tonight"]
    streak = f"{report.consecutive_green} consecutive green runs"
    if report.required_consecutive is not None:
        is_met = report.consecutive_green >= report.required_consecutive
        streak += f" ({'✅ meets' if is_met else '❌ below'} the required {report.required_consecutive})"
    parts.append(streak)
    counts = [
        f"{n} {label}"
        for n, label in (
            (report.count(Stability.BROKEN), "broken"),
            (report.count(Stability.NEWLY_FLAKY), "newly flaky"),
            (report.count(Stability.FLAKY), "flaky"),
            (report.count(Stability.RECOVERED), "recovered"),
        )
        if n
    ]
    parts.append(", ".join(counts) or "no unstable tests")
    parts.append(f"{report.clean_nights} clean night{'s' if report.clean_nights != 1 else ''} in a row")
    return " · ".join(parts)


def render_stability_markdown(
    report: StabilityReport, max_chars: int = GITHUB_COMMENT_MAX, max_tests: int = 200
) -> str:
    """The whole body; rows of unstable tests are dropped (worst kept) until it fits `max_chars`."""
    unstable = [t for t in report.tests if t.status is not Stability.STABLE]
    shown = min(len(unstable), max_tests)
    while True:
        text = _render(report, shown, len(unstable))
        if len(text) <= max_chars or shown == 0:
            break
        shown = max(0, min(shown - 1, int(shown * max_chars / len(text)) - 1))
    if len(text) > max_chars:  # only the fixed sections are left: cut hard, say so
        note = "\n\n… cut to GitHub's size limit; the JSON report has everything\n"
        text = text[: max_chars - len(note)].rsplit("\n", 1)[0] + note
    return text


def _render(report: StabilityReport, shown: int, unstable_total: int) -> str:
    icon = _ICON[report.verdict]
    out = [
        f"## {icon} {inline(report.title)} — {inline(report.night)}: {report.verdict.value}",
        "",
        verdict_line(report),
        "",
    ]
    if report.gate_failures:
        out += [
            f"**Gate failed:** {', '.join(report.gate_failures)} (fail on {', '.join(report.fail_on)})",
            "",
        ]
    for problem in report.problems[:MAX_PROBLEMS]:
        out.append(f"- ⚠️ unreadable result file: {inline(str(problem), 400)}")
    if len(report.problems) > MAX_PROBLEMS:
        out.append(f"- ⚠️ and {len(report.problems) - MAX_PROBLEMS} more problems (see the JSON)")
    incomplete = [str(r.run) for r in report.runs if not r.is_complete]
    if incomplete:
        out.append(f"- ⚠️ incomplete runs (a shard is missing or broken): {', '.join(incomplete)}")
    if report.problems or incomplete:
        out.append("")
    unstable = [t for t in report.tests if t.status is not Stability.STABLE]
    if unstable:
        out += [
            f"### Unstable tests (flake rate over {report.window_nights} nights, 95 % interval)",
            "",
            "| test | status | tonight bad/runs | reruns | flake rate | bad nights | cause |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for t in unstable[:shown]:
            out.append(
                f"| {code(t.test_id)} | {_STATUS[t.status]} | {t.tonight.bad}/{t.tonight.runs} | "
                f"{t.tonight.reruns} | {rate_text(t.rate)} | {t.bad_nights}/{t.nights} | "
                f"{', '.join(code(c, 40) for c in t.causes[:3]) or '–'} |"
            )
        if shown < unstable_total:
            out.append(
                f"\n_{unstable_total - shown} more unstable tests not shown (size limit); see the JSON._"
            )
        out.append("")
    if report.categories:
        out += [
            "### By category",
            "",
            "| category | tests | flaky | newly flaky | broken | recovered | flake rate |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        out += [_group_row(g) for g in report.categories]
        out.append("")
    if report.causes:
        out += _causes(report.causes)
    out += _conflicts(report)
    out += _trend(report)
    if report.quarantine:
        out += [
            f"<details><summary>Quarantine list: {len(report.quarantine)} flaky tests</summary>",
            "",
            *(f"- {code(tid, 300)}" for tid in report.quarantine[: max(shown, 20)]),
            "",
            "</details>",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def _group_row(g: GroupStability) -> str:
    return (
        f"| {inline(g.name, 60)} | {g.tests} | {g.flaky} | {g.newly_flaky} | {g.broken} | {g.recovered} | "
        f"{rate_text(g.rate)} |"
    )


def _causes(causes: Sequence[GroupStability]) -> list[str]:
    out = [
        "### By root cause (tonight)",
        "",
        f"| class | tests | occurrences | last {SPARK_NIGHTS} nights | categories | example | hint |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for g in causes:
        cats = ", ".join(inline(c, 40) for c in g.categories[:4]) + (" …" if len(g.categories) > 4 else "")
        out.append(
            f"| {inline(g.title or g.name, 60)} ({code(g.name, 40)}) | {g.tests} | {g.occurrences} | "
            f"{sparkline(g.trend[-SPARK_NIGHTS:])} | {cats} | {code(g.example_test, 90)} | {inline(g.hint, 200)} |"
        )
    out.append("")
    return out


def _conflicts(report: StabilityReport) -> list[str]:
    """ "These tests collide most": pairs named by the server log, with what they collided on."""
    if not report.conflicts and not report.conflicts_unknown:
        return []
    span = "tonight" if report.window_nights <= 1 else f"last {report.window_nights} nights"
    out = [f"### Tests that collide most ({span}, from the server log)", ""]
    if report.conflicts:
        out += ["| tests | on | cause | times | nights |", "|---|---|---|---:|---:|"]
        for c in report.conflicts:
            on = code(c.object, 60) if c.object else "–"
            out.append(
                f"| {code(c.tests[0])} × {code(c.tests[1])} | {on} | {code(c.cause, 40)} | {c.count} "
                f"| {c.nights} |"
            )
    if report.conflicts_unknown:
        out += [
            "",
            f"_{report.conflicts_unknown} more collisions tonight named no partner (partner unknown)._",
        ]
    return [*out, ""]


def _trend(report: StabilityReport) -> list[str]:
    points = report.trend
    if len(points) < 2:
        return ["_Trend: this is the first night in the history._", ""]
    recent = points[-SPARK_NIGHTS:]
    out = [
        f"### Trend ({len(points)} nights)",
        "",
        f"unstable tests, last {len(recent)} nights: `{sparkline([p.flaky_tests + p.broken_tests for p in recent])}`  ",
        f"red runs, last {len(recent)} nights: `{sparkline([p.runs - p.green_runs for p in recent])}`",
        "",
        "| night | tests | flaky | broken | green runs | bad test runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in reversed(points[-TREND_TABLE_NIGHTS:]):
        rate = percent(p.bad_test_runs / p.test_runs) if p.test_runs else "–"
        out.append(
            f"| {inline(p.label, 40)} | {p.tests} | {p.flaky_tests} | {p.broken_tests} | "
            f"{p.green_runs}/{p.runs} | {p.bad_test_runs} ({rate}) |"
        )
    out.append("")
    return out


def render_stability_console(report: StabilityReport, max_tests: int = 20) -> str:
    """Plain lines for the job log."""
    lines = [f"{report.title} {report.night}: {report.verdict.value.upper()} — {verdict_line(report)}"]
    for t in [t for t in report.tests if t.status is not Stability.STABLE][:max_tests]:
        lines.append(
            f"  {t.status.value:<12} {t.tonight.bad}/{t.tonight.runs} tonight, "
            f"{rate_text(t.rate)} over {t.nights} nights  {_short(t.test_id)}"
        )
    for g in report.causes[:5]:
        lines.append(f"  cause {g.name}: {g.tests} tests, {g.occurrences} occurrences; hint: {g.hint}")
    for c in report.conflicts[:5]:
        on = f' on "{c.object}"' if c.object else ""
        nights = f" ({c.nights} nights)" if c.nights > 1 else ""
        lines.append(
            f"  collides {c.count}×{nights}: {_short(c.tests[0], 80)} × {_short(c.tests[1], 80)}{on}"
        )
    for problem in report.problems[:MAX_PROBLEMS]:
        lines.append(f"problem: {problem}")
    if len(report.problems) > MAX_PROBLEMS:
        lines.append(f"problem: and {len(report.problems) - MAX_PROBLEMS} more (see the JSON)")
    gate = "passed" if report.is_green else f"FAILED ({', '.join(report.gate_failures)})"
    lines.append(f"gate (fail on {', '.join(report.fail_on) or 'nothing'}): {gate}")
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_quarantine(report: StabilityReport) -> str:
    """The file `pytest --quarantine FILE` reads: one node id per line, `#` comments."""
    header = [
        f"# db-test-action quarantine: {len(report.quarantine)} flaky tests as of night {report.night}",
        "# these run but cannot fail the job (pytest --quarantine FILE); broken tests are not listed",
    ]
    return "\n".join([*header, *report.quarantine]) + "\n"
