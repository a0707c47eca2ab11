"""The plugin's results stream (`shard-I-run-K.jsonl`, see plugin/stream.py) → rows and events. Pure.

Why it exists: pytest writes JUnit only at the end of a session; a pytest killed at a time limit writes
none, or (after SIGINT under xdist) one whose interrupted tests are nameless `<testcase>`s. The stream
was appended as each test finished, so it still holds every result. The reader merges it with the JUnit
file of the same shard and run: the JUnit file wins for every test it names; the stream adds the tests it
lacks, and the tests that started but never finished (the hung ones) become failures of their own.

Untrusted input: any line may be damaged (a kill mid-write leaves a partial last line, which is skipped
silently; other bad lines are counted as one problem per file, never an exception).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from db_test_action.junit.parse import ParsedFile, _shard_run_from_name
from db_test_action.junit.reader import MAX_SECONDS, OccurrenceRow
from db_test_action.model import Outcome, ParseProblem, Phase, ResultFile

UNFINISHED = "did not finish: pytest was stopped while it ran"
_OUTCOMES = {
    "passed": Outcome.PASSED,
    "failed": Outcome.FAILED,
    "error": Outcome.ERROR,
    "skipped": Outcome.SKIPPED,
    "xfailed": Outcome.XFAILED,
    "rerun": Outcome.FAILED,
}
_TEXT_LIMIT = 8000


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """`start`, `fixture`, `call` or `limit` of one test on one worker at `at` (epoch seconds);
    `detail` is the fixture name (fixture) or the limit in seconds (limit, as text)."""

    kind: str
    node: str
    worker: str
    at: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StreamFile:
    """One stream: its results as rows, the tests that never finished, and the timeline events."""

    name: str
    shard: int | None
    run: int | None
    results: tuple[OccurrenceRow, ...]
    unfinished: tuple[StreamEvent, ...]  # the last `start` of each test without a result after it
    events: tuple[StreamEvent, ...]
    problem: ParseProblem | None = None


def parse_stream(text: str, name: str) -> StreamFile:
    shard, run = _shard_run_from_name(name)
    results: list[OccurrenceRow] = []
    events: list[StreamEvent] = []
    open_starts: dict[str, StreamEvent] = {}
    bad_lines: list[int] = []
    lines = text.split("\n")
    complete = lines[:-1]  # the last piece has no newline: a write cut by a kill, or empty
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad_lines.append(number)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("node"), str) or not record["node"]:
            bad_lines.append(number)
            continue
        kind, node = record.get("e"), record["node"]
        worker = _text(record.get("worker"), 40) or "main"
        at = _number(record.get("at"))
        if kind == "result":
            results.append(_row(record, name, shard, run, worker))
            open_starts.pop(node, None)
        elif kind in ("start", "fixture", "call", "limit"):
            detail = _text(record.get("fixture"), 200) if kind == "fixture" else ""
            if kind == "limit":
                detail = f"{_number(record.get('limit_s')):g}"
            event = StreamEvent(kind, node[:2000], worker, at, detail)
            events.append(event)
            if kind == "start":
                open_starts[node] = event
        else:
            bad_lines.append(number)
    problem = None
    if bad_lines:
        problem = ParseProblem(
            name, f"{len(bad_lines)} damaged lines in the results stream (kept the rest)", bad_lines[0]
        )
    return StreamFile(name, shard, run, tuple(results), tuple(open_starts.values()), tuple(events), problem)


def merge_stream(
    junit: ParsedFile | None, stream: StreamFile, why: Mapping[str, str] | None = None
) -> tuple[ParsedFile, ...]:
    """The JUnit file (when there is one) without pytest's nameless interrupted testcases, plus a file of
    the stream's rows for the tests the JUnit file does not name. `why` (node id → a sentence) explains
    an unfinished test (what it waited on)."""
    out: list[ParsedFile] = []
    named: set[str] = set()
    if junit is not None:
        rows = tuple(r for r in junit.rows if not r.test_id.startswith("<unnamed testcase"))
        named = {r.test_id for r in rows}
        info = junit.info
        if len(rows) != len(junit.rows):
            info = ResultFile(info.path, info.shard, info.run, info.wall_s, len(rows), info.is_pytest)
        out.append(ParsedFile(info, rows, junit.problem))
    extra = [r for r in stream.results if r.test_id not in named]
    for start in stream.unfinished:
        if start.node not in named:
            extra.append(_unfinished_row(start, stream, (why or {}).get(start.node, "")))
    if extra or stream.problem:
        wall = max((r.finished_at or 0.0 for r in extra), default=0.0) - min(
            (r.started_at or 0.0 for r in extra), default=0.0
        )
        info = ResultFile(stream.name, stream.shard, stream.run, max(0.0, round(wall, 6)), len(extra), True)
        out.append(ParsedFile(info, tuple(extra), stream.problem))
    return tuple(out)


def _unfinished_row(start: StreamEvent, stream: StreamFile, why: str) -> OccurrenceRow:
    later = [
        e for e in stream.events if e.node == start.node and e.worker == start.worker and e.at >= start.at
    ]
    in_call = any(e.kind == "call" for e in later)
    fixtures = [e.detail for e in later if e.kind == "fixture"]
    where = (
        "in the test body" if in_call else (f"in setup, fixture `{fixtures[-1]}`" if fixtures else "in setup")
    )
    message = f"{UNFINISHED} ({where})" + (f"; {why}" if why else "")
    path, _, _ = start.node.partition("::")
    return OccurrenceRow(
        test_id=start.node,
        file=path if path.endswith(".py") else None,
        line=None,
        outcome=Outcome.FAILED if in_call else Outcome.ERROR,
        phase=Phase.CALL if in_call else Phase.SETUP,
        duration_s=0.0,
        message=message,
        text=message,
        source=stream.name,
        shard=stream.shard,
        run=stream.run,
        attempt=None,
        worker=start.worker,
        started_at=start.at or None,
    )


def _row(record: dict, name: str, shard: int | None, run: int | None, worker: str) -> OccurrenceRow:
    outcome = _OUTCOMES.get(str(record.get("outcome")), Outcome.ERROR)
    phase_name = record.get("phase")
    phase = Phase(phase_name) if phase_name in ("setup", "call", "teardown") else None
    if outcome in (Outcome.FAILED, Outcome.ERROR) and phase is None:
        phase = Phase.CALL
    line = record.get("line")
    return OccurrenceRow(
        test_id=record["node"][:2000],
        file=_text(record.get("file"), 500) or None,
        line=line if isinstance(line, int) and not isinstance(line, bool) and line > 0 else None,
        outcome=outcome,
        phase=phase if outcome not in (Outcome.PASSED, Outcome.SKIPPED, Outcome.XFAILED) else None,
        duration_s=_number(record.get("duration"), MAX_SECONDS),
        message=_text(record.get("message"), 500),
        text=_text(record.get("text"), _TEXT_LIMIT),
        source=name,
        shard=_int(record.get("shard")) or shard,
        run=_int(record.get("run")) or run,
        attempt=_int(record.get("attempt")),
        worker=worker,
        started_at=_number(record.get("started_at")) or None,
        finished_at=_number(record.get("finished_at")) or None,
        database=_text(record.get("database"), 200) or None,
    )


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _number(value: object, maximum: float = 1e12) -> float:
    """A time (epoch seconds, or a duration with `maximum=MAX_SECONDS`); 0.0 for anything absurd, so sums
    stay finite."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= maximum:
        return float(value)
    return 0.0


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**9 else None


def streams_by_run(streams: Sequence[StreamFile]) -> dict[tuple[int | None, int | None], StreamFile]:
    return {(s.shard, s.run): s for s in streams}
